"""What curators filter on besides sync: face_px, track_jitter, frozen_ratio, yaw_deg and
speech_ratio against known answers, and `filter`'s rules on them.

Clips are synthetic (`synccurate.training.synth`: stutter and voiced truth) or hand-built
with a scripted detector, so every expected value follows from how the clip was made.
Tolerances are those measured by benchmarks/curation_columns.py (docs/reading-scores.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from real_fixtures import MISSING, REAL
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.curate import filtering, report
from synccurate.faces import extract, quality
from synccurate.faces.detectors import WholeFrameDetector, make_detector
from synccurate.io import audio, media
from synccurate.io.inputs import ClipRef
from synccurate.models.icsyncnet import MouthRecipe
from synccurate.pipeline import driver
from synccurate.pipeline.prepare import prepare_clip
from synccurate.store.schema import COLUMNS, rows_to_frame
from synccurate.training import synth

RECIPE = MouthRecipe(crop_hw=(32, 64))
# |column - truth| on synthetic clips, from benchmarks/curation_columns.py: frozen_ratio
# through the pre-cropped path, mean 0.016, largest 0.087 (a silence-heavy clip whose still
# face looks frozen); speech_ratio, largest 0.047.
FROZEN_TOLERANCE = 0.05
FROZEN_LARGEST = 0.09
SPEECH_TOLERANCE = 0.05


def prepared(path: Path, detector=None, detect_every: int = 1):
    clip = prepare_clip(
        ClipRef(str(path.parent), path.name), RECIPE, detector or WholeFrameDetector(), detect_every
    )
    assert clip.status == "ok", clip.error
    return clip


# --- pre-cropped synthetic clips (`--face-detector none`) ---------------------------------


@pytest.fixture(scope="module")
def stutter_clip(tmp_path_factory):
    """A synth clip with stutter (ordinary speech), scored without a detector."""
    path = tmp_path_factory.mktemp("stutter") / "stutter.mp4"
    record = synth.synth_clip(path, seconds=6.0, seed=104, stutter=True, size=96)
    _, _, truth = synth.synth_arrays(seconds=6.0, seed=104, stutter=True, size=96)
    return prepared(path), record, truth


def test_without_a_detector_the_face_is_the_frame_and_stands_still(stutter_clip):
    clip, record, _ = stutter_clip
    row = driver._row(clip, "m")
    assert row["face_px"] == record["size"] == 96  # the whole frame's height
    assert row["track_jitter"] == 0.0
    assert row["yaw_deg"] is None  # no landmarks without a detector


def test_a_stutter_clips_frozen_ratio_is_its_share_of_repeated_frames(stutter_clip, tmp_path):
    clip, record, _ = stutter_clip
    truth = float(np.mean(record["stutter_frames"]))
    assert truth > 0.08
    assert driver._row(clip, "m")["frozen_ratio"] == pytest.approx(truth, abs=FROZEN_TOLERANCE)
    # the same performance without the holds
    synth.synth_clip(tmp_path / "twin.mp4", seconds=6.0, seed=104, size=96)
    assert driver._row(prepared(tmp_path / "twin.mp4"), "m")["frozen_ratio"] <= 0.02


def test_speech_ratio_is_the_voiced_share_of_the_decoded_audio(stutter_clip):
    clip, _, truth = stutter_clip
    row = driver._row(clip, "m")
    voiced = truth["voiced_frames"].mean()
    assert row["speech_ratio"] == pytest.approx(voiced, abs=SPEECH_TOLERANCE)
    assert row["speech_ratio"] < 1 - row["silence_ratio"]  # loud fricatives are not voiced


@pytest.fixture(scope="module")
def quiet_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("quiet") / "quiet.mp4"
    synth.synth_clip(path, seconds=6.0, seed=105, silence_heavy=True, size=64)
    _, _, truth = synth.synth_arrays(seconds=6.0, seed=105, silence_heavy=True, size=64)
    return prepared(path), truth


def test_a_silence_heavy_clip_has_little_speech_and_no_frozen_frames(quiet_clip, stutter_clip):
    clip, truth = quiet_clip
    row = driver._row(clip, "m")
    assert row["speech_ratio"] == pytest.approx(truth["voiced_frames"].mean(), abs=0.03)
    assert row["speech_ratio"] < 0.3 < 0.4 < driver._row(stutter_clip[0], "m")["speech_ratio"]
    assert row["frozen_ratio"] <= FROZEN_LARGEST  # no stutter, but a face silent and still


def test_loud_noise_is_not_speech_and_a_steady_voice_is():
    rng = np.random.default_rng(0)
    n = 100
    noise = rng.normal(0, 0.1, n * audio.SAMPLES_PER_FRAME)  # -20 dBFS: not silent
    assert not audio.frame_silence(noise, n).any()
    assert not audio.frame_voicing(noise, n).any()
    t = np.arange(n * audio.SAMPLES_PER_FRAME) / audio.SAMPLE_RATE
    for pitch in (65.0, 120.0, 380.0):  # a buzz from a low voice to a child's
        pulses = 0.1 * np.sign(np.sin(2 * np.pi * pitch * t))
        assert audio.frame_voicing(pulses, n).all(), pitch
        assert not audio.frame_voicing(pulses * 1e-3, n).any()  # -60 dBFS: silent


@pytest.fixture(scope="module")
def low_rate_clip(tmp_path_factory):
    """A clip written at 12.5 fps: read at 25 fps, every second frame repeats exactly."""
    frames, sound, _ = synth.synth_arrays(seconds=4.0, seed=7, size=64)
    path = tmp_path_factory.mktemp("low") / "low.mp4"
    media.write_clip(path, frames[::2], sound, fps=12.5)
    return path


def test_frames_a_decoder_repeats_are_frozen_exactly(low_rate_clip):
    clip = prepared(low_rate_clip)
    changes = clip.tracks[0].changes
    repeated = changes[1:] == 0  # exactly: the decoder outputs the same frame twice
    assert (repeated[::2].all() and not repeated[1::2].any()) or (
        repeated[1::2].all() and not repeated[::2].any()
    )
    assert (changes[1:][~repeated] > quality.FROZEN_TOLERANCE).all()
    assert driver._row(clip, "m")["frozen_ratio"] == pytest.approx(0.5, abs=1 / clip.n_frames)


# --- a detector: boxes in source pixels, motion, two faces --------------------------------

HEIGHT, WIDTH = 360, 640  # detection runs at 320 x 180: half the source size
FRAMES = 40


class TwoFaces:
    """Scripted faces, in the pixels of the frames it is shown (the small detection frames):
    A (40 x 60, moving right 2 px a frame) and B (30 x 45, still, with landmarks)."""

    name = "scripted"

    def __init__(self):
        self.seen, self.shapes = 0, set()

    def detect(self, frames: np.ndarray) -> list:
        self.shapes.add(frames.shape[1:3])
        found = []
        for t in range(self.seen, self.seen + len(frames)):
            a = (20.0 + 2 * t, 40.0, 60.0 + 2 * t, 100.0, 0.9)
            b = (220.0, 60.0, 250.0, 105.0, 0.9, *landmarks(YAW, (235.0, 85.0), 8.0).ravel())
            found.append([a, b])
        self.seen += len(frames)
        return found


YAW = 30.0


def landmarks(yaw: float, centre=(0.0, 0.0), scale: float = 1.0, roll: float = 0.0):
    """The five points of the face model YAW_NOSE_DEPTH encodes (ArcFace's template with the
    nose tip 0.6 x the eye-mouth distance in front of the eye-mouth plane), turned by `yaw`,
    rolled, scaled, moved."""
    eyes, mouth = quality.TEMPLATE_HALF_WIDTHS
    drop, nose = quality.TEMPLATE_EYE_MOUTH, quality.GEE_CIPOLLA_NOSE * quality.TEMPLATE_EYE_MOUTH
    points = np.array(
        [[-eyes, 0, 0], [eyes, 0, 0], [0, drop / 2, nose], [-mouth, drop, 0], [mouth, drop, 0]]
    )
    points[:, 1] -= 20.0
    a = math.radians(yaw)
    x = points[:, 0] * math.cos(a) + points[:, 2] * math.sin(a)
    r = math.radians(roll)
    rolled = np.stack(
        [
            x * math.cos(r) - points[:, 1] * math.sin(r),
            x * math.sin(r) + points[:, 1] * math.cos(r),
        ],
        axis=1,
    )
    return rolled * scale / 10 + np.asarray(centre)


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory):
    path = tmp_path_factory.mktemp("two") / "two.mp4"
    video = np.random.default_rng(0).integers(0, 255, (FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)
    media.write_clip(path, video, np.zeros(FRAMES * audio.SAMPLES_PER_FRAME, np.float32))
    detector = TwoFaces()
    clip = prepared(path, detector)
    return clip, detector


def test_face_px_and_jitter_are_in_source_pixels(two_faces):
    clip, detector = two_faces
    assert detector.shapes == {(180, 320)}  # the detector saw half-size frames
    moving, still = (quality.track_columns(track) for track in clip.tracks)
    assert moving["face_px"] == pytest.approx(120.0)  # 60 px high in the small frame
    assert still["face_px"] == pytest.approx(90.0)
    assert moving["track_jitter"] == pytest.approx(4 / 120)  # 4 source px a frame
    assert still["track_jitter"] == pytest.approx(0.0, abs=1e-9)
    assert moving["yaw_deg"] is None  # a box without landmarks
    assert still["yaw_deg"] == pytest.approx(YAW, abs=1e-6)


def test_random_frames_are_never_frozen(two_faces):
    clip, _ = two_faces
    assert [quality.track_columns(track)["frozen_ratio"] for track in clip.tracks] == [0.0, 0.0]


def test_the_row_describes_the_speaker_and_face_tracks_every_track(two_faces):
    clip, _ = two_faces
    found = [
        (0, {"prob_at_offset": 0.2, "offset_frames": 0}),
        (1, {"prob_at_offset": 0.9, "offset_frames": 2}),
    ]
    columns = driver._speaker(clip, found)
    assert columns["face_track"] == 1
    assert columns["face_px"] == pytest.approx(90.0) and columns["yaw_deg"] == pytest.approx(YAW)
    assert columns["track_jitter"] == pytest.approx(0.0, abs=1e-9)
    summary = json.loads(columns["face_tracks"])
    assert [entry["face_px"] for entry in summary] == [120.0, 90.0]
    assert [entry["track_jitter"] for entry in summary] == [round(4 / 120, 4), 0.0]
    assert [entry["yaw_deg"] for entry in summary] == [None, YAW]
    assert [entry["frozen_ratio"] for entry in summary] == [0.0, 0.0]


@pytest.mark.parametrize("yaw", [-60.0, -25.0, 0.0, 10.0, 45.0])
@pytest.mark.parametrize("roll", [0.0, 15.0])
def test_yaw_from_five_landmarks_of_the_face_model(yaw, roll):
    points = landmarks(yaw, centre=(300.0, 200.0), scale=4.0, roll=roll)
    assert quality.yaw_from_landmarks(points) == pytest.approx(yaw, abs=1e-6)
    assert math.isnan(quality.yaw_from_landmarks(np.zeros((5, 2))))


# --- the table, filter, report -------------------------------------------------------------

NEW = ("face_px", "track_jitter", "frozen_ratio", "yaw_deg", "speech_ratio")


def test_the_columns_are_in_the_scores_schema():
    assert all(COLUMNS[name] == "float64" for name in NEW)
    frame = rows_to_frame([{"root": "/r", "path": "a.mp4", "status": "ok", "yaw_deg": None}])
    assert frame["face_px"].dtype == "float64" and frame["yaw_deg"].isna().all()


LIMITS = {"min_face_px": 100.0, "max_abs_yaw": 30.0, "max_jitter": 0.02}
LIMITS |= {"min_speech_ratio": 0.3, "max_frozen_ratio": 0.1}
# name: (face_px, track_jitter, frozen_ratio, yaw_deg, speech_ratio, expected reasons)
CASES = {
    "boundary.mp4": (100.0, 0.02, 0.1, -30.0, 0.3, []),  # at every limit: kept
    "unknown.mp4": (None, None, None, None, None, []),  # not measured: passes
    "small.mp4": (99.0, 0.0, 0.0, 0.0, 0.9, ["small_face"]),
    "turned.mp4": (200.0, 0.0, 0.0, 31.0, 0.9, ["yaw"]),
    "turned_left.mp4": (200.0, 0.0, 0.0, -31.0, 0.9, ["yaw"]),
    "shaky.mp4": (200.0, 0.021, 0.0, 0.0, 0.9, ["jitter"]),
    "quiet.mp4": (200.0, 0.0, 0.0, 0.0, 0.29, ["little_speech"]),
    "frozen.mp4": (200.0, 0.0, 0.11, 0.0, 0.9, ["frozen"]),
    "all.mp4": (
        10.0,
        0.5,
        0.5,
        80.0,
        0.0,
        ["small_face", "yaw", "jitter", "little_speech", "frozen"],
    ),
}


def curation_table() -> pd.DataFrame:
    rows = [
        {
            "root": "/data",
            "path": name,
            "status": "ok",
            "offset_frames": 0,
            "prob_at_offset": 0.9,
            "offscreen_ratio": 0.0,
            **dict(zip(NEW, values[:5], strict=True)),
        }
        for name, values in CASES.items()
    ]
    return rows_to_frame(rows)


def test_each_rule_rejects_with_its_reason():
    table = curation_table()
    reasons = filtering.reject_reasons(table, filtering.FilterRules(**LIMITS))
    assert dict(zip(table["path"], reasons, strict=True)) == {n: c[5] for n, c in CASES.items()}
    assert not any(filtering.reject_reasons(table, filtering.FilterRules()))  # off by default
    with pytest.raises(ValueError, match="max_frozen_ratio"):
        filtering.FilterRules(max_frozen_ratio=1.5)


def test_filter_command_takes_the_options(tmp_path: Path):
    scores = tmp_path / "scores.parquet"
    curation_table().to_parquet(scores, index=False)
    options = [f"--{name.replace('_', '-')}={value:g}" for name, value in LIMITS.items()]
    rejected = tmp_path / "rejected.parquet"
    result = CliRunner().invoke(
        app,
        ["filter", str(scores), "-o", str(tmp_path / "kept.parquet"), "--rejected", str(rejected)]
        + options,
    )
    assert result.exit_code == 0, result.output
    assert "face ≥ 100 px" in result.output and "frozen ≤ 0.1" in result.output
    kept = pd.read_parquet(tmp_path / "kept.parquet")
    assert sorted(kept["path"]) == ["boundary.mp4", "unknown.mp4"]
    found = pd.read_parquet(rejected).set_index("path")["reject_reason"].to_dict()
    assert found == {n: ",".join(c[5]) for n, c in CASES.items() if c[5]}


def test_report_shows_the_histograms_of_the_columns_a_table_has(tmp_path: Path):
    table = curation_table()
    table.to_parquet(tmp_path / "scores.parquet", index=False)
    summary = report.write_report(
        tmp_path / "scores.parquet", tmp_path / "report.html", worst=2, with_thumbnails=False
    )
    hists = summary["histograms"]
    for name in NEW:
        values = pd.to_numeric(table[name]).dropna().to_numpy(dtype=float)
        assert hists[name]["n"] == len(values) == len(CASES) - 1, name
        assert sum(hists[name]["counts"]) == len(values)
    assert hists["yaw_deg"]["edges"][0] == -90 and hists["yaw_deg"]["edges"][-1] == 90
    assert hists["face_px"]["edges"][-1] == 200.0  # a round number at the 99th percentile
    assert hists["speech_ratio"]["counts"][18] == 5  # the five 0.9 in [0.90, 0.95)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert all(f'data-metric="{name}"' in page for name in NEW)
    older, _ = report.histograms(table.drop(columns=list(NEW)))
    assert not set(NEW) & set(older)


@pytest.mark.skipif(not REAL.is_dir(), reason=MISSING)
def test_centerface_landmarks_give_the_yaw_of_real_faces():
    """CenterFace's landmarks through the whole pass 1: the frontal GRID speaker faces the
    camera, the VoxCeleb2 news clip shows a head turned towards the image's left (~30°)."""
    detector = make_detector("centerface")
    yaws = {}
    for name in ("grid_bbaf2n.mpg", "vox_00015.mp4"):
        info = media.probe(REAL / name)
        detections = extract._detect_all(info, detector, 320, 10, 64)
        found = [face[5] for faces in detections if faces for face in faces]
        assert found and all(len(faces[0]) == 6 for faces in detections if faces)
        yaws[name] = float(np.median(found))
    assert abs(yaws["grid_bbaf2n.mpg"]) < 10
    assert -40 < yaws["vox_00015.mp4"] < -20


def test_the_ratios_and_the_jitter_count_only_frames_with_the_face():
    """Frames 0-3 show the face (1 and 2 repeat their previous frame), 4-5 do not; the face
    comes back 40 px further right in 6-7: a gap is no motion."""
    has_face = np.array([True, True, True, True, False, False, True, True])
    changes = np.array([np.nan, 0.0, 0.01, 3.0, np.nan, np.nan, np.nan, 2.0])
    assert quality.frozen_ratio(changes, has_face) == 2 / 6
    boxes = np.array(
        [[10.0 + 2 * t + 40 * (t >= 6), 0.0, 30.0 + 2 * t + 40 * (t >= 6), 50.0] for t in range(8)]
    )
    boxes[~has_face] = np.nan
    assert quality.track_jitter(boxes, has_face) == pytest.approx(2 / 50)
    assert quality.face_px(boxes, has_face) == 50.0
    assert quality.face_px(boxes, np.zeros(8, dtype=bool)) is None
    assert quality.yaw_deg(np.full(8, np.nan), has_face) is None
