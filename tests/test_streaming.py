"""Long recordings scored in chunks: the numbers of whole-clip scoring, buffers that stay small.

Each test scores one clip twice, whole (`prepare_clip` with no chunking, then
`score_clip_faces`) and located then chunked (`score_in_chunks`), and asks for the same S,
row and per-frame facts. The chunks are short (a few seconds), so a short clip has many
seams: a window, an audio window or a feature column read across a seam from the wrong
side would change S.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_models_scoring import MouthEnergyV2Net
from test_score import TwoFacesDetector

from synccurate.faces.detectors import make_detector
from synccurate.faces.extract import iter_crops
from synccurate.io import media
from synccurate.io.inputs import ClipRef
from synccurate.models.icsyncnet import ICSyncNetModel, MouthRecipe
from synccurate.models.syncnet_v2 import SyncNetV2Model
from synccurate.models.weights import find_weights
from synccurate.pipeline import streaming
from synccurate.pipeline.driver import score_clip_faces, score_in_chunks
from synccurate.pipeline.prepare import PreparedClip, prepare_clip
from synccurate.training import synth

CPU = torch.device("cpu")
BATCH = 64


def _both(model, path: Path, chunk_seconds: float, detector=None, max_offset: int = 15):
    """(whole clip, its scores), (located clip, its scores in chunks of chunk_seconds)."""
    ref = ClipRef(str(path.parent), path.name)
    detector = detector or make_detector("none")
    whole = prepare_clip(ref, model.recipe, detector, 1, math.inf)
    assert whole.status == "ok" and not whole.in_chunks, whole.error
    (scored,) = score_clip_faces(model, [whole], BATCH, CPU, max_offset)
    located = prepare_clip(ref, model.recipe, detector, 1, chunk_seconds)
    assert located.status == "ok" and located.in_chunks and located.crops is None
    chunked = score_in_chunks(model, located, BATCH, CPU, max_offset, chunk_seconds=chunk_seconds)
    return (whole, scored), (located, chunked)


def _assert_same_scores(whole, chunked) -> None:
    (clip_a, a), (clip_b, b) = whole, chunked
    assert a.similarity.shape == b.similarity.shape
    torch.testing.assert_close(a.similarity, b.similarity, atol=1e-5, rtol=0, equal_nan=True)
    _assert_same_columns(a.columns, b.columns)
    assert len(a.timeline) == len(b.timeline)
    for stretch_a, stretch_b in zip(a.timeline, b.timeline, strict=True):
        _assert_same_columns(stretch_a, stretch_b)
    assert (clip_a.n_frames, clip_a.n_samples, clip_a.n_windows) == (
        clip_b.n_frames,
        clip_b.n_samples,
        clip_b.n_windows,
    )
    np.testing.assert_array_equal(clip_a.silence, clip_b.silence)
    np.testing.assert_array_equal(clip_a.voiced, clip_b.voiced)
    np.testing.assert_array_equal(clip_a.has_face, clip_b.has_face)


def _assert_same_columns(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name, value in a.items():
        other = b[name]
        if isinstance(value, np.ndarray):
            np.testing.assert_allclose(np.asarray(other, float), value.astype(float), atol=1e-4)
        elif isinstance(value, float):
            assert other == pytest.approx(value, abs=1e-5), name
        else:
            assert other == value, name


def test_icsyncnet_three_minutes_in_20_second_chunks_equal_the_whole_clip(tmp_path):
    """The issue's figure: a 3-minute clip, whole and in 20 s chunks, the same row and p_t."""
    synth.synth_clip(tmp_path / "long.mp4", seconds=180.0, seed=3, offset_frames=2)
    model = ICSyncNetModel.load(find_weights())
    whole, chunked = _both(model, tmp_path / "long.mp4", 20.0)
    _assert_same_scores(whole, chunked)
    assert chunked[1].columns["offset_frames"] == 2
    assert len(chunked[1].columns["p_t"]) == chunked[0].n_windows == 180 * 25 - 4


def test_v2_three_minutes_in_20_second_chunks_equal_the_whole_clip(tmp_path):
    """The issue's figure for SyncNet v2's path (224² crops, MFCC windows, distances, fconf),
    with a weight-free stand-in network: the same row, fconf and timeline."""
    synth.synth_clip(tmp_path / "long.mp4", seconds=180.0, seed=5, offset_frames=-2)
    model = SyncNetV2Model(MouthEnergyV2Net(), "stand-in")
    whole, chunked = _both(model, tmp_path / "long.mp4", 20.0)
    _assert_same_scores(whole, chunked)
    assert chunked[1].columns["offset_frames"] == -2
    assert len(chunked[1].columns["fconf"]) == chunked[0].n_windows


def test_v2_chunks_equal_the_whole_clip_when_the_audio_ends_first(tmp_path):
    """SyncNet v2's windows depend on the audio's length and compare with zero vectors past
    the clip's last window: both must come out the same at a clip end inside a chunk."""
    frames, sound, _ = synth.synth_arrays(seconds=14.0, seed=8, offset_frames=-3)
    short = sound[: len(sound) - 37 * 640 - 123]  # the audio stops 1.5 s before the video
    media.write_clip(tmp_path / "v2.mp4", frames, short)
    model = SyncNetV2Model(MouthEnergyV2Net(), "stand-in")
    whole, chunked = _both(model, tmp_path / "v2.mp4", 2.4, max_offset=8)
    _assert_same_scores(whole, chunked)
    located = chunked[0]
    assert located.n_windows == located.n_samples // 640 - 5 < located.n_frames - 5
    assert chunked[1].columns["offset_frames"] == -3


def test_two_face_tracks_carry_across_chunk_seams(tmp_path):
    """Two tracks from a detector, cut in 2.4 s chunks: each track's S, the speaker choice and
    the per-track summary equal the whole clip's."""
    speaker, sound, _ = synth.synth_arrays(seconds=9.0, seed=31, offset_frames=3)
    other, _, _ = synth.synth_arrays(seconds=9.0, seed=77)
    gap = np.zeros((len(speaker), 96, 32, 3), dtype=np.uint8)
    media.write_clip(tmp_path / "two.mp4", np.concatenate([other, gap, speaker], axis=2), sound)
    model = ICSyncNetModel.load(find_weights())
    model.recipe = MouthRecipe(crop_hw=(32, 64), margin=0.0)  # the face box is the face
    whole, chunked = _both(model, tmp_path / "two.mp4", 2.4, TwoFacesDetector())
    _assert_same_scores(whole, chunked)
    assert chunked[1].columns["face_track"] == 1 and chunked[1].columns["n_faces"] == 2
    assert chunked[1].columns["offset_frames"] == 3


class ShownFaceDetector:
    """The whole frame is a face wherever the frame is not black."""

    name = "shown-face"

    def detect(self, frames):
        return [[(0.0, 0.0, f.shape[1], f.shape[0], 1.0)] if f.mean() > 8 else [] for f in frames]


def test_rows_far_from_a_face_are_not_scored_and_the_rest_match_across_seams(tmp_path, monkeypatch):
    """The face is gone in frames 60–139, across two 2.4 s seams: S has rows only within
    `window_reach` of the face windows (NaN elsewhere, never embedded), whole and chunked
    alike; every column and the timeline are those of S with every row computed."""
    from synccurate.pipeline.batching import window_reach
    from synccurate.pipeline.prepare import face_windows, near_faces

    frames, sound, _ = synth.synth_arrays(seconds=9.0, seed=31, offset_frames=2)
    frames[60:140] = 0
    media.write_clip(tmp_path / "gone.mp4", frames, sound)
    model = ICSyncNetModel.load(find_weights())
    model.recipe = MouthRecipe(crop_hw=(32, 64), margin=0.0)
    whole, chunked = _both(model, tmp_path / "gone.mp4", 2.4, ShownFaceDetector())
    _assert_same_scores(whole, chunked)
    clip, scored = whole
    assert not clip.has_face[60:140].any() and clip.has_face[:60].all()
    S = scored.similarity
    valid = face_windows(clip.tracks[scored.columns["face_track"]].has_face, clip.n_windows)
    near = near_faces(valid, window_reach(model))
    assert 0 < near.sum() < clip.n_windows
    np.testing.assert_array_equal(torch.isnan(S).all(1).numpy(), ~near)
    assert torch.isfinite(S[near]).all()
    assert scored.columns["offset_frames"] == 2
    monkeypatch.setattr(PreparedClip, "windows_to_score", lambda clip, reach: None)
    (every_row,) = score_clip_faces(model, [clip], BATCH, CPU, 15)
    torch.testing.assert_close(every_row.similarity[near], S[near], atol=1e-5, rtol=0)
    _assert_same_columns(every_row.columns, scored.columns)
    for stretch_a, stretch_b in zip(every_row.timeline, scored.timeline, strict=True):
        _assert_same_columns(stretch_a, stretch_b)


class HalvesDetector:
    """A face in each half of the frame that is not black: left box, then right box."""

    name = "halves"

    def detect(self, frames):
        side = frames.shape[1]
        found = []
        for frame in frames:
            halves = [(0.0, frame[:, :side]), (frame.shape[1] - side, frame[:, -side:])]
            found.append([(x, 0.0, x + side, side, 1.0) for x, half in halves if half.mean() > 8])
        return found


def test_a_track_absent_from_a_chunk_holds_no_crops_and_scores_the_same(tmp_path):
    """The left face shows in frames 0–89, the right one (the speaker, the main face: it
    shows longer) in 120–224. A chunk in which no window of a track is scored hands it no
    crops (None). Whole and chunked scoring agree."""
    left, _, _ = synth.synth_arrays(seconds=9.0, seed=77)
    right, sound, _ = synth.synth_arrays(seconds=9.0, seed=31, offset_frames=3)
    left[90:], right[:120] = 0, 0
    gap = np.zeros((len(left), 96, 32, 3), dtype=np.uint8)
    media.write_clip(tmp_path / "turns.mp4", np.concatenate([left, gap, right], axis=2), sound)
    model = ICSyncNetModel.load(find_weights())
    model.recipe = MouthRecipe(crop_hw=(32, 64), margin=0.0)
    whole, chunked = _both(model, tmp_path / "turns.mp4", 2.4, HalvesDetector())
    _assert_same_scores(whole, chunked)
    assert chunked[1].columns["face_track"] == 0 and chunked[1].columns["offset_frames"] == 3
    ref = ClipRef(str(tmp_path), "turns.mp4")
    located = prepare_clip(ref, model.recipe, HalvesDetector(), 1, 2.4)
    chunks = list(streaming.iter_window_chunks(located, model, 60, 15))
    assert [views[0].first_window for views in chunks] == [0, 60, 120, 180]
    assert [views[0].crops is not None for views in chunks] == [False, True, True, True]
    assert [views[1].crops is not None for views in chunks] == [True, True, False, False]
    # nor are they cut: the crop pass yields None for the left face's blocks past frame 127
    blocks = list(iter_crops(located.media, located.tracks, model.recipe, chunk_frames=64))
    assert [[crops is not None for crops in block] for block in blocks] == [
        [True, True],
        [True, True],
        [True, False],
        [True, False],
    ]


def test_chunks_hold_a_bounded_stretch_of_crops_and_audio(tmp_path, monkeypatch):
    """However long the clip, the crops and samples held at once stay within a few chunks."""
    synth.synth_clip(tmp_path / "clip.mp4", seconds=30.0, seed=4)
    model = ICSyncNetModel.load(find_weights())
    ref = ClipRef(str(tmp_path), "clip.mp4")
    clip = prepare_clip(ref, model.recipe, make_detector("none"), 1, 2.4)
    chunk_frames = streaming.min_chunk_frames(15)
    held = {"frames": 0, "samples": 0}
    real_cut_to, real_decode_to = streaming._Crops.cut_to, streaming._Samples.decode_to

    def cut_to(self, frame):
        real_cut_to(self, frame)
        held["frames"] = max(held["frames"], len(self.buffers[0]))

    def decode_to(self, sample):
        real_decode_to(self, sample)
        held["samples"] = max(held["samples"], len(self.buffer))

    monkeypatch.setattr(streaming._Crops, "cut_to", cut_to)
    monkeypatch.setattr(streaming._Samples, "decode_to", decode_to)
    chunks = list(streaming.iter_window_chunks(clip, model, chunk_frames, 15))
    assert sum(views[0].n_windows for views in chunks) == clip.n_windows == 30 * 25 - 4
    assert all(len(views[0].crops) <= chunk_frames + 4 for views in chunks)
    # one chunk, one chunk read ahead, a 64-frame decode block and the window tail
    assert held["frames"] <= 2 * chunk_frames + 64 + 4
    seconds_held = held["samples"] / 16_000
    assert seconds_held <= (3 * chunk_frames + 2 * (15 + streaming.AUDIO_REACH_FRAMES)) / 25 + 17


def test_v2_audio_outside_the_clip_is_zeroed_on_the_clips_time_line():
    """Rows of the audio embeddings [T + 2K, D] belong to windows first - K …: those before
    window 0 and from the clip's last window on are zero, wherever the chunk lies."""
    from types import SimpleNamespace

    from synccurate.pipeline.batching import _outside_zeroed

    whole = SimpleNamespace(first_window=0, clip_windows=3)  # windows 0, 1, 2; K = 2
    zeroed = _outside_zeroed(torch.ones(7, 2), whole, 0, 2)
    assert zeroed[:, 0].tolist() == [0, 0, 1, 1, 1, 0, 0]
    end_chunk = SimpleNamespace(first_window=10, clip_windows=12)  # windows 10, 11, 12 …
    zeroed = _outside_zeroed(torch.ones(7, 2), end_chunk, 0, 2)
    assert zeroed[:, 0].tolist() == [1, 1, 1, 1, 0, 0, 0]  # rows for windows 8 … 14
    chunk = SimpleNamespace(first_window=5, clip_windows=12)  # a run from its 5th window on:
    zeroed = _outside_zeroed(torch.ones(7, 2), chunk, 5, 2)  # rows for windows 8 … 14 again
    assert zeroed[:, 0].tolist() == [1, 1, 1, 1, 0, 0, 0]
