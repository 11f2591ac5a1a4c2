"""From raw videos to in-sync clips (docs/segments.md), end to end on one synthetic raw video.

The video is four shots joined by hard cuts, each built from `synth.synth_arrays` pieces so
that who speaks, when and at which offset is known by construction:

1. one speaker in sync;
2. two faces side by side taking turns: the left one's voice for 4 s, then the right one's
   (the other face's lips keep moving to a voice that is not heard);
3. a speaker whose face stays on screen with the mouth shut while a voice off screen talks
   for the last 3 s (synth's off-screen stretch);
4. one speaker whose audio leads by 4 frames.

`score --segments` must find one segment per turn (boundaries, offset, face, end reason),
and `cut` must turn each segment into a clip that scores in sync and lasts what the segment
says. Two things this video exercises: five face tracks over four shots (never more than
two faces at once, so all are scored), and an off-screen voice whose pauses a shut mouth
fits (they must not extend the segment before it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scoring_cli import score_table
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.curate.cut import CUT_LOG_NAME
from synccurate.io.audio import SAMPLES_PER_FRAME, VIDEO_FPS
from synccurate.io.media import SYNTH_TAG, SYNTH_TAG_KEY, write_clip
from synccurate.store.readers import read_segments
from synccurate.training.synth import synth_arrays

# --- the raw video -------------------------------------------------------------------------
HEIGHT = 96  # px: the frame is as high as a full-size synthetic face
FACE_SIZE = 96  # px: side of a full-size synthetic face
RIGHT_FACE_SIZE = 56  # px: the right face of shot 2 is smaller, so a segment's face_px says which
GAP = 32  # px between the two faces of shot 2
WIDTH = 2 * FACE_SIZE + GAP  # px
# Shot lengths in frames (25 fps): 5 s, 8 s (two 4 s turns), 6 s, 5 s; the cuts follow.
SHOT_FRAMES = (125, 200, 150, 125)
CUTS = tuple(int(c) for c in np.cumsum(SHOT_FRAMES)[:-1])  # 125, 325, 475
N_FRAMES = sum(SHOT_FRAMES)
TURN_FRAME = CUTS[0] + SHOT_FRAMES[1] // 2  # 225: the right face takes over
# A plain backdrop per shot, each far from the others in hue and level, so the content
# detector sees every cut.
BACKGROUNDS = ((40, 40, 40), (200, 200, 200), (90, 20, 120), (20, 120, 60))
OFFSCREEN_SEED = 405  # its 6 s off-screen stretch of half the clip is the second half
LEADING_OFFSET = 4  # frames, SPEC §6 sign: shot 4's audio leads

# --- what is allowed ------------------------------------------------------------------------
BOUNDARY_TOLERANCE = 3  # frames: windows span 5 frames and p_t is smoothed (σ = 2 frames)
OFFSET_TOLERANCE = 1  # frames
DURATION_TOLERANCE = 1  # frames: a cut clip may round its span to whole frames
# A segment's face is the small right one when its face_px is nearer RIGHT_FACE_SIZE than
# FACE_SIZE on a log scale (detector boxes are ~0.9 x the drawn face).
SMALL_FACE_BELOW_PX = math.sqrt(FACE_SIZE * RIGHT_FACE_SIZE)


@dataclass(frozen=True)
class Turn:
    """One stretch where one visible face speaks in sync: the segment it must become."""

    name: str
    shot: int
    start_frame: int
    end_frame: int  # one past the last frame
    offset: int
    end_reason: str
    right_face: bool = False


TRUTH = (
    Turn("one speaker", 0, 0, CUTS[0], 0, "shot_cut"),
    Turn("left's turn", 1, CUTS[0], TURN_FRAME, 0, "other_speaker"),
    Turn("right's turn", 1, TURN_FRAME, CUTS[1], 0, "shot_cut", right_face=True),
    # the face is silent from the off-screen stretch on, and the voice goes on
    Turn("before the off-screen voice", 2, CUTS[1], CUTS[1] + 75, 0, "other_speaker"),
    # audio leading by 4 frames: the sound of the shot's first 4 frames was heard before
    # the cut, so the lips can follow the audio from frame cut + 4 on
    Turn("audio leads", 3, CUTS[2] + LEADING_OFFSET, N_FRAMES, LEADING_OFFSET, "clip_end"),
)


def centred(face: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """A face's frames in the middle of a WIDTH-wide frame on a plain backdrop."""
    frames = np.empty((len(face), HEIGHT, WIDTH, 3), np.uint8)
    frames[:] = background
    left = (WIDTH - face.shape[2]) // 2
    frames[:, :, left : left + face.shape[2]] = face
    return frames


def side_by_side(left: np.ndarray, right: np.ndarray, background) -> np.ndarray:
    """The left face at the left edge, the (smaller) right face centred in the right half."""
    frames = np.empty((len(left), HEIGHT, WIDTH, 3), np.uint8)
    frames[:] = background
    frames[:, :, :FACE_SIZE] = left
    top = (HEIGHT - right.shape[1]) // 2
    x = FACE_SIZE + GAP + (FACE_SIZE - right.shape[2]) // 2
    frames[:, top : top + right.shape[1], x : x + right.shape[2]] = right
    return frames


def seconds(frames: int) -> float:
    return frames / VIDEO_FPS


def write_raw_video(path: Path) -> None:
    """The four shots, hard cuts between them, audio composed turn by turn."""
    one, one_sound, _ = synth_arrays(seconds=seconds(SHOT_FRAMES[0]), seed=101)
    left, left_sound, _ = synth_arrays(seconds=seconds(SHOT_FRAMES[1]), seed=202)
    right, right_sound, _ = synth_arrays(
        seconds=seconds(SHOT_FRAMES[1]), seed=303, size=RIGHT_FACE_SIZE
    )
    turn_sample = (TURN_FRAME - CUTS[0]) * SAMPLES_PER_FRAME
    turns_sound = np.concatenate([left_sound[:turn_sample], right_sound[turn_sample:]])
    silent, silent_sound, silent_truth = synth_arrays(
        seconds=seconds(SHOT_FRAMES[2]), seed=OFFSCREEN_SEED, offscreen_fraction=0.5
    )
    off_screen = (silent_truth["offscreen_start"], silent_truth["offscreen_end"])
    assert off_screen == (TRUTH[3].end_frame - CUTS[1], SHOT_FRAMES[2])  # the construction
    leading, leading_sound, _ = synth_arrays(
        seconds=seconds(SHOT_FRAMES[3]), seed=606, offset_frames=LEADING_OFFSET
    )
    frames = np.concatenate(
        [
            centred(one, BACKGROUNDS[0]),
            side_by_side(left, right, BACKGROUNDS[1]),
            centred(silent, BACKGROUNDS[2]),
            centred(leading, BACKGROUNDS[3]),
        ]
    )
    sound = np.concatenate([one_sound, turns_sound, silent_sound, leading_sound])
    assert len(frames) == N_FRAMES and len(sound) == N_FRAMES * SAMPLES_PER_FRAME
    path.parent.mkdir(parents=True, exist_ok=True)
    write_clip(path, frames, sound.astype(np.float32), metadata={SYNTH_TAG_KEY: SYNTH_TAG})


@dataclass(frozen=True)
class Scored:
    scores: pd.DataFrame  # by path
    segments: pd.DataFrame
    segments_dir: Path
    work: Path


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> Scored:
    """`score RAW -o scores --segments segs --face-detector opencv --detect-every 1`."""
    work = tmp_path_factory.mktemp("raw_to_clips")
    write_raw_video(work / "raw" / "talk.mp4")
    segments_dir = work / "segs"
    scores = score_table(
        work / "raw",
        work / "scores",
        "--segments",
        str(segments_dir),
        "--detect-every",
        "1",
        detector="opencv",
    )
    segments = read_segments(segments_dir).sort_values("start_s", ignore_index=True)
    return Scored(scores, segments, segments_dir, work)


def frame_of(time_s: float) -> float:
    return time_s * VIDEO_FPS


def segment_of(turn: Turn, segments: pd.DataFrame) -> pd.Series:
    """The one segment of the turn's shot that covers most of the turn (more than half)."""
    same_shot = segments[segments["shot"] == turn.shot]
    overlap = (
        np.minimum(same_shot["end_s"].map(frame_of), turn.end_frame)
        - np.maximum(same_shot["start_s"].map(frame_of), turn.start_frame)
    ).clip(lower=0)
    covering = same_shot[overlap > (turn.end_frame - turn.start_frame) / 2]
    shown = same_shot[["segment", "face_track", "start_s", "end_s", "offset_frames", "end_reason"]]
    assert len(covering) == 1, f"{turn.name}: segments of shot {turn.shot}:\n{shown.to_string()}"
    return covering.iloc[0]


def test_the_content_detector_finds_the_three_hard_cuts(scored):
    row = scored.scores.loc["talk.mp4"]
    assert row.status == "ok", row.error
    assert row.n_frames == N_FRAMES
    assert row.n_shots == len(SHOT_FRAMES)
    assert set(scored.segments["shot"]) <= set(range(len(SHOT_FRAMES)))


@pytest.mark.parametrize("turn", TRUTH, ids=[turn.name for turn in TRUTH])
def test_each_turn_is_one_segment_with_its_offset_face_and_end(scored, turn):
    segment = segment_of(turn, scored.segments)
    found = (frame_of(segment.start_s), frame_of(segment.end_s))
    assert found[0] == pytest.approx(turn.start_frame, abs=BOUNDARY_TOLERANCE), turn.name
    assert found[1] == pytest.approx(turn.end_frame, abs=BOUNDARY_TOLERANCE), turn.name
    assert abs(segment.offset_frames - turn.offset) <= OFFSET_TOLERANCE
    assert (segment.face_px < SMALL_FACE_BELOW_PX) == turn.right_face, segment.face_px
    assert segment.end_reason == turn.end_reason


def test_the_segments_are_the_turns_and_nothing_else(scored):
    assert len(scored.segments) == len(TRUTH)
    matched = [segment_of(turn, scored.segments)["segment"] for turn in TRUTH]
    assert sorted(matched) == sorted(scored.segments["segment"])
    left, right = (segment_of(turn, scored.segments) for turn in TRUTH[1:3])
    assert left.face_track != right.face_track


def test_each_cut_clip_scores_in_sync_and_lasts_its_segment(scored):
    """`cut` shifts each segment's audio by its offset: every clip it writes is in sync."""
    clips = scored.work / "clips"
    result = CliRunner().invoke(app, ["cut", str(scored.segments_dir), "--out-dir", str(clips)])
    assert result.exit_code == 0, result.output
    log = pd.read_parquet(clips / CUT_LOG_NAME)
    assert (log["status"] == "cut").all(), log[["segment", "status", "error"]]
    assert len(log) == len(scored.segments)
    rescored = score_table(
        clips, scored.work / "rescored", "--detect-every", "1", detector="opencv"
    )
    spans = scored.segments.set_index("segment")
    for segment, output in zip(log["segment"], log["output"], strict=True):
        row = rescored.loc[Path(output).name]
        assert row.status == "ok", row.error
        assert abs(row.offset_frames) <= OFFSET_TOLERANCE, (segment, row.offset_frames)
        span = spans.loc[segment]
        expected_frames = frame_of(span.end_s - span.start_s)
        assert abs(row.n_frames - expected_frames) <= DURATION_TOLERANCE, (segment, row.n_frames)
