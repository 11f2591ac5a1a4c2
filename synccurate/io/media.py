"""Media I/O: find ffmpeg, probe streams, decode video at 25 fps and audio at 16 kHz.

ffmpeg is always run with an argument list (never a shell) and its stderr is
carried into the error, so a bad file yields one readable line "<file>: <reason>".

Time convention: video frame i (after resampling to 25 fps) and audio sample
i * SAMPLES_PER_FRAME both belong to the instant `video_start_s + i / 25` of the
container's timeline, so a stream that merely starts later than the other is
never mistaken for an offset.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from pathlib import Path

import av
import ffmpeg
import numpy as np

from synccurate.io.audio import SAMPLE_RATE, VIDEO_FPS
from synccurate.io.files import default_file_mode
from synccurate.io.inputs import VIDEO_EXTENSIONS

FFMPEG_GLOBAL_ARGS = ("-nostdin", "-hide_banner", "-loglevel", "error")
RGB_CHANNELS = 3
# `synccurate synth` writes this container comment into every clip it makes, so a synthetic
# clip can be told from real footage later (weights trained on synthetic clips only are
# meaningful on synthetic clips only). `fix` copies global metadata, so a fixed synth clip
# keeps it; a re-encode that drops metadata makes the clip count as real.
SYNTH_TAG_KEY = "comment"
SYNTH_TAG = "synccurate-synth"


class MediaError(Exception):
    """A clip that cannot be used; `status` is the scores-table status (SPEC §10)."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


@lru_cache(maxsize=1)
def ffmpeg_binary() -> str:
    """A system ffmpeg when present, else the one bundled with imageio-ffmpeg."""
    system = shutil.which("ffmpeg")
    if system:
        return system
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@lru_cache(maxsize=1)
def _passthrough_option() -> str:
    """ffmpeg >= 5.1 spells "pass frames through, no dup/drop" -fps_mode; older ones -vsync
    (removed in ffmpeg 9). Unnumbered (git) builds are recent."""
    result = subprocess.run([ffmpeg_binary(), "-version"], capture_output=True, check=False)
    version = re.search(rb"version n?(\d+)\.(\d+)", result.stdout)
    old = version is not None and (int(version[1]), int(version[2])) < (5, 1)
    return "vsync" if old else "fps_mode"


def _ffmpeg_command(args: list[str]) -> list[str]:
    return [ffmpeg_binary(), *FFMPEG_GLOBAL_ARGS, *args]


def _last_line(stderr: bytes, path: str | Path | None = None) -> str:
    """ffmpeg's last stderr line without its "[demuxer @ 0x…]" tag or the file's path.

    The caller prefixes the path itself, so it must not appear twice.
    """
    lines = [
        line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()
    ]
    if not lines:
        return "no message"
    line = re.sub(r"^\[[^\]]* @ 0x[0-9a-f]+\]\s*", "", lines[-1])
    if path is not None:
        line = re.sub(rf"'?{re.escape(str(path))}'?:\s*", "", line)
    return line or "no message"


def run_ffmpeg(args: list[str], what: str = "ffmpeg") -> bytes:
    """Run ffmpeg with `args` (no shell); return stdout, or raise MediaError with its last line."""
    result = subprocess.run(_ffmpeg_command(args), capture_output=True, check=False)
    if result.returncode != 0:
        raise MediaError("decode_error", f"{what}: {_last_line(result.stderr, what)}")
    return result.stdout


@dataclass(frozen=True)
class MediaInfo:
    """What a clip holds, as read from its container header (and its first video frame)."""

    path: Path
    duration_s: float
    has_video: bool
    has_audio: bool
    source_fps: float | None = None
    width: int | None = None
    height: int | None = None
    video_codec: str | None = None
    video_start_s: float = 0.0  # time of the first frame that decodes (frame 0 of the decode)
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    audio_start_s: float = 0.0
    audio_bit_rate: int | None = None
    rotation: int = 0  # degrees of the display matrix; ffmpeg applies it when decoding
    sample_aspect_ratio: float = 1.0  # pixel width / pixel height of the stored frames
    comment: str | None = None  # the container's comment tag (SYNTH_TAG on `synth` clips)

    @property
    def is_synth(self) -> bool:
        """True for a clip written by `synccurate synth` (its container comment says so)."""
        return self.comment == SYNTH_TAG


def _comment(container) -> str | None:
    """The container's comment tag; Matroska spells the key COMMENT."""
    tags = {str(k).lower(): v for k, v in dict(container.metadata or {}).items()}
    value = tags.get(SYNTH_TAG_KEY)
    return None if value is None else str(value).strip()


def is_synth_file(path: str | Path) -> bool | None:
    """Whether a file carries the `synth` tag, from its header alone (no frame is decoded);
    None when it cannot be opened. Cheap enough to check many clips before a run."""
    try:
        with av.open(str(path)) as container:
            return _comment(container) == SYNTH_TAG
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError):
        return None


def _seconds(value: int | None, time_base) -> float | None:
    return None if value is None or time_base is None else float(value * time_base)


def _first_frame(container: av.container.InputContainer, stream) -> tuple[float | None, int]:
    """Time and display rotation of the first frame that decodes ((None, 0) if none does).

    That frame is frame 0 of iter_video_frames, so its time, not the stream's
    nominal start, is what the audio must be aligned to: a clip cut inside a GOP
    starts with frames no decoder can show. PyAV also exposes the rotation only here.
    """
    try:
        frame = next(container.decode(stream), None)
    except av.error.FFmpegError:
        return None, 0
    if frame is None:
        return None, 0
    return frame.time, int(round(getattr(frame, "rotation", 0))) % 360


def probe(path: str | Path) -> MediaInfo:
    """Read stream facts with PyAV (imageio-ffmpeg ships no ffprobe)."""
    path = Path(path)
    if not path.is_file():
        raise MediaError("decode_error", f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MediaError("decode_error", f"{path}: empty file (0 bytes)")
    try:
        with av.open(str(path)) as container:
            video = next(  # cover art is an attached picture, not video
                (
                    stream
                    for stream in container.streams.video
                    if not stream.disposition & av.stream.Disposition.attached_pic
                ),
                None,
            )
            audio = next(iter(container.streams.audio), None)
            durations = [
                d
                for d in (
                    _seconds(container.duration, 1 / av.time_base) if container.duration else None,
                    _seconds(video.duration, video.time_base) if video else None,
                    _seconds(audio.duration, audio.time_base) if audio else None,
                )
                if d
            ]
            sar = video.sample_aspect_ratio if video else None
            video_start = _seconds(video.start_time, video.time_base) if video else None
            first_time, rotation = _first_frame(container, video) if video else (None, 0)
            info = MediaInfo(
                path=path,
                duration_s=max(durations) if durations else 0.0,
                has_video=video is not None,
                has_audio=audio is not None,
                source_fps=float(video.average_rate) if video and video.average_rate else None,
                width=video.codec_context.width if video else None,
                height=video.codec_context.height if video else None,
                video_codec=video.codec_context.name if video else None,
                video_start_s=first_time if first_time is not None else video_start or 0.0,
                audio_codec=audio.codec_context.name if audio else None,
                audio_sample_rate=audio.codec_context.sample_rate if audio else None,
                audio_channels=audio.codec_context.channels if audio else None,
                audio_start_s=(_seconds(audio.start_time, audio.time_base) or 0.0)
                if audio
                else 0.0,
                audio_bit_rate=(audio.codec_context.bit_rate or None) if audio else None,
                rotation=rotation,
                sample_aspect_ratio=float(sar) if sar else 1.0,
                comment=_comment(container),
            )
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise MediaError("decode_error", f"{path}: not a readable media file ({reason})") from error
    return info


def frame_size(info: MediaInfo) -> tuple[int, int]:
    """(H, W) of the decoded frames: square pixels, display rotation applied.

    iter_video_frames always scales to an explicit size, so this is exactly what
    it yields and the raw byte stream can never be misread.
    """
    if not info.has_video or not info.width or not info.height:
        raise MediaError("no_video", f"{info.path}: no video stream")
    width = max(1, round(info.width * info.sample_aspect_ratio))
    height = info.height
    if info.rotation in (90, 270):
        width, height = height, width
    return height, width


def n_video_frames(info: MediaInfo) -> int:
    """Expected number of frames at 25 fps (an estimate: the decoded count is the truth)."""
    return round(info.duration_s * VIDEO_FPS) if info.has_video else 0


def _read_into(stream, buffer: memoryview) -> int:
    """Fill `buffer` from a pipe; fewer bytes only at end of stream."""
    filled = 0
    while filled < len(buffer):
        n = stream.readinto(buffer[filled:])
        if not n:
            break
        filled += n
    return filled


def iter_video_frames(
    info: MediaInfo,
    *,
    size: tuple[int, int] | None = None,
    video_filter: str | None = None,
    chunk_frames: int = 64,
) -> Iterator[np.ndarray]:
    """Stream the video at 25 fps as RGB uint8 chunks [n <= chunk_frames, H, W, 3].

    Frames come from an ffmpeg rawvideo pipe, so memory stays bounded whatever the
    clip length. `size=(H, W)` scales in ffmpeg. `video_filter` (e.g. a crop) is
    applied to frames of `frame_size(info)` before that scaling; its output size
    is unknown here, so it needs `size`. Stopping early kills ffmpeg.
    """
    if not info.has_video:
        raise MediaError("no_video", f"{info.path}: no video stream")
    if chunk_frames < 1:
        raise ValueError(f"iter_video_frames: chunk_frames must be >= 1, got {chunk_frames}")
    if video_filter and size is None:
        raise ValueError("iter_video_frames: video_filter needs an explicit size=(H, W)")
    height, width = size or frame_size(info)
    filters = [f"fps={VIDEO_FPS}"]
    if video_filter:
        source_height, source_width = frame_size(info)
        filters += [f"scale={source_width}:{source_height}", video_filter]
    filters.append(f"scale={width}:{height}:flags=area")
    # Passthrough: the fps filter already made the rate constant, and ffmpeg's default
    # (cfr) would duplicate the first frame back to the container start when the video
    # starts later than the audio. So frame 0 is the first decodable frame, whose time
    # probe records as video_start_s.
    stream = ffmpeg.input(str(info.path))["v:0"].output(
        "pipe:",
        format="rawvideo",
        pix_fmt="rgb24",
        vf=",".join(filters),
        **{_passthrough_option(): "passthrough"},
    )
    frame_shape = (height, width, RGB_CHANNELS)
    args = ffmpeg.get_args(stream)
    declared = _Declared(info.duration_s, VIDEO_FPS)
    yield from _pipe_arrays(
        args, frame_shape, np.uint8, chunk_frames, info.path, "video frame", declared
    )


# A stream that decodes this much short of the duration its container declares, while
# ffmpeg complains (and yet exits 0: "partial file", "File ended prematurely"), broke off.
TRUNCATED_BY_S = 1.0


@dataclass(frozen=True)
class _Declared:
    """How long the container says a stream is, and its items (frames, samples) a second."""

    seconds: float
    items_per_second: float


def _pipe_arrays(
    args: list[str],
    item_shape: tuple[int, ...],
    dtype,
    chunk_items: int,
    path: Path,
    required: str | None = None,
    declared: _Declared | None = None,
) -> Iterator[np.ndarray]:
    """ffmpeg's raw output as arrays [n <= chunk_items, *item_shape]; stopping early kills it.

    A failure, also after some output, raises MediaError("decode_error") carrying ffmpeg's
    last line; so does an empty output when a `required` item (its name) is missing. A
    stream that broke off short of its `declared` length raises MediaError("truncated")
    saying where, after every item that decoded was yielded.
    """
    item_bytes = int(np.prod(item_shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    decoded = 0
    with tempfile.TemporaryFile() as stderr:  # a file, not a pipe: a chatty ffmpeg cannot block
        process = subprocess.Popen(_ffmpeg_command(args), stdout=subprocess.PIPE, stderr=stderr)
        try:
            while True:
                chunk = np.empty((chunk_items, *item_shape), dtype=dtype)
                n = _read_into(process.stdout, memoryview(chunk).cast("B")) // item_bytes
                if n:
                    decoded += n
                    yield chunk[:n]
                if n < chunk_items:
                    break
            if process.wait() != 0:
                stderr.seek(0)
                raise MediaError("decode_error", f"{path}: {_last_line(stderr.read(), path)}")
            if decoded == 0 and required:
                raise MediaError("decode_error", f"{path}: no {required} could be decoded")
            stderr.seek(0)
            _raise_if_truncated(stderr.read(), decoded, declared, path)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            process.stdout.close()


def _raise_if_truncated(
    complaint: bytes, decoded: int, declared: _Declared | None, path: Path
) -> None:
    if declared is None or not complaint.strip() or not declared.seconds:
        return
    reached = decoded / declared.items_per_second
    if reached < declared.seconds - TRUNCATED_BY_S:
        raise MediaError(
            "truncated",
            f"{path}: decoding stopped at {reached:.1f} s of the {declared.seconds:.1f} s the "
            f"container declares ({_last_line(complaint, path)})",
        )


AUDIO_BLOCK_SAMPLES = 1 << 18  # samples per decoded block: 16 s at 16 kHz, 1 MB


def iter_audio(
    info: MediaInfo, *, sample_rate: int = SAMPLE_RATE, block_samples: int = AUDIO_BLOCK_SAMPLES
) -> Iterator[np.ndarray]:
    """Mono float32 audio at `sample_rate` in blocks, sample 0 at the first video frame's instant.

    Audio that starts before the video is trimmed, audio that starts after it is
    preceded by silence (SPEC §1: audio and frames share one time base). Blocks keep a long
    recording's audio out of memory; an empty stream yields nothing.
    """
    if not info.has_audio:
        raise MediaError("no_audio", f"{info.path}: no audio stream")
    stream = ffmpeg.input(str(info.path))["a:0"].output(
        "pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=sample_rate
    )
    lead = round((info.video_start_s - info.audio_start_s) * sample_rate) if info.has_video else 0
    if lead < 0:
        yield np.zeros(-lead, dtype=np.float32)
    declared = _Declared(info.duration_s, sample_rate)
    args = ffmpeg.get_args(stream)
    for block in _pipe_arrays(args, (), "<f4", block_samples, info.path, None, declared):
        if lead > 0:
            block, lead = block[lead:], max(0, lead - len(block))
        if len(block):
            yield block.astype(np.float32)


def decode_audio(info: MediaInfo, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The whole of `iter_audio` as one array."""
    blocks = list(iter_audio(info, sample_rate=sample_rate))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


def _as_chunk(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != RGB_CHANNELS or frames.dtype != np.uint8:
        raise ValueError(f"write_clip: expected uint8 RGB frames [n, H, W, 3], got {frames.shape}")
    return np.ascontiguousarray(frames)


def write_clip(
    path: str | Path,
    frames: np.ndarray | Iterable[np.ndarray],
    audio: np.ndarray | None,
    *,
    fps: int = VIDEO_FPS,
    sample_rate: int = SAMPLE_RATE,
    video_codec: str = "libx264",
    audio_codec: str = "aac",
    crf: int | None = 18,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Encode RGB frames (one [n, H, W, 3] array, or an iterable of frames / chunks) and mono audio.

    Frames are piped to ffmpeg, so a generator keeps memory bounded; `audio=None`
    writes a video-only file. The file appears atomically (temp file + rename).
    Audio sample 0 is the instant of frame 0: ffmpeg's mp4 muxer records the AAC
    encoder's priming delay in an edit list, which decode_audio honours (the
    round trip is pinned by a test; mkv and mov round-trip too, while AVI cannot
    signal an encoder delay, so e.g. AVI + mp3 comes back ~70 ms late).
    `metadata` adds container tags (e.g. {SYNTH_TAG_KEY: SYNTH_TAG}, as `synth` does).
    """
    path = Path(path)
    chunks = iter([frames] if isinstance(frames, np.ndarray) else frames)
    first = next(chunks, None)
    if first is None:
        raise ValueError("write_clip: no frames")
    first = _as_chunk(first)
    height, width = first.shape[1:3]
    video = ffmpeg.input(
        "pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=fps
    )
    # One encoder thread: the same frames then always give the same bytes (threaded x264
    # runs were seen to differ under load), which keeps synthetic data sets reproducible.
    options: dict[str, object] = {"vcodec": video_codec, "pix_fmt": "yuv420p", "threads": 1}
    if crf is not None:
        options["crf"] = crf
    if height % 2 or width % 2:  # yuv420p needs even sizes: pad one black row/column
        options["vf"] = "pad=ceil(iw/2)*2:ceil(ih/2)*2"
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        with (
            tempfile.NamedTemporaryFile(suffix=".f32") as audio_file,
            tempfile.TemporaryFile() as stderr,
        ):
            inputs = [video]
            if audio is not None:
                audio_file.write(np.asarray(audio, dtype="<f4").tobytes())
                audio_file.flush()
                inputs.append(ffmpeg.input(audio_file.name, format="f32le", ar=sample_rate, ac=1))
                options["acodec"] = audio_codec
            args = ffmpeg.get_args(ffmpeg.output(*inputs, temp_name, **options).overwrite_output())
            at = args.index(temp_name)  # output options go before the output's name
            for key, value in (metadata or {}).items():
                args[at:at] = ["-metadata", f"{key}={value}"]
                at += 2
            process = subprocess.Popen(_ffmpeg_command(args), stdin=subprocess.PIPE, stderr=stderr)
            try:
                for chunk in chain([first], chunks):
                    chunk = _as_chunk(chunk)
                    if chunk.shape[1:3] != (height, width):
                        raise ValueError(f"write_clip: frame size changed to {chunk.shape[1:3]}")
                    process.stdin.write(chunk.tobytes())
            except BrokenPipeError:
                pass  # ffmpeg stopped early: its stderr says why
            finally:
                process.stdin.close()
                if process.wait() != 0:
                    stderr.seek(0)
                    raise MediaError(
                        "encode_error", f"{path}: {_last_line(stderr.read(), temp_name)}"
                    )
        os.chmod(temp_name, default_file_mode())  # mkstemp makes 0600
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


__all__ = [
    "VIDEO_EXTENSIONS",
    "MediaError",
    "MediaInfo",
    "decode_audio",
    "ffmpeg_binary",
    "frame_size",
    "is_synth_file",
    "iter_video_frames",
    "n_video_frames",
    "probe",
    "run_ffmpeg",
    "write_clip",
    "SYNTH_TAG",
    "SAMPLE_RATE",
    "VIDEO_FPS",
]
