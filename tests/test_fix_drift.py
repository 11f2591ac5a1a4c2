"""`synccurate fix` for long recordings: a drifting offset is repaired by resampling the
audio along the offset line, a stepping offset is refused (issue "Long recordings", part 3).

Ground truth comes from `synth`: a clip whose offset (SPEC §6: + = the audio leads) grows
from -3 frames at the start to +3 frames after a minute (240 ms a minute). Its scores row
holds that true line, so the fix is judged against the truth, in two independent ways:

- the fixed audio is cross-correlated (PyAV + numpy, helpers of test_fix.py) with the same
  synthetic speech made without any offset: at the start, the middle and the end it must
  sit on it (the source is 3 frames off at both ends);
- the fixed clip is scored again (`score --timeline`): every stretch, the start, middle and
  end included, is within ±1 frame of 0, and the drift is gone.
"""

from __future__ import annotations

import hashlib
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from scoring_cli import score_table
from test_fix import best_lag, timeline_audio, video_hashes
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.curate.fix import (
    MIN_DRIFT_ACROSS_CLIP_MS,
    MIN_DRIFT_TO_RESIDUAL,
    STEP_STATUS,
    ShiftLine,
    drift_line,
    fix_clip,
    fix_table,
    resample_by_line,
)
from synccurate.io.files import write_table
from synccurate.store.readers import read_timeline
from synccurate.training import synth

RATE = 16_000
PER_FRAME = 640  # samples per video frame at 16 kHz (SPEC §1)
SEED = 3
SECONDS = 60.0
START_FRAMES = -3  # the true offset at the first frame: the audio lags by 120 ms …
DRIFT_MS_PER_MIN = 240.0  # … and leads by 120 ms (+3 frames) a minute later
START_MS = START_FRAMES * 40.0
WINDOW_S = 6.0  # audio compared around each of the three moments
MOMENTS_S = {"start": WINDOW_S / 2, "middle": SECONDS / 2, "end": SECONDS - WINDOW_S / 2}


def true_offset_ms(tau_s: float) -> float:
    return START_MS + DRIFT_MS_PER_MIN * tau_s / 60


def scores_row(name: str, **columns) -> dict:
    """An ok scores row as `score` writes it (the columns `fix` reads), no drift or step."""
    return {
        "path": name,
        "status": "ok",
        "offset_frames": 0,
        "prob_at_offset": 0.9,
        "offscreen_ratio": 0.0,
        "duration_s": 4.0,
        "n_frames": 100,
        "offset_min": 0,
        "offset_max": 0,
        "drift_ms_per_min": 0.0,
        "offset_start_ms": 0.0,
        "drift_residual_ms": 0.0,
        "offset_steps": 0,
        "offset_step_at_s": [],
        **columns,
    }


def scores_table(root, rows: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    table.insert(0, "root", str(root))
    for column in ("offset_frames", "n_frames", "offset_min", "offset_max", "offset_steps"):
        if column in table.columns:
            table[column] = table[column].astype("Int64")
    return table


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lags_at_moments(
    reference: np.ndarray, audio: np.ndarray, min_correlation: float
) -> dict[str, int]:
    """Lag (samples) of `audio` behind `reference` in a window around each moment."""
    found = {}
    for moment, tau in MOMENTS_S.items():
        window = slice(int((tau - WINDOW_S / 2) * RATE), int((tau + WINDOW_S / 2) * RATE))
        lag, correlation = best_lag(reference[window], audio[window], max_lag=8 * PER_FRAME)
        assert correlation > min_correlation, (moment, correlation)
        found[moment] = lag
    return found


@pytest.fixture(scope="module")
def drift_fixed(tmp_path_factory):
    """The synthetic drifting clip, fixed by `fix_table` from a row holding its true line."""
    base = tmp_path_factory.mktemp("fix_drift")
    root = base / "clips"
    truth = synth.synth_clip(
        root / "drift.mp4",
        seconds=SECONDS,
        seed=SEED,
        offset_frames=START_FRAMES,
        drift_ms_per_min=DRIFT_MS_PER_MIN,
    )
    assert truth["drift_ms_per_min"] == DRIFT_MS_PER_MIN
    row = scores_row(
        "drift.mp4",
        offset_frames=0,  # the clip as a whole: the offset of its middle
        duration_s=SECONDS,
        n_frames=int(SECONDS * 25),
        offset_min=-3,
        offset_max=3,
        drift_ms_per_min=DRIFT_MS_PER_MIN,
        offset_start_ms=START_MS,
        drift_residual_ms=10.0,
    )
    out = base / "fixed"
    log = fix_table(scores_table(root, [row]), out).set_index("path")
    # the same speech with no offset at all: where the fixed audio has to land
    _, in_sync, _ = synth.synth_arrays(seconds=SECONDS, seed=SEED)
    return root, out, log, in_sync.astype(np.float64)


def test_drift_fix_lands_start_middle_and_end_on_the_speech(drift_fixed):
    root, out, _, in_sync = drift_fixed
    source, rate = timeline_audio(root / "drift.mp4")
    fixed, fixed_rate = timeline_audio(out / "drift.mp4")
    assert rate == fixed_rate == RATE
    # (the source drifts by 24 ms within a window: a smeared, weaker peak)
    before = lags_at_moments(in_sync, source, min_correlation=0.1)
    after = lags_at_moments(in_sync, fixed, min_correlation=0.9)
    print(f"lag behind the speech (samples) before {before}, after {after}")
    # the source: 3 frames late at the start (audio lags), in place in the middle, 3 early at
    # the end (a lag of L samples: the audio is heard L samples after its frame)
    for moment, tau in MOMENTS_S.items():
        assert before[moment] == pytest.approx(-true_offset_ms(tau) * RATE / 1000, abs=PER_FRAME)
    assert before["start"] > 2 * PER_FRAME and before["end"] < -2 * PER_FRAME
    # fixed: within ±1 frame everywhere (the bar), in fact within 1 ms
    assert all(abs(lag) <= PER_FRAME for lag in after.values()), after
    assert all(abs(lag) <= RATE // 1000 for lag in after.values()), after
    assert abs(len(fixed) - len(source)) <= 1024  # duration kept (one audio frame at most)


def test_drift_fix_log_says_what_was_applied(drift_fixed):
    root, out, log, _ = drift_fixed
    row = log.loc["drift.mp4"]
    assert row["status"] == "fixed" and row["output"] == str(out / "drift.mp4")
    assert row["offset_frames"] == 0  # as scored
    assert row["applied_drift_ms_per_min"] == DRIFT_MS_PER_MIN
    assert row["applied_shift_start_s"] == pytest.approx(START_MS / 1000)
    duration = row["applied_shift_end_s"] - row["applied_shift_start_s"]
    assert duration == pytest.approx(DRIFT_MS_PER_MIN / 1000 * SECONDS / 60, abs=0.001)
    # applied_shift_* of a drift fix: the shift at the middle of the clip (0 here)
    assert abs(row["applied_shift_samples"]) <= 16
    assert row["applied_shift_s"] == row["applied_shift_samples"] / RATE
    assert row["check_lag_samples"] == 0  # the output is the intended resampled signal
    assert video_hashes(out / "drift.mp4") == video_hashes(root / "drift.mp4")


def test_rescoring_the_fixed_clip_finds_it_in_sync(drift_fixed, tmp_path):
    _, out, _, _ = drift_fixed
    timeline = tmp_path / "timeline"
    scores = score_table(out / "drift.mp4", tmp_path / "scores", "--timeline", str(timeline))
    stretches = read_timeline(timeline)
    offsets = stretches["offset_frames"].astype(int).tolist()
    row = scores.loc["drift.mp4"]
    print(f"stretch offsets after fixing: {offsets}, drift {row['drift_ms_per_min']} ms/min")
    assert len(offsets) == 6
    start, middle, end = offsets[0], offsets[len(offsets) // 2], offsets[-1]
    assert max(abs(start), abs(middle), abs(end)) <= 1, offsets  # the bar
    assert max(abs(o) for o in offsets) <= 1, offsets
    assert abs(row["offset_frames"]) <= 1
    # what drift is left moves the offset by less than half a frame over the minute
    assert abs(row["drift_ms_per_min"]) * SECONDS / 60 < MIN_DRIFT_ACROSS_CLIP_MS
    assert row["offset_steps"] == 0


def test_drift_thresholds_decide_between_resampling_and_the_constant_shift():
    row = scores_row("x.mp4", drift_ms_per_min=20.0, offset_start_ms=-30.0, drift_residual_ms=5)
    line = drift_line(row, clip_seconds=60.0)  # 20 ms over the clip: half a frame
    assert line is not None and (line.start_ms, line.ms_per_min) == (-30.0, 20.0)
    assert line.seconds_at(90.0) == pytest.approx((-30 + 20 * 1.5) / 1000)  # minutes, not s
    assert drift_line({**row, "drift_ms_per_min": -20.0}, 60.0).ms_per_min == -20.0
    assert drift_line(row, clip_seconds=59.0) is None  # less than half a frame over the clip
    assert drift_line({**row, "drift_ms_per_min": 19.9}, 60.0) is None
    # the change across the clip must stand out of the line's own scatter
    assert MIN_DRIFT_TO_RESIDUAL == 2.0
    assert drift_line({**row, "drift_residual_ms": 10.0}, 60.0) is not None
    assert drift_line({**row, "drift_residual_ms": 10.5}, 60.0) is None
    # relative to a reference offset of +1 frame the shift is the line less 40 ms
    assert drift_line(row, 60.0, reference_offset=1).start_ms == -70.0
    # no drift columns (older tables) or nulls (short clips): the constant shift
    assert drift_line({"path": "x.mp4"}, 60.0) is None
    assert drift_line({**row, "drift_ms_per_min": None}, 60.0) is None
    assert drift_line({**row, "offset_start_ms": math.nan}, 60.0) is None
    assert drift_line(row, None) is None


def test_the_resampler_follows_the_line_and_pads_with_silence():
    rate = 16_000
    tau = np.arange(4 * rate) / rate
    tones = (220.0, 1234.5, 3000.0, 5500.0)  # up to 0.69 × Nyquist

    def speech_like(t):
        return sum(np.cos(2 * np.pi * f * t + i) for i, f in enumerate(tones))

    source = np.stack([speech_like(tau), -speech_like(tau)], axis=1).astype(np.float32)
    line = ShiftLine(start_ms=-30.0, ms_per_min=900.0)  # -30 ms → +30 ms over 4 s
    out = resample_by_line(source, rate, line)
    assert out.shape == source.shape
    heard = tau - (-0.030 + 0.900 * tau / 60)  # out(τ) = src(τ − shift(τ))
    inner = slice(rate // 10, -rate // 10)
    error = out[inner, 0] - speech_like(heard)[inner]
    assert np.sqrt(np.mean(error**2)) < 0.01 * np.sqrt(np.mean(out[inner, 0] ** 2))  # -40 dB
    np.testing.assert_allclose(out[:, 1], -out[:, 0], atol=1e-6)  # channels alike
    # delayed by 10 ms: 160 samples of silence in front (but for the sinc's ringing at the
    # edge), advanced: at the end
    delayed = resample_by_line(source, rate, ShiftLine(start_ms=10.0, ms_per_min=0.0))
    assert np.abs(delayed[: 160 - 8]).max() < 0.05
    np.testing.assert_allclose(delayed[1000:-1000], source[840:-1160], atol=0.01)
    advanced = resample_by_line(source, rate, ShiftLine(start_ms=-10.0, ms_per_min=0.0))
    assert np.abs(advanced[-160 + 8 :]).max() < 0.05
    np.testing.assert_allclose(advanced[1000:-1000], source[1160:-840], atol=0.01)


def test_constant_offsets_are_fixed_exactly_as_before(tmp_path):
    root = tmp_path / "clips"
    synth.synth_clip(root / "plus3.mp4", seconds=4.0, seed=7, offset_frames=3)
    for name in ("nulls.mp4", "small_drift.mp4", "noisy_drift.mp4"):
        shutil.copyfile(root / "plus3.mp4", root / name)
    fix_clip(root / "plus3.mp4", tmp_path / "reference.mp4", 3)  # the fix as it always was
    reference, _ = timeline_audio(tmp_path / "reference.mp4")
    nulls = dict.fromkeys(["drift_ms_per_min", "offset_start_ms", "drift_residual_ms"])
    rows = [
        scores_row("plus3.mp4", offset_frames=3, offset_min=3, offset_max=3),
        scores_row("nulls.mp4", offset_frames=3, offset_steps=None, **nulls),
        # 6 ms a minute over 4 s: 0.4 ms, nothing to resample
        scores_row("small_drift.mp4", offset_frames=3, drift_ms_per_min=6.0),
        # 40 ms over the clip, but no more than the scatter of its stretches
        scores_row(
            "noisy_drift.mp4", offset_frames=3, drift_ms_per_min=600.0, drift_residual_ms=30.0
        ),
    ]
    old = scores_table(root, rows)[["root", "path", "status", "offset_frames"]]
    logs = {
        "new": fix_table(scores_table(root, rows), tmp_path / "new").set_index("path"),
        "old": fix_table(old, tmp_path / "old").set_index("path"),  # no timeline columns
    }
    for kind, log in logs.items():
        assert (log["status"] == "fixed").all(), log
        assert (log["applied_shift_samples"] == 3 * PER_FRAME).all()
        assert (log["applied_shift_s"] == 0.12).all()
        for column in ("applied_drift_ms_per_min", "applied_shift_start_s", "applied_shift_end_s"):
            assert log[column].isna().all(), (kind, column)
        for name in log.index:
            fixed, _ = timeline_audio(tmp_path / kind / name)
            np.testing.assert_array_equal(fixed, reference)


def test_a_stepping_clip_is_refused_and_left_alone(tmp_path):
    root = tmp_path / "clips"
    synth.synth_clip(root / "step.mp4", seconds=4.0, seed=11, offset_step=(2.0, 6))
    synth.synth_clip(root / "plus2.mp4", seconds=4.0, seed=12, offset_frames=2)
    step = {
        "offset_frames": 3,
        "offset_min": 0,
        "offset_max": 6,
        "offset_steps": 1,
        "offset_step_at_s": [2.0],
    }
    out = tmp_path / "fixed"
    # an earlier run, from a table without the step columns, fixed it by its offset
    before = scores_table(root, [scores_row("step.mp4", offset_frames=3)])
    earlier = before[["root", "path", "status", "offset_frames"]]
    assert fix_table(earlier, out)["status"].tolist() == ["fixed"]
    assert (out / "step.mp4").is_file()
    inputs = {name: digest(root / name) for name in ("step.mp4", "plus2.mp4")}

    rows = [scores_row("step.mp4", **step), scores_row("plus2.mp4", offset_frames=2)]
    table = write_table(scores_table(root, rows), tmp_path / "scores.parquet")
    result = CliRunner().invoke(app, ["fix", str(table), "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    log = pd.read_parquet(out / "fixes.parquet").set_index("path")

    reason = (
        f"{root / 'step.mp4'}: the offset steps at 2.0 s (0 → +6 frames); "
        "fix shifts a whole clip — cut it at the step instead"
    )
    refused = log.loc["step.mp4"]
    assert refused["status"] == STEP_STATUS == "skipped_offset_step"
    assert refused["error"] == reason
    assert pd.isna(refused["output"]) and pd.isna(refused["applied_shift_samples"])
    assert not (out / "step.mp4").exists()  # the earlier run's output is gone too
    assert "skipped_offset_step" in result.output and "the offset steps at 2.0 s" in result.output
    assert log.loc["plus2.mp4", "status"] == "fixed"  # the batch goes on
    assert {name: digest(root / name) for name in inputs} == inputs  # inputs untouched
    assert sorted(p.name for p in out.iterdir()) == ["fixes.parquet", "plus2.mp4"]


def test_a_rerun_reuses_a_drift_fix_only_for_the_same_line(tmp_path):
    root = tmp_path / "clips"
    synth.synth_clip(root / "short.mp4", seconds=4.0, seed=5, drift_ms_per_min=600.0)
    out = tmp_path / "fixed"
    # 600 ms a minute over 4 s: 40 ms, a frame; the residual is small
    drifting = scores_row("short.mp4", drift_ms_per_min=600.0, drift_residual_ms=5.0)
    faster = {**drifting, "drift_ms_per_min": 900.0}

    def run(row: dict, old_table: bool = False) -> pd.Series:
        table = scores_table(root, [row])
        table = table[["root", "path", "status", "offset_frames"]] if old_table else table
        return fix_table(table, out).iloc[0]

    first = run(drifting)
    assert first["status"] == "fixed" and not first["reused"]
    assert first["applied_drift_ms_per_min"] == 600.0
    assert first["applied_shift_end_s"] == pytest.approx(0.04, abs=0.001)
    assert run(drifting)["reused"]  # the same job
    again = run(faster)  # another line: done again
    assert not again["reused"] and again["applied_drift_ms_per_min"] == 900.0
    constant = run(faster, old_table=True)  # a table without drift: the constant shift
    assert not constant["reused"] and constant["status"] == "copied"
    assert pd.isna(constant["applied_drift_ms_per_min"])
