"""Repair the audio-video offset of clips (`synccurate fix`, SPEC §6).

Sign (binding): a positive offset means the audio leads (is early), so `fix` DELAYS the
audio by offset/25 s; a negative offset ADVANCES it. The clip keeps its duration: the
audio is padded with silence at one end and trimmed at the other.

How a clip is repaired (`fix_clip`):

1. The source audio is decoded by ffmpeg to float32 PCM at its own sample rate and
   channel count, and placed on the video timeline (sample 0 = first video frame).
2. The samples are shifted in numpy by exactly round(offset / 25 * rate) samples. A clip
   whose offset drifts (the scores' drift_ms_per_min, `drift_line`) is resampled instead,
   so that the sound of every moment lands on its frame: out(τ) = src(τ − shift(τ)) with
   the shift growing linearly over the clip (`resample_by_line`, windowed-sinc
   interpolation). A clip whose offset steps (offset_steps ≥ 1) is not fixed at all: no
   shift of the whole clip repairs both sides of the step (`offset_step_reason`).
3. ffmpeg muxes the untouched video stream (`-c:v copy`, bit-identical frames) with the
   shifted audio, re-encoded in the source's codec family at a similar bit rate.
4. Everything is compared on the *presentation timeline*: decoded sample k of a stream
   whose first frame is presented `lead` seconds after the first video frame sits at
   video time lead + k/rate (`decode_timeline`). Encoders add delay (MP2: 481 samples of
   filter bank delay; AAC: 1024 priming samples; MP3: 1105) that ffmpeg signals with edit
   lists (MP4/MOV), codec delay (Matroska) or earlier audio timestamps (MPEG-PS/TS, FLV),
   so the raw decoded PCM of an .mpg starts 481 samples "early" while a player presents
   it in place. After encoding, the output is decoded again and cross-correlated with the
   intended signal on that timeline (`check_lag_samples`); a residual lag (a container
   that cannot signal the delay) is compensated by feeding the encoder the signal that
   many samples earlier, and the clip is encoded again (at most twice more).

Only the first video stream and the first audio stream are kept; subtitles, data and
other audio streams are dropped. Global metadata is copied.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
import pandas as pd

from synccurate.curate.filtering import clip_path, mirror_paths
from synccurate.io.audio import VIDEO_FPS, delay_samples
from synccurate.io.files import default_file_mode, write_table
from synccurate.io.media import MediaError, MediaInfo, ffmpeg_binary, probe
from synccurate.store.schema import OFFSET_OVER_TIME_COLUMNS

LOG_NAME = "fixes.parquet"
MAX_CODEC_DELAY = 8192  # samples; larger measured lags are not believed
MAX_ENCODES = 3  # the first encode and up to two corrections
MAX_LAG_WINDOW = 1 << 21  # samples cross-correlated when checking alignment
DONE_STATUSES = ("fixed", "copied", "linked")
STEP_STATUS = "skipped_offset_step"  # the log status of a clip whose offset steps
MS_PER_FRAME = 1000 / VIDEO_FPS  # 40 ms
SECONDS_PER_MINUTE = 60

# When a clip counts as drifting (`drift_line`); otherwise it gets the constant shift.
# The change of its offset line over the whole clip, |drift_ms_per_min| × minutes, must be
# at least half a frame (ms): scored offsets are whole frames, so a smaller change is within
# their rounding, and the constant shift by the clip's offset already leaves every moment
# within about half a frame of sync.
MIN_DRIFT_ACROSS_CLIP_MS = MS_PER_FRAME / 2
# ... and at least this many times drift_residual_ms (the median distance of the stretch
# offsets from the line, ms): a line that moves less than twice the scatter of the points
# it was fitted to is not told apart from noise (whole-frame offsets alone scatter by about
# a quarter frame around a true line).
MIN_DRIFT_TO_RESIDUAL = 2.0

# The drift resampler (`resample_by_line`): Kaiser-windowed sinc interpolation.
SINC_HALF_WIDTH = 16  # input samples on each side of an output sample (32 taps)
SINC_CUTOFF = 0.94  # low-pass cut-off, fraction of the Nyquist frequency
SINC_BETA = 8.0  # Kaiser window shape (about 80 dB stop band)
SINC_PHASES = 256  # fractional positions tabulated per sample, linearly interpolated between
RESAMPLE_CHUNK = 1 << 15  # output samples computed at a time (bounds memory on long clips)

LOG_COLUMNS = {
    "root": "string",
    "path": "string",
    "input": "string",
    "output": "string",
    "offset_frames": "Int64",  # as scored
    "reference_offset": "Int64",  # the offset taken as in sync; the shift is the difference
    "applied_shift_samples": "Int64",
    "applied_shift_s": "float64",  # a drift fix: the shift at the middle of the clip
    "applied_drift_ms_per_min": "float64",  # a drift fix's growth of the shift (null: constant)
    "applied_shift_start_s": "float64",  # … its shift at the first video frame (null: constant)
    "applied_shift_end_s": "float64",  # … and where the audio ends (null: constant)
    "sample_rate": "Int64",
    "audio_encoder": "string",
    "compensation_samples": "Int64",
    "check_lag_samples": "Int64",
    "status": "string",
    "error": "string",
    "reused": "boolean",
}


class FixError(MediaError):
    """A clip that could not be fixed; `status` is the fixes-log status."""


# --- ffmpeg plumbing ---------------------------------------------------------------------


def ffmpeg_path_arg(path: str | Path) -> str:
    """An ffmpeg input/output argument naming `path` literally.

    An absolute path behind the `file:` protocol: a name starting with '-' is not taken for
    an option and a name containing ':' or '|' is not taken for another protocol.
    """
    return "file:" + os.path.abspath(path)


def _ffmpeg(
    args: list[str], what: str, stdin: bytes | None = None, status: str = "encode_error"
) -> bytes:
    """Run ffmpeg (argument list, no shell); raise FixError(status) with stderr's last line."""
    command = [ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error", *args]
    result = subprocess.run(command, input=stdin, capture_output=True, check=False)
    if result.returncode != 0:
        lines = [ln.strip() for ln in result.stderr.decode("utf-8", "replace").splitlines()]
        lines = [ln for ln in lines if ln]
        raise FixError(status, f"{what}: {lines[-1] if lines else 'ffmpeg failed'}")
    return result.stdout


@lru_cache(maxsize=1)
def available_encoders() -> frozenset[str]:
    """Names of the audio encoders the ffmpeg binary offers."""
    out = subprocess.run(
        [ffmpeg_binary(), "-hide_banner", "-encoders"], capture_output=True, check=False
    ).stdout.decode("utf-8", "replace")
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0].startswith("A"):
            names.add(parts[1])
    return frozenset(names)


def decode_audio(path: str | Path, sample_rate: int, channels: int) -> np.ndarray:
    """First audio stream of `path` as float32 [n_samples, channels] at `sample_rate`.

    Pass the stream's own rate and channel count (from `probe`) to get its samples
    unchanged: ffmpeg's decoders honour edit lists and codec delay where the container
    signals them.
    """
    raw = _ffmpeg(
        [
            "-i",
            ffmpeg_path_arg(path),
            "-map",
            "0:a:0",
            "-vn",
            "-sn",
            "-dn",
            "-f",
            "f32le",
            "-acodec",
            "pcm_f32le",
            "-ar",
            str(sample_rate),
            "-ac",
            str(channels),
            "pipe:1",
        ],
        f"decoding the audio of {Path(path).name}",
        status="decode_error",
    )
    usable = len(raw) // (4 * channels) * 4 * channels
    return np.frombuffer(raw[:usable], dtype="<f4").reshape(-1, channels).astype(np.float32)


# --- the shift --------------------------------------------------------------------------


def shift_in_samples(offset_frames: int, sample_rate: int) -> int:
    """round(offset_frames / 25 * sample_rate), in exact arithmetic (640 per frame at 16 kHz)."""
    return round(Fraction(int(offset_frames) * int(sample_rate), VIDEO_FPS))


@dataclass(frozen=True)
class ShiftLine:
    """A shift that grows linearly over a clip: the audio heard at video time τ (seconds
    after the first video frame) is delayed by start_ms + ms_per_min · τ / 60 milliseconds
    (SPEC §6 sign: positive = delayed, which repairs audio that leads)."""

    start_ms: float  # the shift at the first video frame
    ms_per_min: float  # how much it grows per minute of video

    def seconds_at(self, tau_s):
        """The shift (s) at video time `tau_s` (s); works on arrays too."""
        return (self.start_ms + self.ms_per_min * np.asarray(tau_s) / SECONDS_PER_MINUTE) / 1000


def _number(value) -> float | None:
    """A table cell as a float; None when missing, NA or NaN."""
    if value is None or value is pd.NA or not np.isscalar(value) or pd.isna(value):
        return None
    return float(value)


def drift_line(
    row: dict, clip_seconds: float | None, reference_offset: int = 0
) -> ShiftLine | None:
    """The shift line that repairs a drifting clip, from its scores row; None when the clip
    is fixed by the constant shift as before.

    The offset line of the row (offset_start_ms + drift_ms_per_min · τ / 60, SPEC §6 sign:
    + = the audio leads) is the shift, less the reference offset. None when the row has no
    drift columns (old tables), they are null (too few confident stretches), the clip's
    length is unknown, or the line moves by less than MIN_DRIFT_ACROSS_CLIP_MS over the clip
    or by less than MIN_DRIFT_TO_RESIDUAL × drift_residual_ms.
    """
    drift = _number(row.get("drift_ms_per_min"))
    start = _number(row.get("offset_start_ms"))
    if drift is None or start is None or not clip_seconds or clip_seconds <= 0:
        return None
    residual = _number(row.get("drift_residual_ms")) or 0.0
    across_ms = abs(drift) * clip_seconds / SECONDS_PER_MINUTE
    if across_ms < MIN_DRIFT_ACROSS_CLIP_MS or across_ms < MIN_DRIFT_TO_RESIDUAL * residual:
        return None
    return ShiftLine(start - int(reference_offset) * MS_PER_FRAME, drift)


def _frames_text(frames: int) -> str:
    return f"{frames:+d}" if frames else "0"


def offset_step_reason(row: dict, name: str) -> str | None:
    """The one-line reason a clip whose offset steps (offset_steps ≥ 1) is not fixed, or None.

    A shift of the whole clip (constant or drifting) cannot repair both sides of a step:
    the clip has to be cut at the step first. Tables without the column (older scores)
    and null values (too few confident stretches) mean no step.
    """
    steps = _number(row.get("offset_steps"))
    if steps is None or steps < 1:
        return None
    at = row.get("offset_step_at_s")
    times = [] if at is None or at is pd.NA or np.isscalar(at) else [float(t) for t in at]
    when = ", ".join(f"{t:.1f} s" for t in times) or "an unknown time"
    low, high = _number(row.get("offset_min")), _number(row.get("offset_max"))
    start = _number(row.get("offset_start_ms"))
    if low is None or high is None:
        offsets = ""
    elif int(steps) == 1 and start is not None:
        # the side the clip starts on is the one nearer the line's start
        before, after = (
            (low, high)
            if abs(start - low * MS_PER_FRAME) <= abs(start - high * MS_PER_FRAME)
            else (high, low)
        )
        offsets = f" ({_frames_text(int(before))} → {_frames_text(int(after))} frames)"
    else:
        offsets = f" (offsets {_frames_text(int(low))} … {_frames_text(int(high))} frames)"
    if int(steps) == 1:
        what, cut = f"the offset steps at {when}{offsets}", "cut it at the step instead"
    else:
        what = f"the offset steps {int(steps)} times, at {when}{offsets}"
        cut = "cut it at the steps instead"
    return f"{name}: {what}; fix shifts a whole clip — {cut}"


@lru_cache(maxsize=4)
def _sinc_table(half_width: int, phases: int, cutoff: float, beta: float) -> np.ndarray:
    """Taps [phases + 1, 2·half_width] of a Kaiser-windowed sinc: row j interpolates at
    fraction j/phases past an input sample, from input samples -half_width+1 … half_width
    around it; every row sums to 1 (silence stays silence, a constant stays constant)."""
    ks = np.arange(-half_width + 1, half_width + 1)
    x = ks[None, :] - np.arange(phases + 1)[:, None] / phases
    inside = np.clip(1 - (x / half_width) ** 2, 0, None)
    window = np.where(np.abs(x) < half_width, np.i0(beta * np.sqrt(inside)) / np.i0(beta), 0)
    taps = cutoff * np.sinc(cutoff * x) * window
    return taps / taps.sum(axis=1, keepdims=True)


def resample_by_line(samples: np.ndarray, rate: int, line: ShiftLine) -> np.ndarray:
    """`samples` [n, channels] (sample 0 = the first video frame) delayed by a shift that
    grows along `line`: out(τ) = src(τ − line.seconds_at(τ)), same length, silence where
    that falls outside the source.

    A linear drift is a constant change of rate, so this is resampling, done by
    Kaiser-windowed sinc interpolation (SINC_*: no loss below about 0.8 × Nyquist; linear
    interpolation would dull the top of the band, worse each time the fraction passes ½).
    Computed RESAMPLE_CHUNK output samples at a time.
    """
    samples = np.asarray(samples, dtype=np.float32)
    if not samples.size:
        return samples.copy()
    two_d = samples.reshape(len(samples), -1)
    n, channels = two_d.shape
    half = SINC_HALF_WIDTH
    table = _sinc_table(half, SINC_PHASES, SINC_CUTOFF, SINC_BETA).astype(np.float32)
    ks = np.arange(-half + 1, half + 1)
    out = np.zeros_like(two_d)
    for first in range(0, n, RESAMPLE_CHUNK):
        index = np.arange(first, min(n, first + RESAMPLE_CHUNK))
        position = index - line.seconds_at(index / rate) * rate  # where in the source
        inside = (position > -half) & (position < n - 1 + half)
        index, position = index[inside], position[inside]
        if not len(index):
            continue
        base = np.floor(position)
        phase = (position - base) * SINC_PHASES
        row = np.minimum(phase.astype(np.int64), SINC_PHASES - 1)
        weight = (phase - row).astype(np.float32)[:, None]
        taps = table[row] * (1 - weight) + table[row + 1] * weight  # [m, 2·half]
        at = base.astype(np.int64)[:, None] + ks[None, :]  # the source samples used
        outside = (at < 0) | (at >= n)  # silence before and after the source
        taps[outside] = 0
        at = np.clip(at, 0, n - 1)
        for channel in range(channels):
            out[index, channel] = np.einsum("ij,ij->i", two_d[at, channel], taps)
    return out.reshape(samples.shape)


def _compensate(samples: np.ndarray, delay: int) -> np.ndarray:
    """What to feed an encoder that delays by `delay` samples so it outputs `samples`."""
    if delay > 0:
        return samples[delay:]
    if delay < 0:
        pad = np.zeros((-delay, *samples.shape[1:]), dtype=samples.dtype)
        return np.concatenate([pad, samples])
    return samples


def measure_lag(
    reference: np.ndarray, candidate: np.ndarray, max_lag: int = MAX_CODEC_DELAY
) -> int | None:
    """Lag L (|L| <= max_lag) with candidate[i] ≈ reference[i - L], from cross-correlation
    of the channel means; None when the reference is (nearly) silent or no lag correlates.
    """
    x = np.asarray(reference, dtype=np.float64)
    y = np.asarray(candidate, dtype=np.float64)
    x = x.mean(axis=1) if x.ndim > 1 else x
    y = y.mean(axis=1) if y.ndim > 1 else y
    n = min(len(x), len(y), MAX_LAG_WINDOW)  # a long clip is judged on its first ~45 s
    if n < 16 or np.sqrt(np.mean(x[:n] ** 2)) < 1e-4:
        return None
    x, y = x[:n], y[:n]
    size = 1 << int(math.ceil(math.log2(2 * n)))
    corr = np.fft.irfft(np.fft.rfft(y, size) * np.conj(np.fft.rfft(x, size)), size)
    max_lag = min(max_lag, n - 1)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    values = np.concatenate([corr[: max_lag + 1], corr[size - max_lag :]])
    best = int(np.argmax(values))
    norm = np.sqrt(np.sum(x**2) * np.sum(y**2))
    if norm <= 0 or values[best] / norm < 0.2:
        return None
    return int(lags[best])


# --- codec choice -----------------------------------------------------------------------

_MP2_RATES_MPEG1 = (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384)
_MP2_RATES_MPEG2 = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_DEFAULT_KBPS = {"aac": 128, "mp2": 192, "mp3": 128, "opus": 96, "vorbis": 128, "ac3": 192}


@dataclass(frozen=True)
class AudioCodecPlan:
    """How the shifted audio is encoded: ffmpeg encoder, its options, the codec family."""

    encoder: str
    options: tuple[str, ...]
    family: str


def _family(codec: str | None) -> str:
    codec = (codec or "").lower()
    if codec.startswith("pcm_"):
        return "pcm"
    for family, names in {
        "aac": ("aac", "aac_latm", "aac_fixed"),
        "mp2": ("mp2", "mp2float", "mp1", "mp1float"),
        "mp3": ("mp3", "mp3float", "libmp3lame"),
        "opus": ("opus", "libopus"),
        "vorbis": ("vorbis", "libvorbis"),
        "flac": ("flac",),
        "alac": ("alac",),
        "ac3": ("ac3", "ac3_fixed"),
        "eac3": ("eac3",),
    }.items():
        if codec in names:
            return family
    return "unknown"


def _kbps(bit_rate: int | None, family: str, sample_rate: int) -> int:
    kbps = round(bit_rate / 1000) if bit_rate else _DEFAULT_KBPS.get(family, 128)
    if family == "mp2":  # the MP2 encoder only accepts the standard bit rates
        table = _MP2_RATES_MPEG1 if sample_rate >= 32000 else _MP2_RATES_MPEG2
        kbps = min(table, key=lambda allowed: (abs(allowed - kbps), -allowed))
    return max(8, kbps)


VORBIS_QUALITY = "5"  # libvorbis -q:a (0–10): ~160 kb/s for stereo 44.1 kHz, transparent


def plan_audio_codec(info: MediaInfo) -> AudioCodecPlan:
    """Encoder for the source's codec family: aac→aac, mp2→mp2, mp3→libmp3lame (else aac),
    pcm_*→the same pcm, opus→libopus, vorbis→libvorbis, flac, alac, ac3, eac3; anything
    else (or an encoder this ffmpeg lacks) → aac. Lossy codecs get the source's bit rate
    (mp2 snapped to its allowed values), or a default when the source does not say.
    """
    encoders = available_encoders()
    family = _family(info.audio_codec)
    rate = info.audio_sample_rate or 48000
    lossless = {"flac": "flac", "alac": "alac"}
    lossy = {
        "aac": "aac",
        "mp2": "mp2",
        "mp3": "libmp3lame",
        "opus": "libopus",
        "vorbis": "libvorbis",
        "ac3": "ac3",
        "eac3": "eac3",
    }
    if family == "pcm" and info.audio_codec in encoders:
        return AudioCodecPlan(str(info.audio_codec), (), "pcm")
    if family == "pcm":
        return AudioCodecPlan("pcm_s16le", (), "pcm")
    if family in lossless and lossless[family] in encoders:
        return AudioCodecPlan(lossless[family], (), family)
    if family == "vorbis" and not info.audio_bit_rate and lossy[family] in encoders:
        # WebM/MKV state no bit rate; libvorbis refuses a fixed one it cannot reach (e.g.
        # 128 kb/s for mono 16 kHz), while its quality scale works at every rate.
        return AudioCodecPlan("libvorbis", ("-q:a", VORBIS_QUALITY), family)
    if family in lossy and lossy[family] in encoders:
        kbps = _kbps(info.audio_bit_rate, family, rate)
        return AudioCodecPlan(lossy[family], ("-b:a", f"{kbps}k"), family)
    kbps = _kbps(info.audio_bit_rate, "aac", rate)
    return AudioCodecPlan("aac", ("-b:a", f"{kbps}k"), "aac")


def _raw_input(sample_rate: int, channels: int, offset_s: float = 0.0) -> list[str]:
    offset = ["-itsoffset", f"{offset_s:.6f}"] if offset_s else []
    return [*offset, "-f", "f32le", "-ar", str(sample_rate), "-ac", str(channels), "-i", "pipe:0"]


# --- one clip ---------------------------------------------------------------------------


def _refuse_input_overwrite(src: Path, dst: Path) -> None:
    """Raise when writing `dst` would replace the input `src` (or the entry naming it)."""
    dst_entry = dst.parent.resolve() / dst.name
    src_entry = src.parent.resolve() / src.name
    if dst_entry in (src.resolve(), src_entry):
        raise FixError("refused", f"refusing to write over the input {src}")


def _temp_beside(dst: Path) -> Path:
    handle, temp = tempfile.mkstemp(prefix=".synccurate-", suffix=dst.suffix, dir=dst.parent)
    os.close(handle)
    return Path(temp)


def _publish(temp: Path, dst: Path) -> None:
    if not temp.is_symlink():
        os.chmod(temp, default_file_mode())
    os.replace(temp, dst)


@dataclass(frozen=True)
class _Timing:
    lead_s: float  # first audio sample's time minus the first video frame's time
    video_from_file_start_s: float  # first video frame's time minus the file's start time


def _first_frame_time(container, stream) -> float | None:
    """Presentation time of the first decoded frame of `stream` (what a player shows first)."""
    try:
        for frame in container.decode(stream):
            if frame.pts is not None and frame.time_base is not None:
                return float(frame.pts * frame.time_base)
            return None
    except (av.error.FFmpegError, ValueError):
        return None
    return None


def _timing(path: Path, info: MediaInfo) -> _Timing:
    """Where the first audio sample and the first video frame are presented.

    Taken from the first *decoded* frames, not the streams' start_time: a decoder that
    drops leading samples (Opus pre-skip, AAC priming) moves the first sample's time, and
    start_time does not always follow (Opus in WebM reports the packet's). ffmpeg shifts
    every input so that its file starts at zero, hence video_from_file_start_s.
    """
    video_s = audio_s = file_start = None
    try:
        with av.open(str(path)) as container:
            if container.start_time is not None:
                file_start = container.start_time / av.time_base
            if container.streams.video:
                video_s = _first_frame_time(container, container.streams.video[0])
        with av.open(str(path)) as container:
            if container.streams.audio:
                audio_s = _first_frame_time(container, container.streams.audio[0])
    except (av.error.FFmpegError, ValueError):
        pass
    video_s = info.video_start_s if video_s is None else video_s
    audio_s = info.audio_start_s if audio_s is None else audio_s
    starts = [info.video_start_s, info.audio_start_s]
    file_start = min(starts) if file_start is None else file_start
    return _Timing(audio_s - video_s, max(0.0, video_s - file_start))


def on_timeline(samples: np.ndarray, lead_samples: int) -> np.ndarray:
    """Put decoded samples on the video's timeline: index 0 = the first video frame.

    A stream starting `lead_samples` after the video gets that much silence in front; one
    starting before it (negative lead, e.g. an MP2 stream whose timestamps carry the
    encoder delay) loses the samples before the first frame.
    """
    if lead_samples > 0:
        pad = np.zeros((lead_samples, *samples.shape[1:]), dtype=samples.dtype)
        return np.concatenate([pad, samples])
    return samples[-lead_samples:] if lead_samples < 0 else samples


def decode_timeline(path: str | Path, info: MediaInfo | None = None) -> tuple[np.ndarray, int]:
    """(samples [n, channels] float32, rate) of the first audio stream on the video timeline:
    sample k is presented k/rate seconds after the first video frame — what a player
    does with the timestamps. This is how `fix` measures and verifies alignment.
    """
    path = Path(path)
    info = info or probe(path)
    if not info.has_audio or not info.audio_sample_rate or not info.audio_channels:
        raise FixError("no_audio", f"{path}: no audio stream")
    rate, channels = int(info.audio_sample_rate), int(info.audio_channels)
    samples = decode_audio(path, rate, channels)
    lead = round(_timing(path, info).lead_s * rate) if info.has_video else 0
    return on_timeline(samples, lead), rate


def fix_clip(
    src: str | Path,
    dst: str | Path,
    offset_frames: int,
    *,
    verify: bool = True,
    line: ShiftLine | None = None,
) -> dict:
    """Write `dst`: `src` with its audio delayed by offset_frames/25 s (advanced if < 0),
    or, with `line` (a drifting clip, `drift_line`), by a shift growing along that line.

    The container is chosen by dst's extension (use the source's). The video stream is
    copied, the first audio stream re-encoded (see `plan_audio_codec`) from the source's
    samples on the video timeline (`decode_timeline`) shifted by
    round(offset_frames / 25 * rate) samples; the audio of the output starts with the
    first video frame and ends where the source's audio ended. `dst` is written
    atomically (temp file beside it, then os.replace) and may already exist (it is then
    replaced), but never resolves to `src`.

    With `line`, offset_frames is only recorded: the audio heard at video time τ is the
    source's at τ − line.seconds_at(τ) (`resample_by_line`), so the start, the middle and
    the end of a drifting clip all land in sync; the length rule is the same.

    Returns {offset_frames, applied_shift_samples, applied_shift_s, applied_drift_ms_per_min,
    applied_shift_start_s, applied_shift_end_s, sample_rate, channels, audio_encoder,
    compensation_samples, check_lag_samples, status: "fixed"}. For a constant shift the
    three applied_drift/start/end values are None; for a drift fix applied_shift_samples
    and applied_shift_s are the shift at the middle of the audio, and start/end the shift
    at the first video frame and where the audio ends.
    check_lag_samples is the residual lag of the output (on its timeline) against the
    intended signal (for a drift fix: the resampled one): 0 = sample-exact; None when
    verify=False or the audio is silent.
    compensation_samples is how much earlier the signal was fed to the encoder to reach
    that (0 whenever the container signals the codec delay itself).
    Raises FixError/MediaError (.status: missing_input, no_video, no_audio, decode_error,
    encode_error, refused) on failure.
    """
    src, dst = Path(src), Path(dst)
    info = _check_fixable(src, dst)
    source, rate = decode_timeline(src, info)
    channels = int(info.audio_channels)
    if not len(source):
        raise FixError("no_audio", f"{src}: the audio stream decodes to no samples")

    shift, shifted, drift = _shift(source, rate, offset_frames, line)
    plan = plan_audio_codec(info)
    # The shifted audio starts with the first video frame: place the raw input there.
    audio_at = _timing(src, info).video_from_file_start_s
    audio_at = audio_at if audio_at > 1e-6 else 0.0
    encode_args = [
        *("-y", "-i", ffmpeg_path_arg(src), *_raw_input(rate, channels, audio_at)),
        *("-map", "0:v:0", "-map", "1:a:0", "-map_metadata", "0"),
        *("-c:v", "copy", "-c:a", plan.encoder, *plan.options),
        *("-ar", str(rate), "-ac", str(channels)),
    ]
    dst.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_beside(dst)
    try:
        compensation, check = _encode_until_aligned(encode_args, shifted, temp, dst.name, verify)
        _publish(temp, dst)
    finally:
        temp.unlink(missing_ok=True)
    return {
        "offset_frames": int(offset_frames),
        "applied_shift_samples": int(shift),
        "applied_shift_s": shift / rate,
        **drift,
        "sample_rate": rate,
        "channels": channels,
        "audio_encoder": plan.encoder,
        "compensation_samples": int(compensation),
        "check_lag_samples": check,
        "status": "fixed",
    }


DRIFT_LOG_COLUMNS = ("applied_drift_ms_per_min", "applied_shift_start_s", "applied_shift_end_s")


def _shift(
    source: np.ndarray, rate: int, offset_frames: int, line: ShiftLine | None
) -> tuple[int, np.ndarray, dict]:
    """(shift in samples, the shifted audio, the drift columns of the log): a constant
    delay of offset_frames, or with `line` the audio resampled along it (the shift then
    the one at the middle of the audio)."""
    if line is None:
        shift = shift_in_samples(offset_frames, rate)
        constant = dict.fromkeys(DRIFT_LOG_COLUMNS)  # all None: no drift applied
        return shift, delay_samples(source, shift), constant
    shift = round(float(line.seconds_at(len(source) / 2 / rate)) * rate)
    drift = {
        "applied_drift_ms_per_min": float(line.ms_per_min),
        "applied_shift_start_s": float(line.seconds_at(0.0)),
        "applied_shift_end_s": float(line.seconds_at(len(source) / rate)),
    }
    return shift, resample_by_line(source, rate, line), drift


def _check_fixable(src: Path, dst: Path) -> MediaInfo:
    """The source's streams, or the FixError that says why this clip cannot be fixed."""
    if not src.is_file():
        raise FixError("missing_input", f"{src}: no such file")
    if not dst.suffix:
        raise FixError("refused", f"{dst}: the output needs an extension (it picks the container)")
    _refuse_input_overwrite(src, dst)
    info = probe(src)
    if not info.has_video:
        raise FixError("no_video", f"{src}: no video stream")
    if not info.has_audio or not info.audio_sample_rate or not info.audio_channels:
        raise FixError("no_audio", f"{src}: no audio stream")
    return info


def _encode_until_aligned(
    encode_args: list[str], shifted: np.ndarray, temp: Path, name: str, verify: bool
) -> tuple[int, int | None]:
    """Encode `shifted` into `temp`; with `verify`, measure the output's lag and encode
    again with the signal fed that much earlier, for containers that do not signal the
    codec delay. (compensation samples, residual lag or None)."""
    compensation = 0
    check: int | None = None
    for attempt in range(MAX_ENCODES):
        _ffmpeg(
            [*encode_args, ffmpeg_path_arg(temp)],
            f"encoding {name}",
            stdin=_compensate(shifted, compensation).astype("<f4").tobytes(),
        )
        if not verify:
            break
        check = measure_lag(shifted, decode_timeline(temp)[0])
        if not check or attempt == MAX_ENCODES - 1:
            break
        compensation += check  # this container does not signal the codec delay
    return compensation, check


def copy_clip(src: str | Path, dst: str | Path, *, link: bool = False) -> str:
    """Copy `src` to `dst` atomically, or with link=True hard-link it (symlink when a hard
    link is impossible). Returns "copied" or "linked"."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FixError("missing_input", f"{src}: no such file")
    _refuse_input_overwrite(src, dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_beside(dst)
    try:
        if link:
            temp.unlink()
            try:
                os.link(src, temp)
            except OSError:
                os.symlink(os.path.abspath(src), temp)
        else:
            shutil.copyfile(src, temp)
            shutil.copystat(src, temp)
        _publish(temp, dst)
    finally:
        if temp.is_symlink() or temp.exists():
            temp.unlink()
    return "linked" if link else "copied"


# --- a whole table ----------------------------------------------------------------------


def _text(value) -> str | None:
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def _read_log(path: Path) -> dict[tuple[str, str], dict]:
    if not path.is_file():
        return {}
    try:
        previous = pd.read_parquet(path)
    except Exception:  # a damaged log means redoing the work, not failing
        return {}
    rows = {}
    for row in previous.to_dict("records"):
        key = (_text(row.get("input")), _text(row.get("output")))
        rows[key] = row
    return rows


def _log_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(LOG_COLUMNS))
    for column, dtype in LOG_COLUMNS.items():
        frame[column] = frame[column].astype(dtype)
    return frame


@dataclass
class FixTask:
    """One clip `fix_table` writes: its log row so far, what to do, and by how much."""

    position: int  # row of the scores table
    row: dict  # the log row (LOG_COLUMNS), output set
    action: str  # "fix" (re-encode, shifted), "copy" (copy or link unshifted) or "step"
    shift_frames: int  # offset_frames - reference_offset: the audio is delayed by this / 25 s
    stale: bool  # an earlier run's output (another shift) is in the way; removed on failure
    line: ShiftLine | None = None  # a drifting clip: the shift line replaces shift_frames
    reason: str | None = None  # action "step": why the clip is not fixed


@dataclass
class FixPlan:
    """What `fix_table` will do: log rows decided up front, and the clips to write."""

    rows: list[dict | None]  # one per scores row, in table order; None where a task fills it
    tasks: list[FixTask]


def _check_out_dir(scores: pd.DataFrame, out_dir: str | Path) -> Path:
    """The absolute output folder; refuse one that is an input root."""
    out_dir = Path(os.path.abspath(out_dir))
    roots = {str(r) for r in scores["root"].dropna()} if "root" in scores.columns else set()
    for root in roots:
        if Path(root).resolve() == out_dir.resolve():
            raise ValueError(
                f"the output folder {out_dir} is an input root: it would overwrite clips"
            )
    return out_dir


def _kept_inputs(only_kept: pd.DataFrame | None) -> set[str] | None:
    """Absolute paths of the clips of a `filter` output (None: every clip is wanted)."""
    if only_kept is None:
        return None
    roots = only_kept["root"] if "root" in only_kept.columns else [None] * len(only_kept)
    pairs = zip(roots, only_kept["path"], strict=True)
    return {str(clip_path(_text(root), str(path))) for root, path in pairs}


def _base_row(root, path, source: Path, offset: int | None, reference_offset: int) -> dict:
    row = dict.fromkeys(LOG_COLUMNS)
    return row | {
        "root": _text(root),
        "path": str(path),
        "input": str(source),
        "offset_frames": offset,
        "reference_offset": int(reference_offset),
        "reused": False,
    }


def _logged_reference(before: dict) -> int:
    """The reference offset of a previous log row (logs older than the column: 0)."""
    value = before.get("reference_offset")
    return 0 if value is None or pd.isna(value) else int(value)


def _same_line(before: dict, line: ShiftLine | None) -> bool:
    """The previous log row applied this shift line (or, like `line` None, a constant one;
    logs older than the drift columns were all constant)."""
    drift = _number(before.get("applied_drift_ms_per_min"))
    start = _number(before.get("applied_shift_start_s"))
    if line is None:
        return drift is None
    return (
        drift is not None
        and start is not None
        and math.isclose(drift, line.ms_per_min, rel_tol=1e-9, abs_tol=1e-9)
        and math.isclose(start, float(line.seconds_at(0.0)), rel_tol=1e-9, abs_tol=1e-12)
    )


def _reusable(
    before: dict | None, action: str, base: dict, target: Path, line: ShiftLine | None = None
) -> bool:
    """The previous log did this same job (input, output, offset, reference, action, shift
    line) and its output is still there."""
    return (
        before is not None
        and _text(before.get("status")) in DONE_STATUSES
        and (_text(before.get("status")) == "fixed") == (action == "fix")
        and not pd.isna(before.get("offset_frames"))
        and int(before["offset_frames"]) == base["offset_frames"]
        and _logged_reference(before) == base["reference_offset"]
        and _same_line(before, line)
        and (target.exists() or target.is_symlink())
    )


# the scores columns a drift fix reads (the offset over time, and the clip's length)
TIMELINE_COLUMNS = (*OFFSET_OVER_TIME_COLUMNS, "duration_s", "n_frames")


def _clip_seconds(row: dict, source: Path) -> float | None:
    """The clip's length (s): the scores' duration_s, else n_frames / 25, else its header."""
    seconds = _number(row.get("duration_s"))
    frames = _number(row.get("n_frames"))
    if seconds is None and frames is not None:
        seconds = frames / VIDEO_FPS
    if seconds is None:
        try:
            seconds = probe(source).duration_s
        except MediaError:
            return None
    return seconds


def _planned_line(row: dict, source: Path, reference_offset: int) -> ShiftLine | None:
    """`drift_line` of a scores row (its length read only when the row has a drift)."""
    if _number(row.get("drift_ms_per_min")) is None:
        return None
    return drift_line(row, _clip_seconds(row, source), reference_offset)


def plan_fixes(
    scores: pd.DataFrame,
    out_dir: str | Path,
    *,
    reference_offset: int = 0,
    min_abs_offset: int = 1,
    only_kept: pd.DataFrame | None = None,
    previous: dict[tuple[str, str], dict] | None = None,
) -> FixPlan:
    """Decide, for every row of `scores`, what `fix_table` does; nothing is written.

    A clip's shift is offset_frames - reference_offset frames (the reference is the
    offset that counts as in sync, e.g. the data set's own, `filtering.dataset_offset`).
    Rows settled here get their final log row (skipped_not_kept, skipped_not_ok,
    missing_input, or the reused row of `previous`, the last log); the others become
    tasks: "step" when the offset steps (offset_steps >= 1, `offset_step_reason`: nothing
    is written, the log says why), "fix" when the clip drifts (`drift_line`, its shift
    line in the task) or |shift| >= min_abs_offset, else "copy".
    """
    out_dir = Path(os.path.abspath(out_dir))
    previous = previous or {}
    wanted = _kept_inputs(only_kept)
    relative = mirror_paths(scores)
    roots = scores["root"] if "root" in scores.columns else [None] * len(scores)
    errors = scores["error"].tolist() if "error" in scores.columns else [None] * len(scores)
    plan = FixPlan(rows=[None] * len(scores), tasks=[])
    offsets = scores["offset_frames"]
    over_time = [c for c in TIMELINE_COLUMNS if c in scores.columns]
    timelines = scores[over_time].to_dict("records") if over_time else [{}] * len(scores)
    columns = zip(roots, scores["path"], scores["status"], offsets, relative, strict=True)
    for position, (root, path, status, offset, rel) in enumerate(columns):
        source = clip_path(_text(root), str(path))
        target = out_dir / rel
        offset_value = None if pd.isna(offset) else int(offset)
        base = _base_row(root, path, source, offset_value, reference_offset)
        status_text = _text(status) or "missing"
        score_error = _text(errors[position])
        if wanted is not None and str(source) not in wanted:
            plan.rows[position] = {**base, "status": "skipped_not_kept"}
        elif status_text != "ok":
            reason = f"{status_text}: {score_error}" if score_error else status_text
            plan.rows[position] = {**base, "status": "skipped_not_ok", "error": reason}
        elif offset_value is None:
            plan.rows[position] = {**base, "status": "skipped_not_ok", "error": "no offset"}
        elif not source.is_file():
            missing = {"status": "missing_input", "error": f"{source}: no such file"}
            plan.rows[position] = {**base, **missing}
        else:
            shift = offset_value - int(reference_offset)
            before = previous.get((str(source), str(target)))
            # an output of an earlier run (another shift) is removed if this attempt fails
            stale = before is not None and _text(before.get("status")) in DONE_STATUSES
            row = {**base, "output": str(target)}
            step = offset_step_reason(timelines[position], str(source))
            if step is not None:  # no whole-clip shift repairs a step: refuse, write nothing
                plan.tasks.append(FixTask(position, row, "step", shift, stale, reason=step))
                continue
            line = _planned_line(timelines[position], source, reference_offset)
            action = "fix" if line is not None or abs(shift) >= min_abs_offset else "copy"
            if _reusable(before, action, base, target, line):
                plan.rows[position] = {**{k: before.get(k) for k in LOG_COLUMNS}, "reused": True}
                plan.rows[position]["reference_offset"] = _logged_reference(before)
                continue
            plan.tasks.append(FixTask(position, row, action, shift, stale, line=line))
    return plan


def _attempt(task: FixTask, *, verify: bool, link_unshifted: bool) -> dict:
    """Write one clip; the log row it gets (raises on failure)."""
    row = task.row
    if task.action == "step":
        raise FixError(STEP_STATUS, task.reason or f"{row['input']}: the offset steps")
    if task.action == "fix":
        result = fix_clip(
            row["input"], row["output"], task.shift_frames, verify=verify, line=task.line
        )
        # offset_frames stays as scored; the shift applied is in applied_shift_samples
        outcome = {k: v for k, v in result.items() if k in LOG_COLUMNS and k != "offset_frames"}
        return {**row, **outcome}
    status = copy_clip(row["input"], row["output"], link=link_unshifted)
    return {**row, "status": status, "applied_shift_samples": 0, "applied_shift_s": 0.0}


def _work(task: FixTask, *, verify: bool, link_unshifted: bool) -> tuple[int, dict]:
    """`_attempt`, turning any failure into a log row: one clip never ends the batch."""
    try:
        return task.position, _attempt(task, verify=verify, link_unshifted=link_unshifted)
    except Exception as error:
        if isinstance(error, MediaError):
            lines = str(error).splitlines() or [error.status]
            failed = {"status": error.status, "error": lines[0]}
        else:
            message = f"{type(error).__name__}: {error}".splitlines()[0]
            failed = {"status": "error", "error": message}
        if task.stale and failed["status"] != "refused":
            Path(task.row["output"]).unlink(missing_ok=True)
        return task.position, {**task.row, "output": None, **failed}


def _run_plan(
    plan: FixPlan,
    log_path: Path,
    *,
    verify: bool,
    link_unshifted: bool,
    jobs: int,
    progress: Callable[[int, int, dict], None] | None,
    flush_every_s: float,
) -> pd.DataFrame:
    """Carry out the tasks in `jobs` threads, report progress, keep the log on disk."""
    rows = plan.rows
    total = len(rows)
    done = 0
    for row in rows:
        if row is not None:
            done += 1
            if progress is not None:
                progress(done, total, row)
    last_flush = time.monotonic()

    def flush() -> None:
        write_table(_log_frame([row for row in rows if row is not None]), log_path)

    def work(task: FixTask) -> tuple[int, dict]:
        return _work(task, verify=verify, link_unshifted=link_unshifted)

    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        for position, row in pool.map(work, plan.tasks):
            rows[position] = row
            done += 1
            if progress is not None:
                progress(done, total, row)
            if time.monotonic() - last_flush > flush_every_s:
                flush()
                last_flush = time.monotonic()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on Ctrl-C: finish running clips only
        flush()
    return _log_frame([row for row in rows if row is not None])


MIN_ABS_OFFSET = 1  # clips with |offset| below this are in sync already: copied, not shifted
JOBS = 1  # clips encoded in parallel


def fix_table(
    scores: pd.DataFrame,
    out_dir: str | Path,
    *,
    min_abs_offset: int = MIN_ABS_OFFSET,
    reference_offset: int = 0,
    only_kept: pd.DataFrame | None = None,
    link_unshifted: bool = False,
    verify: bool = True,
    jobs: int = JOBS,
    progress: Callable[[int, int, dict], None] | None = None,
    flush_every_s: float = 5.0,
) -> pd.DataFrame:
    """Fix every clip of a scores table into `out_dir`; write and return the log.

    Each clip's audio is delayed by (offset_frames - reference_offset) / 25 s: with the
    default reference 0 that is its offset; with the data set's own offset as reference
    (`filtering.dataset_offset`) a clip is brought to the data set's alignment. The log
    records offset_frames (as scored) and reference_offset.

    Output layout: out_dir/<path relative to its root> (one root), or
    out_dir/<root folder name>/<path> (several roots; see filtering.mirror_paths).

    Per row (the log's `status`):
      - skipped_not_kept: `only_kept` is given and the clip (root, path) is not in it;
      - skipped_not_ok: the score status is not ok (`error` says which);
      - missing_input: the clip is gone;
      - skipped_offset_step: the scores say the offset steps (offset_steps >= 1); no shift
        of the whole clip repairs it, so nothing is written and `error` says where it
        steps (`offset_step_reason`); an earlier run's output of the clip is removed;
      - copied / linked: |offset - reference| < min_abs_offset (nothing to shift): copied,
        or hard-linked (symlinked across file systems) with link_unshifted;
      - fixed: re-encoded with `fix_clip`: by the constant shift, or, for a clip whose
        offset drifts (`drift_line`: the drift_ms_per_min / offset_start_ms columns,
        MIN_DRIFT_ACROSS_CLIP_MS, MIN_DRIFT_TO_RESIDUAL), resampled along its offset line
        less the reference (applied_drift_ms_per_min, applied_shift_start_s / _end_s);
        tables without those columns are fixed by the constant shift;
      - encode_error / decode_error / no_audio / no_video / refused / error: that failure
        with a one-line `error`; the batch goes on.
    A rerun skips rows the previous log (out_dir/fixes.parquet) records as done with the
    same input, output, offset and reference, when the output still exists: their
    previous row is kept with reused=True (a drift fix: also the same shift line). Outputs
    that exist but are not logged as done are redone.

    The log (columns LOG_COLUMNS, table order) is written atomically to
    out_dir/fixes.parquet every `flush_every_s` seconds and at the end (also when
    interrupted). `progress(done, total, row)` is called after each row. `jobs` > 1
    fixes clips in that many threads (each runs its own ffmpeg).

    Steps: `_check_out_dir`, `plan_fixes` (decides every row, writes nothing),
    `_run_plan` (writes the clips and the log).
    """
    out_dir = _check_out_dir(scores, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / LOG_NAME
    plan = plan_fixes(
        scores,
        out_dir,
        reference_offset=reference_offset,
        min_abs_offset=min_abs_offset,
        only_kept=only_kept,
        previous=_read_log(log_path),
    )
    return _run_plan(
        plan,
        log_path,
        verify=verify,
        link_unshifted=link_unshifted,
        jobs=jobs,
        progress=progress,
        flush_every_s=flush_every_s,
    )


__all__ = [
    "AudioCodecPlan",
    "DONE_STATUSES",
    "FixError",
    "FixPlan",
    "FixTask",
    "LOG_COLUMNS",
    "LOG_NAME",
    "MIN_DRIFT_ACROSS_CLIP_MS",
    "MIN_DRIFT_TO_RESIDUAL",
    "STEP_STATUS",
    "ShiftLine",
    "drift_line",
    "offset_step_reason",
    "resample_by_line",
    "copy_clip",
    "decode_audio",
    "decode_timeline",
    "on_timeline",
    "ffmpeg_path_arg",
    "fix_clip",
    "fix_table",
    "measure_lag",
    "plan_audio_codec",
    "plan_fixes",
    "shift_in_samples",
]
