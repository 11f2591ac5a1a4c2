"""Speaker segments from hand-made similarity matrices, whose answers are known by design.

A face "speaks" at offset k on the windows where its S row peaks at column K + k; elsewhere
its row is flat and low. The models are weight-free: IC-SyncNet's metrics (sigmoid(S / τ))
and SyncNet v2's (distances, frame-wise confidence) on the given S.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from synccurate.models.icsyncnet import metrics_columns
from synccurate.models.sync import clip_metrics
from synccurate.models.syncnet_v2 import SyncNetV2Model
from synccurate.pipeline.segments import TrackEvidence, segment_rows, speaker_segments

K = 15  # offsets searched on each side
TAU = 0.1  # the stand-in's temperature: S = 0.8 is P(sync) ≈ 1, S = -0.2 is 0.12
FPS = 25
EDGE = 0.1  # s: Gaussian smoothing of S (σ = 2 frames) widens a turn by up to two windows


class ProbabilityModel:
    """IC-SyncNet's metrics on a given S, no network."""

    kind = "icsyncnet"
    score_kind = "probability"

    def metrics(self, similarity, valid, offset_method="mean"):
        found = clip_metrics(similarity, TAU, valid=valid, offset_method=offset_method)
        return metrics_columns(found)


class DistanceModel(SyncNetV2Model):
    """SyncNet v2's metrics on a given S (= -distance), no network."""

    def __init__(self):
        pass


def similarity(n_windows: int, turns: dict[tuple[int, int], int], peak: float = 0.8, seed=0):
    """S [T, 2K+1]: flat around -0.2 (a little noise), and `peak` at column K + offset on
    the windows [start, stop) of each turn {(start, stop): offset}."""
    rng = np.random.default_rng(seed)
    S = -0.2 + 0.02 * rng.standard_normal((n_windows, 2 * K + 1))
    for (start, stop), offset in turns.items():
        S[start:stop, K + offset] = peak
    return torch.tensor(S, dtype=torch.float32)


def track(index: int, S: torch.Tensor, face: tuple[int, int] | None = None, box_px=100.0):
    """A track whose face is on screen in frames [face) (default: all), boxes box_px high."""
    n_frames = len(S) + 4
    has_face = np.zeros(n_frames, dtype=bool)
    has_face[slice(*face) if face else slice(None)] = True
    valid = np.array([has_face[t : t + 5].all() for t in range(len(S))])
    boxes = np.where(has_face[:, None], [[10.0, 10.0, 10.0 + box_px, 10.0 + box_px]], np.nan)
    return TrackEvidence(index, S, valid, has_face, boxes)


def voiced_between(n_frames: int, *spans: tuple[int, int]) -> np.ndarray:
    voiced = np.zeros(n_frames, dtype=bool)
    for start, stop in spans:
        voiced[start:stop] = True
    return voiced


def test_one_face_speaking_from_4_to_12_s_at_offset_plus_4_is_one_segment():
    T = 500
    S = similarity(T, {(100, 301): 4})
    found = speaker_segments(
        ProbabilityModel(), [track(0, S)], [], T + 4, voiced_between(T + 4, (100, 305))
    )
    assert len(found) == 1
    (segment,) = found
    assert segment["start_s"] == pytest.approx(4.0, abs=EDGE)
    assert segment["end_s"] == pytest.approx(305 / FPS, abs=EDGE)  # window 300 covers 300 … 304
    assert segment["offset_frames"] == 4
    assert segment["prob_at_offset"] > 0.99 and segment["vote_share"] > 0.95
    assert segment["face_px"] == pytest.approx(100.0)
    assert segment["speech_ratio"] > 0.95
    assert (segment["shot"], segment["face_track"], segment["end_reason"]) == (0, 0, "silence")


def test_a_voice_going_on_after_the_face_stops_is_another_speaker():
    T = 500
    S = similarity(T, {(100, 301): 4})
    voiced = voiced_between(T + 4, (100, 450))  # someone off screen goes on talking
    (segment,) = speaker_segments(ProbabilityModel(), [track(0, S)], [], T + 4, voiced)
    assert segment["end_reason"] == "other_speaker"


def test_a_shut_mouth_in_the_pauses_of_an_off_screen_voice_is_nobodys_turn():
    """The face speaks windows 100–200; then a voice off screen talks, with a pause at
    frames 222–244 where the silent face's shut mouth fits the silence (S peaks there
    too, less than a second after the turn). That in-sync run holds no speech: it is not
    bridged to the turn, which ends at frame 204."""
    T = 400
    S = similarity(T, {(100, 201): 0, (226, 237): 0})
    voiced = voiced_between(T + 4, (100, 222), (244, 380))
    (segment,) = speaker_segments(ProbabilityModel(), [track(0, S)], [], T + 4, voiced)
    assert segment["end_s"] == pytest.approx(205 / FPS, abs=EDGE)
    assert segment["end_reason"] == "other_speaker"


def test_two_faces_taking_turns_each_get_their_turns():
    """Left (offset 0) speaks windows 50–150 and 250–350, right (offset +2) 150–250. During
    the left's first turn the right's lips fit the audio weakly (S = 0.3, P ≈ 0.95): both
    are above the bar there and the stronger, the left, has those windows."""
    T = 420
    left = similarity(T, {(50, 150): 0, (250, 350): 0}, seed=1)
    right = similarity(T, {(150, 250): 2}, seed=2)
    right[60:140, K + 2] = 0.3
    voiced = voiced_between(T + 4, (50, 354))
    found = speaker_segments(
        ProbabilityModel(), [track(0, left), track(1, right)], [], T + 4, voiced
    )
    turns = [
        (s["face_track"], round(s["start_s"]), s["offset_frames"], s["end_reason"]) for s in found
    ]
    assert turns == [(0, 2, 0, "other_speaker"), (1, 6, 2, "other_speaker"), (0, 10, 0, "silence")]
    assert found[0]["end_s"] == pytest.approx(154 / FPS, abs=EDGE)
    assert found[1]["start_s"] == pytest.approx(150 / FPS, abs=EDGE)


def test_a_shot_cut_ends_a_segment_and_the_next_shot_starts_another():
    """One speaker throughout, a cut at frame 200: two tracks (one per shot), two segments."""
    T = 400
    S = similarity(T, {(0, T): 1})
    tracks = [track(0, S, face=(0, 200)), track(1, S, face=(200, T + 4))]
    found = speaker_segments(ProbabilityModel(), tracks, [200], T + 4, np.ones(T + 4, bool))
    assert [(s["shot"], s["face_track"], s["end_reason"]) for s in found] == [
        (0, 0, "shot_cut"),
        (1, 1, "clip_end"),
    ]
    assert found[0]["end_s"] == pytest.approx(200 / FPS)  # its last frame is 199
    assert found[1]["start_s"] == pytest.approx(200 / FPS)
    assert found[1]["end_s"] == pytest.approx((T + 4) / FPS)


def test_a_lost_face_ends_its_segment():
    T = 300
    S = similarity(T, {(0, T): 0})
    found = speaker_segments(
        ProbabilityModel(), [track(0, S, face=(0, 150))], [], T + 4, np.ones(T + 4, bool)
    )
    assert [(s["start_s"], s["end_s"], s["end_reason"]) for s in found] == [
        (0.0, 150 / FPS, "face_lost")
    ]


def test_short_pauses_are_bridged_long_ones_split_and_short_stretches_dropped():
    T = 600
    # 0.6 s pause at 100–115: bridged; 2 s pause at 200–250; a 1.2 s burst at 400–430
    S = similarity(T, {(0, 100): 3, (115, 200): 3, (250, 350): 3, (400, 430): 3})
    voiced = voiced_between(T + 4, (0, 100), (115, 200), (250, 350), (400, 430))
    found = speaker_segments(ProbabilityModel(), [track(0, S)], [], T + 4, voiced)
    spans = [(round(s["start_s"], 1), round(s["end_s"], 1), s["end_reason"]) for s in found]
    assert spans == [(0.0, 8.2, "silence"), (10.0, 14.2, "silence")]
    unbridged = speaker_segments(
        ProbabilityModel(), [track(0, S)], [], T + 4, voiced, max_gap_seconds=0.4
    )
    assert [s["start_s"] for s in unbridged] == pytest.approx([0.0, 4.6, 10.0], abs=EDGE)
    kept = speaker_segments(ProbabilityModel(), [track(0, S)], [], T + 4, voiced, min_seconds=1.0)
    assert [s["start_s"] for s in kept] == pytest.approx([0.0, 10.0, 16.0], abs=EDGE)


def test_a_long_turn_is_split_into_pieces_no_longer_than_the_maximum():
    T = 30 * FPS - 4  # 30 s of frames
    S = similarity(T, {(0, T): -2})
    found = speaker_segments(ProbabilityModel(), [track(0, S)], [], T + 4, np.ones(T + 4, bool))
    assert [s["end_reason"] for s in found] == ["max_length", "clip_end"]
    assert all(s["end_s"] - s["start_s"] <= 20.0 for s in found)
    assert found[0]["end_s"] <= found[1]["start_s"]  # frames never in two segments
    assert found[1]["end_s"] == pytest.approx(30.0)
    assert found[0]["end_s"] - found[0]["start_s"] == pytest.approx(15.0, abs=0.2)
    assert {s["offset_frames"] for s in found} == {-2}


def test_a_distance_model_uses_its_frame_wise_confidence():
    """SyncNet v2: S = -distance; distance 2 at offset +4 on windows 100–300, 12 elsewhere:
    frame-wise confidence ~10 there, ~0 elsewhere, against the LSE-C bar of 3."""
    T = 500
    S = -12.0 - 0.05 * torch.rand(T, 2 * K + 1)
    S[100:301, K + 4] = -2.0
    (segment,) = speaker_segments(
        DistanceModel(), [track(0, S)], [], T + 4, voiced_between(T + 4, (100, 305))
    )
    assert segment["offset_frames"] == 4
    assert segment["lse_c"] > 3 and segment["prob_at_offset"] is None
    assert segment["start_s"] == pytest.approx(4.0, abs=5 / FPS)  # the 9-window median filter
    assert segment["end_s"] == pytest.approx(305 / FPS, abs=5 / FPS)


def test_segment_rows_number_the_segments_of_a_clip():
    segments = [{"start_s": 0.0}, {"start_s": 5.0}]
    rows = segment_rows(segments, {"root": "r", "path": "a.mp4", "status": "ok"}, "m@1")
    assert [(r["segment"], r["start_s"], r["model"], r["path"]) for r in rows] == [
        (0, 0.0, "m@1", "a.mp4"),
        (1, 5.0, "m@1", "a.mp4"),
    ]


def test_a_segments_folder_is_written_and_read_like_the_timeline(tmp_path):
    """Rows of two clips through the parts writer; a rescored clip keeps its latest run's."""
    from synccurate.store import parts
    from synccurate.store.readers import read_segments
    from synccurate.store.schema import SEGMENTS

    T = 500
    found = speaker_segments(
        ProbabilityModel(),
        [track(0, similarity(T, {(100, 301): 4}))],
        [],
        T + 4,
        np.ones(T + 4, bool),
    )
    pinned = {"model": "m@1", "max_offset": K}
    folder = tmp_path / "segments"
    for rows in ([*found, *found], found):  # a first run with two segments, then a rescore
        writer, _ = parts.open_output(folder, pinned, table=SEGMENTS)
        with writer:
            for row in segment_rows(rows, {"root": "r", "path": "a.mp4", "status": "ok"}, "m@1"):
                writer.add(row)
            writer.add({"root": "r", "path": "bad.mp4", "status": "decode_error", "model": "m@1"})
    table = read_segments(folder)
    assert list(table["path"]) == ["a.mp4", "bad.mp4"]
    assert table["segment"].tolist()[0] == 0 and pd.isna(table["segment"].tolist()[1])
    assert table.loc[0, "offset_frames"] == 4 and table.loc[0, "end_reason"] == "other_speaker"
    assert str(table["start_s"].dtype) == "float64" and str(table["shot"].dtype) == "Int64"


def test_filter_judges_each_segment_of_a_clip_by_the_same_rules(tmp_path):
    """Three segments of one clip: kept, low probability, small face; every one has a row."""
    from synccurate.curate.filtering import FilterRules
    from synccurate.curate.runs import filter_scores
    from synccurate.io.files import write_table

    table = pd.DataFrame(
        {
            "root": "r",
            "path": "a.mp4",
            "status": "ok",
            "segment": pd.array([0, 1, 2], dtype="Int64"),
            "offset_frames": pd.array([2, 2, 2], dtype="Int64"),
            "prob_at_offset": [0.9, 0.2, 0.9],
            "offscreen_ratio": [0.0, 0.0, 0.0],
            "face_px": [120.0, 120.0, 40.0],
            "end_reason": ["other_speaker", "silence", "clip_end"],
        }
    )
    source = write_table(table, tmp_path / "segments.parquet")
    result = filter_scores(
        source, tmp_path / "kept.parquet", FilterRules(min_face_px=64), rejected=tmp_path / "r.pq"
    )
    assert result.kept["segment"].tolist() == [0]
    assert result.rejected["segment"].tolist() == [1, 2]
    assert result.rejected["reject_reason"].tolist() == ["low_prob", "small_face"]
