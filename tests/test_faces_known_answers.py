"""Faces with known answers: nested and overlapping boxes, and a clip whose speaker is the
second face track (its own face_ratio, face_track and the face_tracks summary).

Detections are hand-built or scripted, the clip is self-made (synccurate.training.synth) and
the model is a weight-free stand-in whose similarity is the correlation of mouth darkness
and loudness, so every expected value follows from how the clip was made.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synccurate.faces import tracks as tracking
from synccurate.io import audio, media
from synccurate.io.inputs import ClipRef
from synccurate.models.base import NetworkModel
from synccurate.models.icsyncnet import MouthRecipe, metrics_columns
from synccurate.models.sync import clip_metrics
from synccurate.pipeline import driver
from synccurate.pipeline.prepare import prepare_clip
from synccurate.training import synth

N = 60  # frames of the hand-built detections


def face(t: int, x: float = 100.0, y: float = 60.0, side: float = 90.0) -> np.ndarray:
    """A face drifting right by 0.5 px a frame."""
    return np.array([x + 0.5 * t, y, x + 0.5 * t + side, y + side])


def assert_boxes(track: tracking.FaceTrack, truth, tolerance: float = 1.0) -> None:
    assert track.has_face.all()
    for t in range(N):
        error = np.abs(track.boxes[t] - truth(t)).max()
        assert error <= tolerance, f"frame {t}: box off by {error:.1f} px"


def test_nested_boxes_on_one_face_are_one_track_that_follows_the_largest_box():
    """A detector that returns the face (90 px), a tighter concentric box (60 px), listed
    first, and an eye box inside the face: one face, tracked by its largest box."""

    def inner(t: int) -> np.ndarray:
        return face(t) + [15, 15, -15, -15]

    def eye(t: int) -> np.ndarray:
        x, y = face(t)[:2]
        return np.array([x + 14, y + 16, x + 40, y + 42])

    detections = [[(*inner(t), 0.9), (*face(t), 0.8), (*eye(t), 0.5)] for t in range(N)]
    tracks = tracking.track_all_faces(detections, N, min_frames=1)
    assert len(tracks) == 1
    assert_boxes(tracks[0], face)


ZOOM_FRAMES = 100  # frames of the zoom and cut cases
DETECT_EVERY = 4  # the detector runs on every 4th frame, as `score` does by default


def zooming_face(t: int) -> np.ndarray:
    """A camera push-in within one shot: the face doubles from 60 to 120 px over frames
    25 … 75 (2 s), smoothly, drifting away from the zoom's centre as it grows."""
    side = 60.0 * 2 ** (np.clip(t - 25, 0, 50) / 50)
    centre_x, centre_y = 160 + 0.3 * (side - 60), 100.0
    return np.array(
        [centre_x - side / 2, centre_y - side / 2, centre_x + side / 2, centre_y + side / 2]
    )


def sparse_detections(box_at, n_frames: int, missed: range = range(0)) -> list:
    """Detections on every DETECT_EVERY-th frame (None elsewhere); none in `missed`."""
    return [
        None if t % DETECT_EVERY else [] if t in missed else [(*box_at(t), 1.0)]
        for t in range(n_frames)
    ]


def runs(has_face: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], has_face.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def test_a_face_doubling_in_two_seconds_is_one_track_across_a_missed_stretch():
    """The TEDx case: the face is missed for 16 frames in the middle of a 2× zoom. Both
    sides are one face: one track, the long gap (frames 41 … 59) no-face, not two tracks."""
    detections = sparse_detections(zooming_face, ZOOM_FRAMES, missed=range(42, 58))
    tracks = tracking.track_all_faces(detections, ZOOM_FRAMES)
    assert len(tracks) == 1
    assert runs(tracks[0].has_face) == [(0, 41), (60, ZOOM_FRAMES)]
    assert np.abs(tracks[0].boxes[90] - zooming_face(90)).max() < 3


def test_a_face_doubling_in_two_seconds_detected_every_frame_is_one_track():
    detections = [[(*zooming_face(t), 1.0)] for t in range(ZOOM_FRAMES)]
    tracks = tracking.track_all_faces(detections, ZOOM_FRAMES)
    assert len(tracks) == 1 and tracks[0].has_face.all()


def test_a_cut_to_a_closer_shot_starts_a_new_track_without_being_told():
    """The size doubles between two frames (frame 50): a cut, not a zoom."""

    def cut_closer(t: int) -> np.ndarray:
        return face(0, side=60.0) if t < 50 else face(0, x=85.0, y=45.0, side=120.0)

    detections = [[(*cut_closer(t), 1.0)] for t in range(ZOOM_FRAMES)]
    tracks = tracking.track_all_faces(detections, ZOOM_FRAMES)
    assert sorted(runs(t.has_face)[0] for t in tracks) == [(0, 50), (50, ZOOM_FRAMES)]


def test_a_shot_cut_ends_a_track_even_when_the_face_stays_in_place():
    """Two shots of the same framing (a cut between two takes at frame 50, not examined):
    with the cut one track per shot, neither reaching into the other; without, one."""
    detections = sparse_detections(lambda t: face(0), ZOOM_FRAMES)
    assert len(tracking.track_all_faces(detections, ZOOM_FRAMES)) == 1
    tracks = tracking.track_all_faces(detections, ZOOM_FRAMES, cuts=[50])
    assert sorted(runs(t.has_face) for t in tracks) == [[(0, 50)], [(50, ZOOM_FRAMES)]]


def test_tracks_of_different_shots_are_never_joined():
    """The face leaves (frames 30 … 69) and the same box comes back: joined within a shot,
    two tracks when a cut (frame 50) lies in the gap."""
    detections = [[(*face(0), 1.0)] if not 30 <= t < 70 else [] for t in range(ZOOM_FRAMES)]
    (one,) = tracking.track_all_faces(detections, ZOOM_FRAMES)
    assert runs(one.has_face) == [(0, 30), (70, ZOOM_FRAMES)]
    tracks = tracking.track_all_faces(detections, ZOOM_FRAMES, cuts=[50])
    assert sorted(runs(t.has_face) for t in tracks) == [[(0, 30)], [(70, ZOOM_FRAMES)]]


def test_overlapping_faces_whose_centres_lie_outside_each_other_are_two_tracks():
    """Face B's top-left corner lies inside face A's box, its centre does not: two faces.
    A: x 100…190, y 60…150 (centre 145, 105); B: x 160…240, y 110…190 (centre 200, 150)."""

    def face_b(t: int) -> np.ndarray:
        return face(t, x=160.0, y=110.0, side=80.0)

    detections = [[(*face(t), 0.9), (*face_b(t), 0.9)] for t in range(N)]
    tracks = tracking.track_all_faces(detections, N)
    assert len(tracks) == 2  # the larger, A, first
    assert_boxes(tracks[0], face)
    assert_boxes(tracks[1], face_b)


# --- a clip whose speaker is the second face track -----------------------------------------

SECONDS = 3.0
FRAMES = 75
SPEAKER_UNTIL = 55  # the speaker's face leaves after frame 54: 20 frames > the 12-frame gap
SPEAKER_OFFSET = 3  # its audio leads by 3 frames
MAIN_BOX = (0.0, 0.0, 128.0, 128.0)  # a larger face, present throughout, mouthing another voice
SPEAKER_BOX = (160.0, 0.0, 256.0, 96.0)
RECIPE = MouthRecipe(crop_hw=(32, 64), margin=0.0)  # the box is exactly the drawn face
TAU = 0.1


class ScriptedTwoFaces:
    """The main face in every frame; the speaker's face in frames 0 … SPEAKER_UNTIL - 1."""

    name = "scripted"

    def __init__(self):
        self.seen = 0

    def detect(self, frames: np.ndarray) -> list:
        found = []
        for t in range(self.seen, self.seen + len(frames)):
            boxes = [(*MAIN_BOX, 1.0)]
            if t < SPEAKER_UNTIL:
                boxes.append((*SPEAKER_BOX, 1.0))
            found.append(boxes)
        self.seen += len(frames)
        return found


class MouthEnergy(torch.nn.Module):
    """Visual: darkness of the mouth crop in each of the 5 frames; audio: loudness of the 5
    frames' mel columns; both centred and unit length (cosine = their correlation)."""

    def embed_visual(self, windows: torch.Tensor) -> torch.Tensor:
        frames = windows.reshape(len(windows), 5, 3, *windows.shape[2:])
        darkness = 1 - frames.mean(dim=(2, 3, 4))
        return torch.nn.functional.normalize(darkness - darkness.mean(1, keepdim=True), dim=1)

    def embed_audio(self, mels: torch.Tensor) -> torch.Tensor:
        centre = mels[:, 0, :, audio.CONTEXT_MELS : audio.CONTEXT_MELS + audio.WINDOW_MELS]
        edges = [int(i * 3.2) for i in range(6)]
        spans = zip(edges[:-1], edges[1:], strict=True)
        loudness = torch.stack([centre[..., a:b].mean(dim=(1, 2)) for a, b in spans], 1)
        return torch.nn.functional.normalize(loudness - loudness.mean(1, keepdim=True), dim=1)


class MouthEnergyModel(NetworkModel):
    kind = "stand-in"

    def __init__(self):
        trained_on = {"data": "unknown", "description": "no weights"}
        super().__init__(MouthEnergy(), "stand-in@00000000", RECIPE, trained_on)

    def embed_visual(self, windows):
        return self.network.embed_visual(windows)

    def embed_audio(self, windows):
        return self.network.embed_audio(windows)

    def metrics(self, similarity, valid, offset_method="mean"):
        found = clip_metrics(similarity, TAU, valid=valid, offset_method=offset_method)
        return metrics_columns(found)


class ScriptedExecutor:
    """Prepares each clip in this process with the scripted detector."""

    name = "scripted"

    def run(self, step, refs):
        for ref in refs:
            yield prepare_clip(ref, step.recipe, ScriptedTwoFaces(), step.detect_every)


class Rows:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, row: dict) -> None:
        self.rows.append(row)


@pytest.fixture(scope="module")
def two_faces_row(tmp_path_factory) -> dict:
    """Left: a 128 px face mouthing another voice, all along. Right: a 96 px face whose mouth
    follows the audio (which leads by 3 frames), gone (grey) after frame 54."""
    folder = tmp_path_factory.mktemp("two_faces")
    speaker, sound, _ = synth.synth_arrays(seconds=SECONDS, seed=31, offset_frames=SPEAKER_OFFSET)
    other, _, _ = synth.synth_arrays(seconds=SECONDS, seed=77, size=128)
    video = np.zeros((FRAMES, 128, 256, 3), dtype=np.uint8)
    video[:, :, :128] = other
    video[:, :96, 160:] = speaker
    video[SPEAKER_UNTIL:, :96, 160:] = 128
    media.write_clip(folder / "two.mp4", video, sound)
    writer = Rows()
    driver.score_clips(
        [ClipRef(str(folder), "two.mp4")],
        writer,
        MouthEnergyModel(),
        device=torch.device("cpu"),
        executor=ScriptedExecutor(),
        max_offset=8,
    )
    (row,) = writer.rows
    assert row["status"] == "ok", row["error"]
    return row


def test_the_speaker_is_the_second_track_and_the_row_describes_it(two_faces_row):
    row = two_faces_row
    assert row["n_faces"] == 2 and row["face_track"] == 1
    assert row["offset_frames"] == SPEAKER_OFFSET
    assert row["face_ratio"] == pytest.approx(SPEAKER_UNTIL / FRAMES)  # the speaker's, not 1.0


def test_face_tracks_summarises_each_track_with_its_own_face_ratio(two_faces_row):
    summary = json.loads(two_faces_row["face_tracks"])
    assert [entry["track"] for entry in summary] == [0, 1]
    assert [entry["face_ratio"] for entry in summary] == [1.0, round(SPEAKER_UNTIL / FRAMES, 4)]
    assert summary[1]["offset_frames"] == SPEAKER_OFFSET
    assert summary[1]["strength"] > summary[0]["strength"]
    assert summary[1]["strength"] == pytest.approx(two_faces_row["prob_at_offset"], abs=1e-4)


def test_the_speakers_windows_without_its_face_are_off_screen(two_faces_row):
    """Windows 51 … 70 include a frame without the speaker's face (frames 55 …): p_t 0,
    off-screen, and counted in offscreen_ratio, although the main face is there."""
    row = two_faces_row
    p_t, onscreen = np.asarray(row["p_t"]), np.asarray(row["onscreen"])
    assert len(p_t) == FRAMES - 4
    faceless = slice(SPEAKER_UNTIL - 4, None)
    assert (p_t[faceless] == 0).all() and not onscreen[faceless].any()
    assert onscreen[: SPEAKER_UNTIL - 4].all()  # the speaker is in sync while it is there
    assert row["offscreen_ratio"] == pytest.approx(20 / 71)


def test_face_tracks_is_empty_for_one_face(tmp_path: Path):
    """One face: no face_tracks summary, face_track 0, face_ratio of that face."""
    frames, sound, _ = synth.synth_arrays(seconds=1.2, seed=3)
    media.write_clip(tmp_path / "one.mp4", frames, sound)
    writer = Rows()
    driver.score_clips(
        [ClipRef(str(tmp_path), "one.mp4")],
        writer,
        MouthEnergyModel(),
        device=torch.device("cpu"),
        detector_name="none",
        max_offset=3,
    )
    (row,) = writer.rows
    assert (row["n_faces"], row["face_track"], row["face_tracks"]) == (1, 0, None)
    assert row["face_ratio"] == 1.0
