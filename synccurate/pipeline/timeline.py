"""The offset over time: one clip's windows cut into stretches, each with its own metrics.

One offset describes a short clip; a long recording can drift (a recorder's clock, a
29.97/30 mix-up, a resampled track) or step (an edit). Each stretch of `segment_seconds`
gets the model's own metrics computed on its windows alone (the same function that makes
the clip's row), and the confident stretches give the clip columns:

- `offset_min`, `offset_max`: the range of the stretch offsets (frames);
- `drift_ms_per_min`: a robust line through the stretch offsets against time (the
  median of the pairwise slopes, Theil–Sen, within each step-free run), its value at the
  clip's start `offset_start_ms` (the first run's), and `drift_residual_ms`, the median
  distance of the offsets from that line: a drift is real when it is large against its
  residual;
- `offset_steps`, `offset_step_at_s`: where the offset jumps by STEP_FRAMES or more
  between neighbouring confident stretches (after a median of three, so that one odd
  stretch is no step).

Offsets follow SPEC §6 (+ = the audio leads); a positive drift means the audio leads
more and more as the clip goes on.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from synccurate.io.audio import VIDEO_FPS
from synccurate.models.base import SyncModel

SEGMENT_SECONDS = 10.0  # length of one stretch of the timeline
MS_PER_FRAME = 1000 / VIDEO_FPS  # 40 ms
SECONDS_PER_MINUTE = 60
MIN_FACE_SHARE = 0.5  # a stretch whose windows show the face less than this is not scored
MIN_PROB = 0.5  # a probability model's stretch is confident at P(sync) >= this
MIN_LSE_C = 3.0  # … a distance model's at LSE-C >= this (LatentSync's bar)
STEP_FRAMES = 2  # neighbouring confident stretches this far apart: the offset stepped
MIN_STRETCHES_FOR_DRIFT = 3  # fewer confident stretches give no drift
STRETCH_METRICS = ("offset_frames", "vote_share", "prob_at_offset", "lse_c", "offscreen_ratio")
# + offset_fine, the offset to a fraction of a frame (`fine_offset`), which the drift uses


def stretch_bounds(n_windows: int, segment_seconds: float) -> list[tuple[int, int]]:
    """Half-open window ranges of `segment_seconds` each; a tail shorter than half a
    stretch joins the one before it."""
    size = max(1, round(segment_seconds * VIDEO_FPS))
    starts = list(range(0, n_windows, size))
    if len(starts) > 1 and n_windows - starts[-1] < size / 2:
        starts.pop()
    ends = [*starts[1:], n_windows]
    return list(zip(starts, ends, strict=True))


def stretches(
    model: SyncModel,
    similarity: np.ndarray,
    valid: np.ndarray,
    segment_seconds: float = SEGMENT_SECONDS,
    offset_method: str = "mean",
) -> list[dict]:
    """The timeline of one face: per stretch its start_s, end_s, face share, and (when its
    windows show the face enough) the model's metrics on those windows alone."""
    rows = []
    for start, end in stretch_bounds(len(similarity), segment_seconds):
        seen = float(np.mean(valid[start:end]))
        row = {"start_s": start / VIDEO_FPS, "end_s": end / VIDEO_FPS, "face_share": seen}
        if seen >= MIN_FACE_SHARE:
            row |= window_metrics(model, similarity[start:end], valid[start:end], offset_method)
        rows.append(row)
    return rows


def window_metrics(
    model: SyncModel, similarity: np.ndarray, valid: np.ndarray, offset_method: str = "mean"
) -> dict:
    """The model's own metrics (STRETCH_METRICS and offset_fine) of some windows alone,
    by the function that makes a clip's row."""
    found = model.metrics(similarity, valid, offset_method)
    return {name: found.get(name) for name in STRETCH_METRICS} | {
        "offset_fine": fine_offset(found["offset_frames"], found.get("profile"))
    }


def fine_offset(offset: int, profile: np.ndarray | None) -> float:
    """The offset to a fraction of a frame: the vertex of the parabola through the profile
    at the offset and its two neighbours. A drift of 40 ms a minute moves the offset by a
    sixth of a frame per 10 s stretch: whole frames alone would make its slope a staircase."""
    if profile is None:
        return float(offset)
    profile = np.asarray(profile, dtype=float)
    k = offset + (len(profile) - 1) // 2
    if not 0 < k < len(profile) - 1 or k != int(np.argmax(profile)):
        return float(offset)  # at the edge, or a vote that is not the profile's peak
    left, centre, right = profile[k - 1 : k + 2]
    curvature = left - 2 * centre + right
    return float(offset) if curvature >= 0 else offset + 0.5 * (left - right) / curvature


def is_confident(stretch: dict) -> bool:
    """Does this stretch's offset mean something (a face in sync at some offset)?"""
    if stretch.get("offset_frames") is None:
        return False
    if stretch.get("prob_at_offset") is not None:
        return stretch["prob_at_offset"] >= MIN_PROB
    return stretch.get("lse_c") is not None and stretch["lse_c"] >= MIN_LSE_C


def offset_over_time(timeline: list[dict]) -> dict:
    """The clip columns of a timeline (see the module docstring); nulls without data."""
    confident = [s for s in timeline if is_confident(s)]
    columns = {
        "offset_min": None,
        "offset_max": None,
        "drift_ms_per_min": None,
        "offset_start_ms": None,
        "drift_residual_ms": None,
        "offset_steps": None,
        "offset_step_at_s": None,
    }
    if not confident:
        return columns
    offsets = np.array([s["offset_frames"] for s in confident], dtype=float)
    fine = np.array([s.get("offset_fine", s["offset_frames"]) for s in confident], dtype=float)
    middles = np.array([(s["start_s"] + s["end_s"]) / 2 for s in confident])
    runs, step_at = _step_free_runs(offsets, middles)
    columns |= {
        "offset_min": int(offsets.min()),
        "offset_max": int(offsets.max()),
        "offset_steps": len(step_at),
        "offset_step_at_s": np.array(step_at, dtype=np.float32),
    }
    if len(confident) >= MIN_STRETCHES_FOR_DRIFT:
        slope, start, residual = _theil_sen(middles, fine * MS_PER_FRAME, runs)
        if slope is not None:
            columns["drift_ms_per_min"] = slope * SECONDS_PER_MINUTE
            columns["offset_start_ms"] = start
            columns["drift_residual_ms"] = residual
    return columns


def _step_free_runs(offsets: np.ndarray, middles: np.ndarray) -> tuple[list[range], list[float]]:
    """Runs of stretches without a step between them, and the times of the steps (s)."""
    smooth = _median3(offsets)
    jumps = [i for i in range(1, len(smooth)) if abs(smooth[i] - smooth[i - 1]) >= STEP_FRAMES]
    edges = [0, *jumps, len(offsets)]
    runs = [range(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return runs, [float((middles[i - 1] + middles[i]) / 2) for i in jumps]


def _median3(values: np.ndarray) -> np.ndarray:
    """Each value replaced by the median of it and its neighbours (the ends kept)."""
    if len(values) < 3:
        return values.copy()
    middle = np.median(np.stack([values[:-2], values[1:-1], values[2:]]), axis=0)
    return np.concatenate([values[:1], middle, values[-1:]])


def _theil_sen(
    x: np.ndarray, y: np.ndarray, runs: list[range]
) -> tuple[float | None, float | None, float | None]:
    """(slope, the first run's intercept, median absolute residual) of y against x: the
    median of the slopes between every two points of the same run; each run keeps its own
    intercept (a step is no drift)."""
    slopes = [
        (y[j] - y[i]) / (x[j] - x[i])
        for run in runs
        for i, j in combinations(run, 2)
        if x[j] != x[i]
    ]
    if not slopes:
        return None, None, None
    slope = float(np.median(slopes))
    intercepts = [float(np.median(y[r] - slope * x[r])) for r in runs]
    residuals = np.concatenate(
        [y[r] - slope * x[r] - b for r, b in zip(runs, intercepts, strict=True)]
    )
    return slope, intercepts[0], float(np.median(np.abs(residuals)))


def timeline_rows(timeline: list[dict], key: dict, model_id: str) -> list[dict]:
    """The rows of one clip in a timeline table: its key columns, then one row a stretch."""
    return [
        {**key, "stretch": i, **stretch, "model": model_id} for i, stretch in enumerate(timeline)
    ]
