"""The offset over time: stretches, drift and steps, the timeline folder, and the filter rules.

The clip columns are checked on hand-built stretch offsets (exact answers) and end to end on
synthetic clips whose audio drifts or steps by a known amount (`synth --drift`,
`--offset-step`), scored with the bundled weights.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.curate.filtering import FilterRules, reject_reasons
from synccurate.pipeline.timeline import offset_over_time, stretch_bounds
from synccurate.store.readers import read_scores, read_timeline
from synccurate.training import synth

SEGMENT = 10.0  # s


def timeline(offsets, prob=0.9, segment=SEGMENT) -> list[dict]:
    """Stretches of `segment` seconds with these offsets (None: no face in that stretch)."""
    return [
        {
            "start_s": i * segment,
            "end_s": (i + 1) * segment,
            "offset_frames": o,
            "prob_at_offset": prob,
        }
        for i, o in enumerate(offsets)
    ]


def test_a_steady_drift_is_its_slope_in_ms_per_minute():
    # one frame (40 ms) more every 30 s: 80 ms a minute, starting at -2 frames (-80 ms)
    offsets = [int(np.floor(-2 + (i * SEGMENT + 5) / 30)) for i in range(18)]
    found = offset_over_time(timeline(offsets))
    assert found["drift_ms_per_min"] == pytest.approx(80, rel=0.1)
    assert found["offset_start_ms"] == pytest.approx(-80, abs=25)
    assert found["drift_residual_ms"] <= 20
    assert (found["offset_min"], found["offset_max"]) == (-2, 3)
    assert found["offset_steps"] == 0


def test_a_negative_drift_has_a_negative_sign_and_one_odd_stretch_moves_nothing():
    offsets = [int(round(4 - (i * SEGMENT) / 60)) for i in range(24)]  # -40 ms a minute
    offsets[7] += 5  # one stretch far off: neither a step nor a change of slope
    found = offset_over_time(timeline(offsets))
    assert found["drift_ms_per_min"] == pytest.approx(-40, rel=0.15)
    assert found["offset_steps"] == 0
    assert found["offset_max"] == max(offsets)


def test_a_step_is_counted_where_it_happens_and_is_no_drift():
    offsets = [0] * 12 + [6] * 12  # an edit at 120 s
    found = offset_over_time(timeline(offsets))
    assert found["offset_steps"] == 1
    assert list(found["offset_step_at_s"]) == [120.0]
    assert found["drift_ms_per_min"] == pytest.approx(0.0)
    assert (found["offset_min"], found["offset_max"]) == (0, 6)


def test_a_jump_of_two_frames_is_a_step_and_one_frame_is_not():
    two = offset_over_time(timeline([1] * 6 + [3] * 6))
    assert two["offset_steps"] == 1 and list(two["offset_step_at_s"]) == [60.0]
    assert offset_over_time(timeline([1] * 6 + [2] * 6))["offset_steps"] == 0


def test_only_confident_stretches_count():
    stretches = timeline([0, 0, 0, 9, 0, 0])
    stretches[3]["prob_at_offset"] = 0.2  # a stretch where nobody on screen speaks
    found = offset_over_time(stretches)
    assert found["offset_max"] == 0 and found["offset_steps"] == 0
    assert offset_over_time(timeline([3, 3], prob=0.1))["offset_min"] is None
    short = offset_over_time(timeline([3, 4]))  # two stretches: a range, no line
    assert (short["offset_min"], short["offset_max"], short["drift_ms_per_min"]) == (3, 4, None)


def test_distance_models_are_confident_by_lse_c():
    stretches = [
        {"start_s": i * 10.0, "end_s": i * 10.0 + 10, "offset_frames": o, "lse_c": c}
        for i, (o, c) in enumerate([(1, 6.0), (1, 5.0), (7, 1.0), (2, 6.0)])
    ]
    found = offset_over_time(stretches)
    assert (found["offset_min"], found["offset_max"]) == (1, 2)


def test_stretch_bounds_cover_every_window_once_and_join_a_short_tail():
    assert stretch_bounds(640, 10.0) == [(0, 250), (250, 500), (500, 640)]
    assert stretch_bounds(620, 10.0) == [(0, 250), (250, 620)]  # a 120-window tail joins
    assert stretch_bounds(760, 10.0) == [(0, 250), (250, 500), (500, 760)]  # 10-frame tail
    assert stretch_bounds(100, 10.0) == [(0, 100)]


def test_filter_drops_drifting_and_spread_clips_with_their_reasons():
    table = pd.DataFrame(
        {
            "root": "/r",
            "path": ["steady.mp4", "drifts.mp4", "steps.mp4", "short.mp4"],
            "status": "ok",
            "offset_frames": [0, 2, 3, 0],
            "prob_at_offset": 0.9,
            "offscreen_ratio": 0.0,
            "drift_ms_per_min": [5.0, -45.0, 0.0, None],
            "offset_min": [0, 0, 0, None],
            "offset_max": [1, 4, 6, None],
        }
    )
    rules = FilterRules(max_drift_ms_per_min=40, max_offset_spread=3)
    reasons = dict(zip(table["path"], reject_reasons(table, rules), strict=True))
    assert reasons == {
        "steady.mp4": [],
        "drifts.mp4": ["drift", "offset_spread"],
        "steps.mp4": ["offset_spread"],
        "short.mp4": [],  # too short to measure: nothing says it drifts
    }
    assert reject_reasons(table, FilterRules(max_drift_ms_per_min=45))[1] == []  # |d| ≤ 45


@pytest.fixture(scope="module")
def drifting(tmp_path_factory):
    """A 60 s clip drifting by +200 ms a minute and one stepping from 0 to +5 at 30 s."""
    folder = tmp_path_factory.mktemp("drifting")
    truth = {
        "drift.mp4": synth.synth_clip(
            folder / "drift.mp4", seconds=60.0, seed=11, offset_frames=-2, drift_ms_per_min=200.0
        ),
        "step.mp4": synth.synth_clip(
            folder / "step.mp4", seconds=60.0, seed=12, offset_step=(30.0, 5)
        ),
    }
    return folder, truth


def score(folder, out, timeline_dir, *extra) -> None:
    args = ["score", str(folder), "-o", str(out), "--timeline", str(timeline_dir)]
    args += ["--face-detector", "none", "--workers", "0", "--no-progress", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


def test_score_measures_drift_and_steps_of_synthetic_clips(drifting, tmp_path):
    folder, truth = drifting
    out, timeline_dir = tmp_path / "scores", tmp_path / "timeline"
    score(folder, out, timeline_dir)
    rows = read_scores(out).set_index("path")
    drift = rows.loc["drift.mp4"]
    assert drift["drift_ms_per_min"] == pytest.approx(200.0, rel=0.15)
    assert drift["offset_steps"] == 0
    step = rows.loc["step.mp4"]
    assert step["offset_steps"] == 1
    assert abs(step["offset_step_at_s"][0] - 30.0) <= SEGMENT
    assert (step["offset_min"], step["offset_max"]) == (0, 5)

    stretches = read_timeline(timeline_dir)
    assert list(stretches.groupby("path").size()) == [6, 6]  # 60 s in stretches of 10 s
    for clip in ("drift.mp4", "step.mp4"):
        mine = stretches[stretches["path"] == clip]
        middle = ((mine["start_s"] + mine["end_s"]) / 2 * 25).astype(int)
        expected = _true_offsets(clip, middle.to_numpy())
        assert np.abs(mine["offset_frames"].to_numpy() - expected).max() <= 1, (clip, expected)


def _true_offsets(clip: str, frames: np.ndarray) -> np.ndarray:
    """The synthetic truth at these frames (what the fixture asked synth for)."""
    seconds = frames / 25
    if clip == "drift.mp4":
        return -2 + 200.0 * seconds / 60 / 40
    return np.where(seconds >= 30.0, 5, 0)


def test_the_timeline_folder_resumes_and_pins_its_stretch_length(drifting, tmp_path):
    folder, _ = drifting
    out, timeline_dir = tmp_path / "scores", tmp_path / "timeline"
    score(folder, out, timeline_dir)
    before = read_timeline(timeline_dir)
    score(folder, out, timeline_dir)  # nothing left to do: no row is added
    pd.testing.assert_frame_equal(read_timeline(timeline_dir), before)
    result = CliRunner().invoke(
        app,
        [
            "score",
            str(folder),
            "-o",
            str(out),
            "--timeline",
            str(timeline_dir),
            "--segment-seconds",
            "5",
            "--face-detector",
            "none",
            "--workers",
            "0",
        ],
    )
    assert result.exit_code != 0 and "segment_seconds" in result.output
    refused = CliRunner().invoke(
        app,
        [
            "score",
            str(folder),
            "-o",
            str(tmp_path / "other"),
            "--timeline",
            str(out),
            "--face-detector",
            "none",
            "--workers",
            "0",
        ],
    )
    assert refused.exit_code != 0 and "synccurate-scores" in refused.output
