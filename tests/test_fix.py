"""`synccurate fix`: sample-accurate audio shifts with untouched video (SPEC §6).

Alignment is checked independently of synccurate's own decoder: PyAV decodes the audio
frames and places them on the video's timeline by their timestamps (what a player does),
and the cross-correlation is plain numpy.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from real_fixtures import REAL

from synccurate.curate.fix import (
    FixError,
    fix_clip,
    fix_table,
    plan_audio_codec,
    shift_in_samples,
)
from synccurate.io.audio import delay_samples
from synccurate.io.media import MediaInfo, ffmpeg_binary, probe

AAC_CLIP = REAL / "vox_00015.mp4"  # aac 16 kHz mono in mp4
MP2_CLIP = REAL / "grid_bbaf2n.mpg"  # mp2 44.1 kHz stereo in MPEG-PS
STEREO_AAC_CLIP = REAL / "retalk_face2.mp4"  # aac 44.1 kHz stereo

needs_real = pytest.mark.skipif(
    not (AAC_CLIP.is_file() and MP2_CLIP.is_file()),
    reason=f"real test clips not found at {REAL} (internal fixtures, never in the repo)",
)


# --- independent measuring tools ------------------------------------------------------


def timeline_audio(path: Path) -> tuple[np.ndarray, int]:
    """Mono float audio on the video timeline (index 0 = first video frame), via PyAV."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        first = next(iter(container.decode(video)))
        video_start = float(first.pts * video.time_base)
    chunks, start, rate = [], None, None
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.audio[0]):
            samples = frame.to_ndarray()
            channels = len(frame.layout.channels)
            samples = samples if frame.format.is_planar else samples.reshape(-1, channels).T
            if samples.dtype.kind == "i":
                samples = samples / float(np.iinfo(samples.dtype).max + 1)
            if start is None:
                start, rate = float(frame.pts * frame.time_base), frame.sample_rate
            chunks.append(samples.astype(np.float64).mean(axis=0))
    mono = np.concatenate(chunks)
    lead = round((start - video_start) * rate)
    mono = np.concatenate([np.zeros(lead), mono]) if lead > 0 else mono[-lead:]
    return mono, rate


def best_lag(reference: np.ndarray, candidate: np.ndarray, max_lag: int) -> tuple[int, float]:
    """L maximising the normalised correlation of candidate[i] with reference[i - L]."""
    n = min(len(reference), len(candidate))
    x, y = reference[:n], candidate[:n]
    size = 1 << (2 * n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(y, size) * np.conj(np.fft.rfft(x, size)), size)
    lags = np.r_[0 : max_lag + 1, -max_lag:0]
    values = np.r_[corr[: max_lag + 1], corr[size - max_lag :]]
    best = int(np.argmax(values))
    return int(lags[best]), float(values[best] / np.sqrt(np.sum(x**2) * np.sum(y**2)))


def video_hashes(path: Path) -> list[str]:
    """MD5 of every decoded video frame (ffmpeg framemd5), in order."""
    out = subprocess.run(
        [ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-i", f"file:{path}", "-map", "0:v:0"]
        + ["-f", "framemd5", "-"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines() if not line.startswith("#")]


# --- pure functions --------------------------------------------------------------------


def test_shift_sign_and_amount():
    assert shift_in_samples(1, 16000) == 640
    assert shift_in_samples(-5, 44100) == -8820
    assert shift_in_samples(3, 48000) == 5760
    x = np.arange(1, 7, dtype=np.float32)[:, None]
    assert delay_samples(x, 2)[:, 0].tolist() == [0, 0, 1, 2, 3, 4]  # positive: delayed
    assert delay_samples(x, -2)[:, 0].tolist() == [3, 4, 5, 6, 0, 0]  # negative: advanced
    assert delay_samples(x, 9)[:, 0].tolist() == [0] * 6
    assert delay_samples(x, 0)[:, 0].tolist() == x[:, 0].tolist()


def test_codec_plan_keeps_the_family():
    def plan(codec, rate=44100, bit_rate=None):
        info = MediaInfo(Path("x"), 1.0, True, True, audio_codec=codec, audio_sample_rate=rate)
        return plan_audio_codec(replace(info, audio_bit_rate=bit_rate))

    assert plan("aac", bit_rate=73431) == plan("aac", bit_rate=73000)
    assert plan("aac", bit_rate=73431).options == ("-b:a", "73k")
    assert plan("mp2", bit_rate=230000).options == ("-b:a", "224k")  # snapped to a legal rate
    assert plan("mp2").encoder == "mp2"
    assert plan("pcm_s16le").encoder == "pcm_s16le" and plan("pcm_s16le").options == ()
    assert plan("mp3").encoder in ("libmp3lame", "aac")
    assert plan("wmav2").encoder == "aac"


# --- real clips ------------------------------------------------------------------------


@needs_real
@pytest.mark.parametrize(
    ("clip", "broken_by"),
    [(AAC_CLIP, +7), (MP2_CLIP, -5), (STEREO_AAC_CLIP, -5)],
    ids=["mp4-aac-16k-mono+7", "mpg-mp2-44k-stereo-5", "mp4-aac-44k-stereo-5"],
)
def test_round_trip_is_sample_exact(tmp_path, clip, broken_by):
    """Shift the audio by `broken_by` frames (audio leads when > 0), then fix it back."""
    if not clip.is_file():
        pytest.skip(f"{clip.name} not among the real test clips")
    original, rate = timeline_audio(clip)
    per_frame = rate // 25
    shift = broken_by * per_frame

    # A clip whose audio leads by `broken_by` frames: fix it with the opposite offset.
    broken = tmp_path / f"broken{clip.suffix}"
    made = fix_clip(clip, broken, -broken_by)
    assert made["applied_shift_samples"] == -shift
    assert made["check_lag_samples"] == 0
    broken_audio, _ = timeline_audio(broken)
    lag, corr = best_lag(original, broken_audio, max_lag=20 * per_frame)
    assert lag == -shift, "offset +k (audio leads) must come from advancing the audio"
    assert corr > 0.8

    # The scorer reports +broken_by for it; fix delays the audio by that much.
    fixed = tmp_path / f"fixed{clip.suffix}"
    result = fix_clip(broken, fixed, broken_by)
    assert result["status"] == "fixed"
    assert result["applied_shift_samples"] == shift
    assert result["applied_shift_s"] == pytest.approx(broken_by / 25)
    recovered, recovered_rate = timeline_audio(fixed)
    assert recovered_rate == rate

    # Compare where both carry the original signal (not the padded/trimmed ends).
    margin = abs(shift) + 2048
    n = min(len(original), len(recovered))
    lag, corr = best_lag(original[margin : n - 2048], recovered[margin : n - 2048], 4096)
    assert abs(lag) <= 1, f"recovered audio is off by {lag} samples"
    assert corr > 0.9
    # …and the ends really are silence where the shifts padded them
    padded = recovered[: abs(shift)] if broken_by > 0 else recovered[n - abs(shift) : n - 2048]
    assert np.abs(padded).max() < 0.05 * np.abs(original).max()

    # Video untouched, duration kept (within one audio frame).
    assert video_hashes(fixed) == video_hashes(clip)
    before, after = probe(clip), probe(fixed)
    assert abs(after.duration_s - before.duration_s) <= 1152 / rate + 1e-6
    assert (after.audio_codec, after.audio_sample_rate, after.audio_channels) == (
        before.audio_codec,
        before.audio_sample_rate,
        before.audio_channels,
    )


@needs_real
def test_refuses_to_write_over_its_input(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.symlink_to(AAC_CLIP)
    with pytest.raises(FixError) as caught:
        fix_clip(clip, clip, 3)
    assert caught.value.status == "refused"
    with pytest.raises(FixError, match="no such file"):
        fix_clip(tmp_path / "gone.mp4", tmp_path / "out.mp4", 3)


WEIRD = "-a clip 'quoted' \"dq\" élan 日本 $(touch PWNED) `touch PWNED2`; rm -rf x"


@needs_real
def test_table_mirrors_logs_and_reruns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / f"in {WEIRD}"
    (root / "talk shows").mkdir(parents=True)
    (root / "grid").mkdir()
    (root / "talk shows" / f"{WEIRD}.mp4").write_bytes(AAC_CLIP.read_bytes())
    (root / "grid" / "g.mpg").write_bytes(MP2_CLIP.read_bytes())
    scores = pd.DataFrame(
        {
            "root": [str(root)] * 4,
            "path": [
                f"talk shows/{WEIRD}.mp4",
                "grid/g.mpg",
                "grid/missing.mpg",
                "grid/no_face.mpg",
            ],
            "status": ["ok", "ok", "ok", "no_face"],
            "offset_frames": pd.array([-3, 0, 2, None], dtype="Int64"),
            "error": [None, None, None, "no face in 90 % of frames"],
        }
    )
    out = tmp_path / "out"
    seen = []
    log = fix_table(scores, out, progress=lambda done, total, row: seen.append((done, total)))
    assert seen[-1] == (4, 4) and len(seen) == 4
    status = dict(zip(log["path"], log["status"], strict=True))
    assert status == {
        f"talk shows/{WEIRD}.mp4": "fixed",
        "grid/g.mpg": "copied",
        "grid/missing.mpg": "missing_input",
        "grid/no_face.mpg": "skipped_not_ok",
    }
    fixed = out / "talk shows" / f"{WEIRD}.mp4"
    assert fixed.is_file() and (out / "grid" / "g.mpg").read_bytes() == MP2_CLIP.read_bytes()
    row = log.set_index("path").loc[f"talk shows/{WEIRD}.mp4"]
    assert row["applied_shift_samples"] == -3 * 640 and row["output"] == str(fixed)
    assert (
        log.set_index("path").loc["grid/no_face.mpg", "error"]
        == "no_face: no face in 90 % of frames"
    )
    assert pd.read_parquet(out / "fixes.parquet")["status"].tolist() == log["status"].tolist()
    assert not list(tmp_path.rglob("PWNED*")) and not list(tmp_path.rglob(".synccurate-*"))

    # Rerun: done rows are reused, their outputs left alone.
    stamp = fixed.stat().st_mtime_ns
    again = fix_table(scores, out)
    assert again["reused"].tolist() == [True, True, False, False]
    assert again["status"].tolist() == log["status"].tolist()
    assert fixed.stat().st_mtime_ns == stamp

    # A changed offset is redone; rows not kept are skipped; unshifted clips can be linked.
    scores.loc[0, "offset_frames"] = 2
    kept = scores.iloc[[0]]
    third = fix_table(scores, out, only_kept=kept, link_unshifted=True)
    assert third["status"].tolist() == ["fixed", *["skipped_not_kept"] * 3]
    assert third["reused"].tolist() == [False] * 4
    assert third["applied_shift_samples"].iloc[0] == 2 * 640
    fourth = fix_table(scores.iloc[[1]], tmp_path / "linked", min_abs_offset=1, link_unshifted=True)
    assert fourth["status"].tolist() == ["linked"]
    assert os.path.samefile(tmp_path / "linked" / "grid" / "g.mpg", root / "grid" / "g.mpg")
    assert not list(tmp_path.rglob("PWNED*"))

    # A redo that fails removes the output of the earlier run instead of leaving it stale.
    (root / "talk shows" / f"{WEIRD}.mp4").write_bytes(b"no longer a video")
    scores.loc[0, "offset_frames"] = 4
    failed = fix_table(scores.iloc[[0]], out)
    assert failed["status"].tolist() == ["decode_error"]
    assert not fixed.exists()


def test_table_refuses_its_input_folder_and_survives_bad_files(tmp_path):
    root = tmp_path / "clips"
    root.mkdir()
    (root / "not a video.mp4").write_bytes(b"garbage")
    scores = pd.DataFrame(
        {"root": [str(root)], "path": ["not a video.mp4"], "status": ["ok"], "offset_frames": [4]}
    )
    with pytest.raises(ValueError, match="input root"):
        fix_table(scores, root)
    log = fix_table(scores, tmp_path / "out")
    assert log["status"].tolist() == ["decode_error"]
    assert "not a video.mp4" in log["error"].iloc[0] and "\n" not in log["error"].iloc[0]
    assert not (tmp_path / "out" / "not a video.mp4").exists()
