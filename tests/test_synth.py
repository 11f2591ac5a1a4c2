"""Synthetic clips: determinism, mouth-follows-audio, the SPEC §6 offset sign, files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synccurate.io import media
from synccurate.io.audio import SAMPLES_PER_FRAME, SILENCE_DBFS
from synccurate.training.synth import (
    MANIFEST_COLUMNS,
    MANIFEST_NAME,
    shift_audio,
    synth_arrays,
    synth_clip,
    synth_dataset,
)

GRAY = np.array([0.299, 0.587, 0.114])


def mouth_opening(frames: np.ndarray) -> np.ndarray:
    """Per frame: dark (mouth-interior) pixels in the lower half of the frame."""
    lower = frames[:, frames.shape[1] // 2 :].astype(np.float64)
    return ((lower @ GRAY) < 30).sum(axis=(1, 2)).astype(np.float64)


def frame_rms(audio: np.ndarray, n_frames: int) -> np.ndarray:
    padded = np.zeros(n_frames * SAMPLES_PER_FRAME)
    usable = min(len(audio), len(padded))
    padded[:usable] = audio[:usable]
    return np.sqrt(np.mean(padded.reshape(n_frames, SAMPLES_PER_FRAME) ** 2, axis=1))


def lagged_correlation(mouth: np.ndarray, rms: np.ndarray, k: int) -> float:
    """corr(mouth[t], rms[t - k]) over the frames where both exist (SPEC §5 indexing)."""
    n = len(mouth)
    t = np.arange(max(0, k), min(n, n + k))
    return float(np.corrcoef(mouth[t], rms[t - k])[0, 1])


def best_lag(mouth: np.ndarray, rms: np.ndarray, max_lag: int = 8) -> int:
    lags = list(range(-max_lag, max_lag + 1))
    return lags[int(np.argmax([lagged_correlation(mouth, rms, k) for k in lags]))]


def test_same_seed_same_clip_other_seed_other_clip():
    a = synth_arrays(seconds=2, seed=11, offscreen_fraction=0.3, stutter=True)
    b = synth_arrays(seconds=2, seed=11, offscreen_fraction=0.3, stutter=True)
    c = synth_arrays(seconds=2, seed=12, offscreen_fraction=0.3, stutter=True)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    for key, value in a[2].items():
        assert np.array_equal(value, b[2][key]), key
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[1], c[1])


def test_shapes_and_types():
    frames, audio, truth = synth_arrays(seconds=2, seed=3, size=64)
    assert frames.shape == (50, 64, 64, 3) and frames.dtype == np.uint8
    assert audio.shape == (50 * SAMPLES_PER_FRAME,) and audio.dtype == np.float32
    assert truth["n_frames"] == 50 and truth["true_offset_frames"] == 0
    assert np.abs(audio).max() <= 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mouth_opening_follows_loudness_in_sync(seed):
    frames, audio, _ = synth_arrays(seconds=4, seed=seed)
    mouth = mouth_opening(frames)
    rms = frame_rms(audio, len(frames))
    assert mouth.max() > 50  # a clearly visible opening
    assert mouth.min() == 0  # and a closed mouth in pauses
    assert lagged_correlation(mouth, rms, 0) > 0.6
    assert best_lag(mouth, rms) == 0


@pytest.mark.parametrize("offset", [4, -3])
def test_offset_sign_matches_spec(offset):
    """+4 = audio advanced: the mouth at frame t matches the file's audio at frame t - 4."""
    frames, audio, truth = synth_arrays(seconds=4, seed=5, offset_frames=offset)
    assert truth["true_offset_frames"] == offset
    # the same performance as the in-sync clip: only the audio moved
    frames0, _, _ = synth_arrays(seconds=4, seed=5)
    assert np.array_equal(frames, frames0)
    mouth = mouth_opening(frames)
    rms = frame_rms(audio, len(frames))
    assert best_lag(mouth, rms) == offset
    assert lagged_correlation(mouth, rms, offset) > 0.6


def test_shift_audio_keeps_length_and_pads_silence():
    x = np.arange(1, 5 * SAMPLES_PER_FRAME + 1, dtype=np.float32)
    advanced = shift_audio(x, 2)  # drop the start, silence at the end
    assert len(advanced) == len(x)
    assert advanced[0] == x[2 * SAMPLES_PER_FRAME]
    assert np.all(advanced[3 * SAMPLES_PER_FRAME :] == 0)
    delayed = shift_audio(x, -2)  # silence at the start, trim the end
    assert np.all(delayed[: 2 * SAMPLES_PER_FRAME] == 0)
    assert delayed[2 * SAMPLES_PER_FRAME] == x[0]
    assert np.array_equal(shift_audio(x, 0), x)


def test_offscreen_stretch_has_speech_but_an_idle_mouth():
    frames, audio, truth = synth_arrays(seconds=4, seed=8, offscreen_fraction=0.4)
    start, end = truth["offscreen_start"], truth["offscreen_end"]
    assert end - start == 40 and truth["offscreen_ratio"] == pytest.approx(0.4)
    expected = np.zeros(100, dtype=bool)
    expected[start:end] = True
    assert np.array_equal(truth["offscreen_frames"], expected)
    mouth = mouth_opening(frames)
    rms_db = 20 * np.log10(np.maximum(frame_rms(audio, 100), 1e-10))
    inside = slice(start + 1, end - 1)  # the edge frames share the cross-fade
    assert mouth[inside].max() - mouth[inside].min() <= 2  # idle, closed
    assert np.mean(rms_db[inside] > SILENCE_DBFS) > 0.4  # someone is talking
    assert mouth[~expected].max() > 50  # the on-screen speaker does move elsewhere


def test_silence_heavy_clips_are_mostly_silent():
    normal = [synth_arrays(seconds=4, seed=s)[2]["silence_ratio"] for s in range(4)]
    heavy = [
        synth_arrays(seconds=4, seed=s, silence_heavy=True)[2]["silence_ratio"] for s in range(4)
    ]
    assert np.mean(normal) < 0.5
    assert np.mean(heavy) > 0.6


def test_stutter_holds_frames_and_leaves_audio_alone():
    frames, audio, truth = synth_arrays(seconds=4, seed=9, stutter=True)
    _, audio0, _ = synth_arrays(seconds=4, seed=9)
    assert np.array_equal(audio, audio0)
    held = truth["stutter_frames"]
    assert truth["stutter"] and held.sum() >= 2
    for t in np.flatnonzero(held):
        assert np.array_equal(frames[t], frames[t - 1])


def test_written_clips_decode_back_and_manifest_has_ground_truth(tmp_path):
    out = tmp_path / "set"
    synth_dataset(
        out, n=4, seconds=2, seed=1, offset_range=6, offscreen_fraction=0.4, offscreen_every=2
    )
    synth_dataset(
        tmp_path / "again",
        n=4,
        seconds=2,
        seed=1,
        offset_range=6,
        offscreen_fraction=0.4,
        offscreen_every=2,
        workers=2,
    )
    read = pd.read_parquet(out / MANIFEST_NAME)
    assert list(read.columns) == list(MANIFEST_COLUMNS)
    # the same whatever the number of workers
    assert read.equals(pd.read_parquet(tmp_path / "again" / MANIFEST_NAME))
    assert list(read["path"]) == [f"clip_{i:05d}.mp4" for i in range(4)]
    assert read["true_offset_frames"].abs().max() <= 6
    assert list(read["offscreen_ratio"] > 0) == [False, True, False, True]
    assert all(len(row) == 50 for row in read["silence_frames"])

    row = read.iloc[1]
    frames, audio, truth = synth_arrays(
        seconds=2, seed=int(row["seed"]), offset_frames=int(row["true_offset_frames"]),
        offscreen_fraction=0.4,
    )  # fmt: skip
    assert np.array_equal(truth["silence_frames"], row["silence_frames"])
    info = media.probe(out / row["path"])
    assert info.has_audio and info.has_video
    assert info.source_fps == pytest.approx(25.0)
    assert info.duration_s == pytest.approx(2.0, abs=0.05)
    assert (info.width, info.height) == (96, 96)
    decoded = media.decode_audio(info)
    assert abs(len(decoded) - len(audio)) <= SAMPLES_PER_FRAME
    # the decoded track lines up with the synthetic one (no codec delay)
    assert best_lag(frame_rms(decoded, 50), frame_rms(audio, 50), 3) == 0
    decoded_frames = np.concatenate(list(media.iter_video_frames(info)))
    assert len(decoded_frames) == 50
    assert np.abs(decoded_frames.astype(int) - frames.astype(int)).mean() < 4


def test_synth_clip_returns_its_record(tmp_path):
    record = synth_clip(tmp_path / "one.mp4", seconds=1, seed=4, offset_frames=-2, stutter=True)
    assert (tmp_path / "one.mp4").is_file()
    assert record["true_offset_frames"] == -2 and record["stutter"] is True
    assert len(record["stutter_frames"]) == 25 and isinstance(record["silence_frames"], list)


def test_offset_frames_and_range_are_exclusive(tmp_path):
    with pytest.raises(ValueError):
        synth_dataset(tmp_path, n=1, seconds=1, seed=0, offset_frames=3, offset_range=2)
