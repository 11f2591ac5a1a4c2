"""`synccurate report`: one self-contained HTML page that describes a whole scores table.

A curator picks thresholds by looking at the data set as a whole: how offsets are
distributed, how many clips sit near a threshold, which clips are worst and why. The
steps are separate functions:

- load: `load` reads only the scalar columns (pyarrow `columns=`) of a Parquet file or a
  folder of Parquet parts and keeps one row per clip (the latest `scored_at` wins);
  `read_lists` reads the per-clip list columns (`p_t`, `profile`) of a few rows only.
- summarise: `summarise` turns the table into counts, histograms, threshold curves and
  the worst clips — a JSON-serialisable dict whose size does not grow with the table.
- figures: hand-made inline SVG (bars, lines, sparklines) and a middle-frame thumbnail
  per listed clip (decoded with `synccurate.io.media`, a placeholder when that fails).
- render: `render` writes the page; the summary is embedded as
  `<script type="application/json" id="summary">` for machines (and tests).

Besides the distributions the page has the offset over time (`drift_summary`: a drift
histogram, the most drifting clips and the clips whose offset steps), the per-model means
with their spread as papers print them (`compare.per_model`), a banner when rows were scored
by synthetic-only weights on real clips, and with `reference=` a second table compared
model by model and clip by clip (`compare.compare_tables`).

A segments table (`score --segments`, one row per clip × speaker segment, or the filter's
output of one) gets a page of its own (`summarise_segments`, `render_segments`): hours in
all and kept, segment lengths, end reasons, offsets, and the clips giving the most.

The page loads nothing: no scripts, stylesheets, fonts or network images (inline SVG in
HTML needs no namespace URL either); the only links are `file://` links to the clips.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from synccurate.curate import compare, filtering
from synccurate.curate.filtering import is_ok, numeric
from synccurate.io import media
from synccurate.io.files import default_file_mode, same_file
from synccurate.models import provenance
from synccurate.pipeline.segments import END_REASONS, MAX_SEGMENT_SECONDS
from synccurate.store.readers import holds_segments, read_segments
from synccurate.store.schema import OFFSET_OVER_TIME_COLUMNS

SCALAR_COLUMNS = (
    "root",
    "path",
    "status",
    "error",
    "duration_s",
    "offset_frames",
    "prob_at_offset",
    "offscreen_ratio",
    "face_ratio",
    "silence_ratio",
    "at_search_edge",
    "model",
    "face_detector",
    "lse_c",
    "lse_d",
    "vote_share",
    "drift_ms_per_min",
    "drift_residual_ms",
    "offset_min",
    "offset_max",
    "offset_steps",
    "face_px",
    "track_jitter",
    "frozen_ratio",
    "yaw_deg",
    "speech_ratio",
    provenance.SYNTHETIC_ON_REAL_COLUMN,
    "scored_at",
)
LIST_COLUMNS = ("p_t", "profile", "offset_step_at_s")  # read for the listed clips only
KEY = ["root", "path"]
DICTIONARY = ("root", "status", "model", "face_detector")  # few distinct values: categoricals
UNIT_METRICS = (
    "prob_at_offset",
    "offscreen_ratio",
    "face_ratio",
    "silence_ratio",
    "vote_share",
    "speech_ratio",
    "frozen_ratio",
)
ALWAYS_SHOWN = ("prob_at_offset", "offscreen_ratio", "face_ratio", "silence_ratio")
FREE_METRICS = ("lse_c", "lse_d")  # distance models (SyncNet v2): no fixed range
# The curation columns with a range of their own, shown when the table has them:
# (low, high, bins); high None = a round 1-2-5 number at or above the 99th percentile
# (rarer, larger values are counted in the last bar).
RANGED_METRICS = {
    "face_px": (0.0, None, 20),
    "track_jitter": (0.0, None, 20),
    "yaw_deg": (-90.0, 90.0, 18),
}
RANGE_QUANTILE = 0.99
MIN_HISTOGRAM_OFFSET = 15  # score's default --max-offset: the offset histogram spans ±this at least
UNIT_BINS = 20
FREE_BINS = 20
NEAR = 0.05  # "near a threshold": within ±this of it
GRID_PROB = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
GRID_OFFSCREEN = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
MAX_ERROR_KINDS = 25
THUMB_WIDTH = 96
SPARK_POINTS = 240  # p_t timelines longer than this are drawn as bucket means
DRIFT_BINS = 20  # over ±R ms/min, R a round number above the 99th percentile of |drift|
DRIFT_RANGE_QUANTILE = 0.99  # rarer, larger drifts are counted in the end bars
# What synthetic-only weights on real clips make meaningless (everything the sync model
# decides), and what they do not touch (decoding, face detection, audio energy).
MEANINGLESS_COLUMNS = (
    "offset_frames",
    "offset_seconds",
    "prob_at_offset",
    "offscreen_ratio",
    "confidence",
    "lse_d",
    "lse_c",
    "fconf",
    "vote_offset",
    "vote_share",
    "at_search_edge",
    "p_t",
    "onscreen",
    "profile",
    "face_track",
    "face_tracks",
    *OFFSET_OVER_TIME_COLUMNS,
)
UNAFFECTED_COLUMNS = (
    "status",
    "duration_s",
    "n_frames",
    "n_faces",
    "silence_ratio",
    "speech_ratio",
)

LABELS = {
    "offset_frames": "offset (frames; + = audio leads)",
    "segment_length_s": "segment length (s; end_s − start_s)",
    "prob_at_offset": "probability at the offset",
    "offscreen_ratio": "off-screen ratio",
    "face_ratio": "face ratio",
    "silence_ratio": "silence ratio",
    "vote_share": "vote share",
    "lse_c": "LSE-C (higher = more confident)",
    "lse_d": "LSE-D (lower = closer)",
    "drift_ms_per_min": "drift (ms per minute; + = the audio leads more and more)",
    "speech_ratio": "speech ratio (voiced share of the frames)",
    "frozen_ratio": "frozen ratio (face frames repeating the previous one)",
    "face_px": "face height (source pixels)",
    "track_jitter": "track jitter (face heights a frame)",
    "yaw_deg": "head yaw (degrees; + = turned to the image's right)",
}


# --- load -------------------------------------------------------------------------------


@dataclass
class Scores:
    """Scalar columns of a scores table, one row per clip; `_file`/`_row` locate each row."""

    table: pd.DataFrame
    files: list[str]
    rows_read: int

    @property
    def duplicates_dropped(self) -> int:
        return self.rows_read - len(self.table)


def parquet_files(source: str | Path) -> list[str]:
    """The Parquet file itself, or the files of a folder as pandas/pyarrow would read them."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    if not source.is_dir():
        return [str(source)]
    files = sorted(ds.dataset(source, format="parquet").files)  # skips .hidden and _meta files
    if not files:
        raise ValueError(f"{source}: no Parquet files in this folder")
    return files


def _read_scalars(file: str, index: int) -> pa.Table:
    try:
        names = pq.read_schema(file).names
        wanted = [c for c in SCALAR_COLUMNS if c in names]
        parquet = pq.ParquetFile(file, read_dictionary=[c for c in DICTIONARY if c in wanted])
    except Exception as error:
        raise ValueError(f"{file}: not a readable Parquet table ({error})") from error
    missing = [column for column in ("root", "path", "status") if column not in names]
    if missing:
        raise ValueError(f"{file}: not a scores table (missing columns: {', '.join(missing)})")
    table = parquet.read(columns=wanted)
    table = table.append_column("_file", pa.array(np.full(len(table), index, dtype=np.int32)))
    return table.append_column("_row", pa.array(np.arange(len(table), dtype=np.int64)))


def _latest_rows(table: pa.Table) -> pa.Table:
    """One row per (root, path): the latest `scored_at` (without it, the last one read)."""
    codes = pc.dictionary_encode(table["path"]).combine_chunks().indices.to_numpy()
    repeated = np.bincount(codes)[codes] > 1  # one hash pass; the same path under other
    if not repeated.any():  # roots is another clip, sorted out below
        return table
    again = table.filter(pa.array(repeated)).to_pandas()
    again["_order"] = np.flatnonzero(repeated)
    order = ["scored_at", "_order"] if "scored_at" in again.columns else ["_order"]
    again = again.sort_values(order, kind="stable", na_position="first")
    keep = np.ones(len(table), dtype=bool)
    keep[again.loc[again.duplicated(KEY, keep="last"), "_order"].to_numpy()] = False
    return table.filter(pa.array(keep))


def is_segments_table(source: str | Path) -> bool:
    """Does `source` hold speaker segments (several rows per clip)? False for a table that
    cannot be read: `load` then says why."""
    try:
        return holds_segments(source)
    except (OSError, ValueError):
        return False


def load(source: str | Path) -> Scores:
    """Scalar columns of every part; a clip scored more than once keeps its latest row."""
    files = parquet_files(source)
    if is_segments_table(source):  # one row per clip would keep one segment of each clip
        raise ValueError(
            f"{source}: a segments table (one row per clip × speaker segment), not a scores "
            "table; `synccurate report` shows it on a page of its own, without --reference"
        )
    parts = [_read_scalars(file, i) for i, file in enumerate(files)]
    table = parts[0] if len(parts) == 1 else pa.concat_tables(parts, promote_options="permissive")
    latest = _latest_rows(table)
    return Scores(latest.to_pandas(), files, len(table))


def read_lists(scores: Scores, picks: pd.DataFrame) -> dict[tuple[int, int], dict]:
    """`p_t` and `profile` of the rows in `picks`, keyed by (_file, _row).

    Only the row groups holding a picked row are decoded, streamed in small batches and
    left as soon as the last picked row is passed, so memory stays small for any table.
    """
    found: dict[tuple[int, int], dict] = {}
    for file_index, rows in picks.groupby("_file")["_row"]:
        parquet = pq.ParquetFile(scores.files[int(file_index)], buffer_size=1 << 20)
        columns = [c for c in LIST_COLUMNS if c in parquet.schema_arrow.names]
        if not columns:
            continue
        sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        wanted = sorted({int(r) for r in rows})
        for group in sorted({int(np.searchsorted(starts, r, "right")) - 1 for r in wanted}):
            inside = [r for r in wanted if starts[group] <= r < starts[group + 1]]
            position = int(starts[group])
            batches = parquet.iter_batches(batch_size=2048, row_groups=[group], columns=columns)
            for batch in batches:
                for row in inside:
                    if position <= row < position + batch.num_rows:
                        found[(int(file_index), row)] = {
                            c: batch.column(c)[row - position].as_py() for c in columns
                        }
                position += batch.num_rows
                if position > inside[-1]:
                    break
    return found


# --- summarise --------------------------------------------------------------------------


def _strings(table: pd.DataFrame, column: str, missing: str = "") -> np.ndarray:
    if column not in table.columns:
        return np.full(len(table), missing, dtype=object)
    return table[column].astype("string").fillna(missing).to_numpy(dtype=object)


def _counts(table: pd.DataFrame, column: str, missing: str | None = None) -> dict[str, int]:
    """{value: rows}, largest first; missing values counted as `missing` (None: skipped)."""
    if column not in table.columns:
        return {}
    counts = table[column].value_counts(dropna=missing is None)
    result: dict[str, int] = {}
    for value, count in counts.items():
        name = missing if pd.isna(value) else str(value)
        if count and name:
            result[name] = result.get(name, 0) + int(count)
    return result


def _flag(table: pd.DataFrame, column: str) -> np.ndarray:
    """A boolean column as a bool array, missing = False (fast for object columns too)."""
    if column not in table.columns:
        return np.zeros(len(table), dtype=bool)
    return table[column].isin([True]).to_numpy(dtype=bool)


def _has_values(table: pd.DataFrame, column: str) -> bool:
    return column in table.columns and bool(np.isfinite(numeric(table, column)).any())


def _number(value) -> float | None:
    """A float for JSON (None for NaN / missing)."""
    return None if value is None or not np.isfinite(value) else float(value)


_VIDEO_PREFIX = re.compile(
    r"^'?.+?(?:" + "|".join(re.escape(e) for e in media.VIDEO_EXTENSIONS) + r")'?:\s+", re.I
)
_DIGITS = re.compile(r"\d+(?:\.\d+)?")


def error_kind(error: str | None, root: str = "", path: str = "") -> str:
    """An error message without the clip's path in front and with numbers as N.

    "…/talks/a.mp4: no audio stream" → "no audio stream"; "…: only 3 frames at 25 fps" →
    "only N frames at N fps", so clips failing the same way fall into one group.
    """
    text = str(error or "").strip()
    prefixes = [os.path.join(root, path), path] if root else [path]
    for prefix in prefixes:
        if prefix and text.startswith(prefix + ": "):
            return _normalised(text[len(prefix) + 2 :])
    return _normalised(_VIDEO_PREFIX.sub("", text, count=1))


@lru_cache(maxsize=4096)
def _normalised(message: str) -> str:
    text = _DIGITS.sub("N", " ".join(message.split()))
    return text[:120] or "(no message)"


def error_groups(table: pd.DataFrame) -> tuple[list[dict], int]:
    """(status, kind, clips, example) for the rows that are not ok, largest first, and how
    many rows fall in the kinds left off after MAX_ERROR_KINDS."""
    failed = np.flatnonzero(~is_ok(table))
    if not len(failed):
        return [], 0
    sub = table.iloc[failed]
    status = _strings(sub, "status", "missing")
    kinds = [
        error_kind(e, r, p)
        for e, r, p in zip(
            _strings(sub, "error"), _strings(sub, "root"), _strings(sub, "path"), strict=True
        )
    ]
    groups = pd.DataFrame(
        {"status": status, "kind": kinds, "example": _strings(sub, "path")}
    ).groupby(["status", "kind"], sort=False)
    counted = groups["example"].agg(["size", "first"]).reset_index()
    counted = counted.sort_values(["size", "status", "kind"], ascending=[False, True, True])
    rows = [
        {"status": s, "kind": k, "clips": int(n), "example": e}
        for s, k, n, e in counted.itertuples(index=False)
    ]
    left_off = sum(row["clips"] for row in rows[MAX_ERROR_KINDS:])
    return rows[:MAX_ERROR_KINDS], left_off


def histogram(values: np.ndarray, low: float, high: float, bins: int) -> dict:
    """Counts of the finite `values` in `bins` equal bins over [low, high] (values outside
    go to the end bins). Equal bins take numpy's fast path (no sorting) on large tables."""
    values = values[np.isfinite(values)]
    counts, edges = np.histogram(np.clip(values, low, high), bins=bins, range=(low, high))
    result = {
        "n": int(len(values)),
        "edges": [float(e) for e in edges],
        "counts": [int(c) for c in counts],
    }
    if len(values):
        p5, median, p95 = np.quantile(values, [0.05, 0.5, 0.95])
        result.update(median=float(median), p5=float(p5), p95=float(p95))
    return result


def offset_histogram(offsets: np.ndarray) -> tuple[dict, int]:
    """Whole-frame offsets, one bin per frame over ±K (K the largest |offset| seen, at least
    MIN_HISTOGRAM_OFFSET, so tables searched alike get comparable axes), and K."""
    seen = np.abs(offsets[np.isfinite(offsets)])
    max_offset = max(MIN_HISTOGRAM_OFFSET, int(seen.max()) if len(seen) else 0)
    return histogram(offsets, -max_offset - 0.5, max_offset + 0.5, 2 * max_offset + 1), max_offset


def histograms(table: pd.DataFrame) -> tuple[dict, int]:
    """One histogram per metric (every row with a value) and the offset range ±K shown."""
    offsets_histogram, max_offset = offset_histogram(numeric(table, "offset_frames"))
    result = {"offset_frames": offsets_histogram}
    for metric in UNIT_METRICS:
        if metric in ALWAYS_SHOWN or _has_values(table, metric):
            result[metric] = histogram(numeric(table, metric), 0.0, 1.0, UNIT_BINS)
    for metric in FREE_METRICS:
        if _has_values(table, metric):
            values = numeric(table, metric)
            low, high = float(np.nanmin(values)), float(np.nanmax(values))
            bins = FREE_BINS if high > low else 1
            result[metric] = histogram(values, low, max(high, low + 1e-9), bins)
    for metric, (low, high, bins) in RANGED_METRICS.items():
        if _has_values(table, metric):
            values = numeric(table, metric)
            if high is None:
                top = float(np.nanquantile(values, RANGE_QUANTILE))
                high = _round_up(max(top, float(np.nanmax(values)) * 1e-3, 1e-9))
            result[metric] = histogram(values, low, high, bins)
    return result, max_offset


def _round_up(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at or above `value` (> 0)."""
    power = 10.0 ** np.floor(np.log10(value))
    value *= 1 - 1e-12  # 0.2 stays 0.2 despite rounding
    return float(next(step * power for step in (1, 2, 5, 10) if step * power >= value))


def _kept_at_least(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of `values` are >= each threshold (NaN never is)."""
    ordered = np.sort(values[np.isfinite(values)])
    return len(ordered) - np.searchsorted(ordered, thresholds, side="left")


def _kept_at_most(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    ordered = np.sort(values[np.isfinite(values)])
    return np.searchsorted(ordered, thresholds, side="right")


def thresholds(table: pd.DataFrame) -> dict:
    """Kept fraction of all clips as the probability / off-screen threshold moves.

    "with_defaults": what `synccurate filter` would keep with the other rules at their
    defaults (FilterRules()); "alone": the ok clips passing this one rule.
    """
    rules = filtering.FilterRules()
    total = max(len(table), 1)
    ok = is_ok(table)
    failures = filtering.rule_failures(table, rules)
    prob_rule, offscreen_rule = filtering.REASON_LOW_PROB, filtering.REASON_OFFSCREEN

    def passing(*skip: str) -> np.ndarray:
        mask = ok.copy()
        for name, failed in failures.items():
            if name not in skip:
                mask &= ~failed
        return mask

    prob, offscreen = numeric(table, "prob_at_offset"), numeric(table, "offscreen_ratio")
    grid_p = np.union1d(np.round(np.linspace(0, 1, 101), 2), [rules.min_prob])
    grid_o = np.union1d(np.round(np.linspace(0, 1, 101), 2), [rules.max_offscreen])
    both = passing(prob_rule, offscreen_rule)
    table_p = np.union1d(GRID_PROB, [rules.min_prob])
    table_o = np.union1d(GRID_OFFSCREEN, [rules.max_offscreen])
    with np.errstate(invalid="ignore"):
        rows = [both & (offscreen <= o) for o in table_o]
        grid = [
            [round(float((row & (prob >= p)).sum() / total), 4) for p in table_p] for row in rows
        ]
    kept = passing()
    with np.errstate(invalid="ignore"):
        near_prob = ok & (np.abs(prob - rules.min_prob) <= NEAR)
        near_offscreen = ok & (np.abs(offscreen - rules.max_offscreen) <= NEAR)
    return {
        "defaults": {"min_prob": rules.min_prob, "max_offscreen": rules.max_offscreen},
        "total": len(table),
        "kept_at_defaults": int(kept.sum()),
        "kept_fraction_at_defaults": float(kept.sum() / total),
        "near": NEAR,
        "near_prob": int(near_prob.sum()),
        "near_offscreen": int(near_offscreen.sum()),
        "prob": {
            "thresholds": grid_p.tolist(),
            "with_defaults": (_kept_at_least(prob[passing(prob_rule)], grid_p) / total).tolist(),
            "alone": (_kept_at_least(prob[ok], grid_p) / total).tolist(),
        },
        "offscreen": {
            "thresholds": grid_o.tolist(),
            "with_defaults": (
                _kept_at_most(offscreen[passing(offscreen_rule)], grid_o) / total
            ).tolist(),
            "alone": (_kept_at_most(offscreen[ok], grid_o) / total).tolist(),
        },
        "grid": {"prob": table_p.tolist(), "offscreen": table_o.tolist(), "kept_fraction": grid},
    }


def _pick(values: np.ndarray, mask: np.ndarray, n: int, largest: bool = False) -> np.ndarray:
    """Positions of the n smallest (largest) `values` where `mask`; ties by table order."""
    candidates = np.flatnonzero(mask & np.isfinite(values))
    keys = -values[candidates] if largest else values[candidates]
    if len(candidates) > n:
        part = np.argpartition(keys, n - 1)[:n] if n else np.array([], dtype=int)
        threshold = keys[part].max() if n else -np.inf
        chosen = keys <= threshold  # every tie at the boundary, then sorted and cut
        candidates, keys = candidates[chosen], keys[chosen]
    order = np.lexsort((candidates, keys))
    return candidates[order][:n]


def worst_clips(table: pd.DataFrame, n: int) -> dict[str, dict]:
    """{name: {title, metric, total, positions}} for each list the table has clips for."""
    ok = is_ok(table)
    prob = numeric(table, "prob_at_offset")
    # at the search edge: lowest probability first (distance tables: largest |offset| first)
    edge_key = np.where(np.isfinite(prob), prob, -np.abs(numeric(table, "offset_frames")))
    specs = [
        ("lowest_prob", "Lowest probability at the offset", "prob_at_offset", prob, ok, False),
        ("highest_offscreen", "Highest off-screen ratio", "offscreen_ratio", None, ok, True),
        ("search_edge", "Offset at the search edge", "offset_frames", edge_key, None, False),
        ("lowest_lse_c", "Lowest LSE-C", "lse_c", None, ok, False),
    ]
    result = {}
    for name, title, metric, values, mask, largest in specs:
        values = numeric(table, metric) if values is None else values
        mask = ok & _flag(table, "at_search_edge") if mask is None else mask
        total = int((mask & np.isfinite(values)).sum())
        if total:
            positions = _pick(values, mask, n, largest=largest)
            result[name] = {
                "title": title,
                "metric": metric,
                "total": total,
                "positions": positions,
            }
    return result


def _nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at or above `value` (1 at least)."""
    if not np.isfinite(value) or value <= 1:
        return 1.0
    power = 10.0 ** np.floor(np.log10(value))
    return float(next(step * power for step in (1, 2, 5, 10) if step * power >= value))


def drift_histogram(drift: np.ndarray) -> dict:
    """Signed drift (ms/min) in DRIFT_BINS bins over ±R, R a round number at or above the
    99th percentile of |drift| (larger ones in the end bars, counted as "beyond")."""
    values = drift[np.isfinite(drift)]
    quantile = float(np.quantile(np.abs(values), DRIFT_RANGE_QUANTILE)) if len(values) else 1.0
    limit = _nice_ceiling(quantile)
    result = histogram(values, -limit, limit, DRIFT_BINS)
    result["beyond"] = int((np.abs(values) > limit).sum())
    return result


def _drift_clip(table: pd.DataFrame, position: int) -> dict:
    row = table.iloc[position]

    def number(column: str) -> float | None:
        return _number(numeric(table.iloc[[position]], column)[0])

    drift, duration = number("drift_ms_per_min"), number("duration_s")
    steps = number("offset_steps")
    return {
        "root": str(row["root"]),
        "path": str(row["path"]),
        "drift_ms_per_min": drift,
        "drift_residual_ms": number("drift_residual_ms"),
        "across_clip_ms": None if drift is None or duration is None else drift * duration / 60,
        "duration_s": duration,
        "offset_frames": number("offset_frames"),
        "offset_min": number("offset_min"),
        "offset_max": number("offset_max"),
        "offset_steps": None if steps is None else int(steps),
        "offset_step_at_s": None,  # a list column: filled in for the listed clips only
    }


def drift_summary(table: pd.DataFrame, n: int) -> tuple[dict, dict[str, list[int]]]:
    """The offset over time of the ok clips: how many have a drift measured, its histogram,
    the n clips with the largest |drift_ms_per_min| (ties in table order) and the n clips
    whose offset steps (most steps first, then the widest offset range, then table order).

    Returns (summary, {list name: table positions}); {"columns": False} for a table
    scored before these columns existed."""
    if "drift_ms_per_min" not in table.columns:
        return {"columns": False}, {}
    ok = is_ok(table)
    drift = numeric(table, "drift_ms_per_min")
    measured = ok & np.isfinite(drift)
    steps = numeric(table, "offset_steps")
    spread = numeric(table, "offset_max") - numeric(table, "offset_min")
    with np.errstate(invalid="ignore"):
        stepping = ok & (steps >= 1)
    largest = _pick(np.abs(drift), ok, n, largest=True)
    candidates = np.flatnonzero(stepping)
    order = np.lexsort(
        (candidates, -np.nan_to_num(spread[candidates], nan=-1.0), -steps[candidates])
    )
    stepped = candidates[order][:n]
    summary = {
        "columns": True,
        "ok": int(ok.sum()),
        "measured": int(measured.sum()),
        "unmeasured": int((ok & ~np.isfinite(drift)).sum()),
        "stepping": int(stepping.sum()),
        "histogram": drift_histogram(drift[measured]),
        "largest": {
            "total": int(measured.sum()),
            "clips": [_drift_clip(table, int(p)) for p in largest],
        },
        "steps": {
            "total": int(stepping.sum()),
            "clips": [_drift_clip(table, int(p)) for p in stepped],
        },
    }
    return summary, {"largest_drift": largest.tolist(), "offset_steps": stepped.tolist()}


def synthetic_on_real(table: pd.DataFrame) -> dict:
    """How many rows synthetic-only weights scored on non-synth clips, and by which models."""
    flagged = provenance.synthetic_on_real_rows(table)
    models = _strings(table.loc[flagged], "model", compare.NO_MODEL) if flagged.any() else []
    return {"rows": int(flagged.sum()), "of": len(table), "models": sorted(set(models))}


def summarise(
    scores: Scores, worst: int = 10, reference: Scores | None = None, **labels: str
) -> dict:
    """Everything the page shows, as JSON-serialisable numbers (worst lists: paths only).

    With `reference` (another table), "comparison" holds `compare.compare_tables` of the two
    (`labels`: its label / reference_label). "_positions" ({list: table positions}) is for
    the renderer and is not embedded."""
    table = scores.table
    drift, drift_positions = drift_summary(table, worst)
    comparison = None
    if reference is not None:
        comparison = compare.compare_tables(table, reference.table, worst, **labels)
        comparison["reference_synthetic_on_real"] = synthetic_on_real(reference.table)
        comparison["reference_rows_read"] = reference.rows_read
        comparison["reference_duplicates_dropped"] = reference.duplicates_dropped
    groups, other_errors = error_groups(table)
    hists, max_offset = histograms(table)
    offsets = numeric(table, "offset_frames")
    offsets = offsets[np.isfinite(offsets)]
    median_offset = float(np.median(offsets)) if len(offsets) else None
    lists = worst_clips(table, worst)
    duration = numeric(table, "duration_s")
    return {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": len(scores.files),
        "rows_read": scores.rows_read,
        "duplicates_dropped": scores.duplicates_dropped,
        "n_clips": len(table),
        "n_ok": int(is_ok(table).sum()),
        "hours": float(np.nansum(duration) / 3600) if len(duration) else 0.0,
        "models": _counts(table, "model"),
        "face_detectors": _counts(table, "face_detector"),
        "statuses": _counts(table, "status", missing="missing"),
        "errors": groups,
        "errors_left_off": other_errors,
        "max_offset": max_offset,
        "median_offset": median_offset,
        "at_search_edge": int((_flag(table, "at_search_edge") & is_ok(table)).sum()),
        "histograms": hists,
        "thresholds": thresholds(table),
        "synthetic_on_real": synthetic_on_real(table),
        "per_model": compare.per_model(table),
        "spread": "sample standard deviation (ddof = 1)",
        "drift": drift,
        "comparison": comparison,
        "worst": {
            name: {
                "title": item["title"],
                "metric": item["metric"],
                "total": item["total"],
                "clips": [
                    {
                        "root": str(table.at[p, "root"]),
                        "path": str(table.at[p, "path"]),
                        "value": _number(value),
                    }
                    for p, value in zip(
                        item["positions"],
                        numeric(table, item["metric"])[item["positions"]],
                        strict=True,
                    )
                ],
            }
            for name, item in lists.items()
        },
        "_positions": {name: item["positions"].tolist() for name, item in lists.items()}
        | drift_positions,
    }


# --- figures ----------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _tick(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e4 else f"{value:.3g}"


def svg_bars(
    hist: dict, *, integer: bool = False, marks: tuple = (), width: int = 380, height: int = 170
) -> str:
    """Bar chart of a histogram dict; `marks` = ((x, label, colour), …) vertical lines."""
    edges, counts = hist["edges"], hist["counts"]
    left, right, top, bottom = 52, 10, 16, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    low, high = edges[0], edges[-1]
    peak = max(counts) if counts and max(counts) else 1

    def x(value: float) -> float:
        return left + (value - low) / (high - low) * plot_w

    parts = [
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'role="img">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'class="axis"/>',
        f'<text x="{left - 4}" y="{top + 4}" class="tick" text-anchor="end">{peak:,}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" class="tick" text-anchor="end">0</text>',
    ]
    for i, count in enumerate(counts):
        x0, x1 = x(edges[i]), x(edges[i + 1])
        h = count / peak * plot_h
        label = (
            f"{round((edges[i] + edges[i + 1]) / 2):+d}"
            if integer
            else (f"{_tick(edges[i])}–{_tick(edges[i + 1])}")
        )
        parts.append(
            f'<rect x="{_fmt(x0 + 0.5)}" y="{_fmt(top + plot_h - h)}" '
            f'width="{_fmt(max(x1 - x0 - 1, 0.5))}" height="{_fmt(h)}" class="bar" '
            f'data-bin="{html.escape(label)}" data-count="{count}">'
            f"<title>{html.escape(label)}: {count}</title></rect>"
        )
    if integer:
        span = int(high - low)
        step = max(1, int(np.ceil(span / 10 / 5)) * 5) if span > 20 else 5 if span > 10 else 1
        ticks = [v for v in range(int(np.ceil(low)), int(high) + 1) if v % step == 0]
    else:
        ticks = list(np.linspace(low, high, 5))
    for value in ticks:
        label = f"{value:+d}" if integer and value else _tick(float(value))
        parts.append(
            f'<text x="{_fmt(x(value))}" y="{top + plot_h + 13}" class="tick" '
            f'text-anchor="middle">{label}</text>'
        )
    for value, label, colour in marks:
        if value is None or not low <= value <= high:
            continue
        parts.append(
            f'<line x1="{_fmt(x(value))}" y1="{top - 4}" x2="{_fmt(x(value))}" '
            f'y2="{top + plot_h}" stroke="{colour}" stroke-dasharray="4 3"/>'
            f'<text x="{_fmt(x(value) + 3)}" y="{top + 4}" class="mark" fill="{colour}">'
            f"{html.escape(label)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _points(xs, ys, x, y) -> str:
    return " ".join(f"{_fmt(x(a))},{_fmt(y(b))}" for a, b in zip(xs, ys, strict=True))


def svg_lines(
    xs: list[float],
    series: list[tuple[list[float], str, str]],
    *,
    marks: tuple = (),
    x_label: str = "",
    y_label: str = "",
    width: int = 380,
    height: int = 190,
) -> str:
    """Line chart on [0, 1] × [0, 1]; series = ((ys, css class, legend), …)."""
    left, right, top, bottom = 44, 10, 16, 42
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(v: float) -> float:
        return left + v * plot_w

    def y(v: float) -> float:
        return top + (1 - v) * plot_h

    parts = [
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'role="img">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>',
    ]
    for v in (0, 0.25, 0.5, 0.75, 1):
        parts.append(
            f'<text x="{_fmt(x(v))}" y="{top + plot_h + 13}" class="tick" '
            f'text-anchor="middle">{v:g}</text>'
            f'<text x="{left - 4}" y="{_fmt(y(v) + 4)}" class="tick" '
            f'text-anchor="end">{v:.0%}</text>'
        )
    for ys, css, _ in series:
        parts.append(f'<polyline class="{css}" points="{_points(xs, ys, x, y)}"/>')
    for value, label, colour in marks:
        parts.append(
            f'<line x1="{_fmt(x(value))}" y1="{top}" x2="{_fmt(x(value))}" '
            f'y2="{top + plot_h}" stroke="{colour}" stroke-dasharray="4 3"/>'
            f'<text x="{_fmt(x(value) + 3)}" y="{top + 11}" class="mark" fill="{colour}">'
            f"{html.escape(label)}</text>"
        )
    legend_x = left
    for _, css, legend in series:
        parts.append(
            f'<line x1="{legend_x}" y1="{height - 8}" x2="{legend_x + 18}" y2="{height - 8}" '
            f'class="{css}"/><text x="{legend_x + 22}" y="{height - 4}" class="tick">'
            f"{html.escape(legend)}</text>"
        )
        legend_x += 24 + 6 * len(legend)
    parts.append(
        f'<text x="{left + plot_w}" y="{top + plot_h + 26}" class="tick" text-anchor="end">'
        f"{html.escape(x_label)}</text>"
        f'<text x="4" y="{top - 4}" class="tick">{html.escape(y_label)}</text></svg>'
    )
    return "".join(parts)


def sparkline(
    values: list[float] | None,
    *,
    x0: float = 0,
    mark: float | None = None,
    fixed: tuple[float, float] | None = None,
    width: int = 150,
    height: int = 44,
    what: str = "",
) -> str:
    """A tiny line plot (no axes); `mark` = an x value drawn as a red line."""
    if not values:
        return '<span class="muted">—</span>'
    ys = np.asarray(values, dtype=float)
    xs = x0 + np.arange(len(ys), dtype=float)
    if len(ys) > SPARK_POINTS:  # bucket means keep the page small for long clips
        cuts = np.linspace(0, len(ys), SPARK_POINTS + 1).astype(int)
        ys = np.add.reduceat(ys, cuts[:-1]) / np.diff(cuts)
        xs = x0 + (cuts[:-1] + cuts[1:]) / 2
    low, high = fixed or (float(np.nanmin(ys)), float(np.nanmax(ys)))
    high = high if high > low else low + 1
    span_x = max(xs[-1] - xs[0], 1)

    def x(v: float) -> float:
        return 2 + (v - xs[0]) / span_x * (width - 4)

    def y(v: float) -> float:
        return 2 + (1 - (v - low) / (high - low)) * (height - 4)

    guide = ""
    if fixed:
        guide = f'<line x1="0" y1="{_fmt(y(0.5))}" x2="{width}" y2="{_fmt(y(0.5))}" class="guide"/>'
    marker = ""
    if mark is not None:
        marker = (
            f'<line x1="{_fmt(x(mark))}" y1="0" x2="{_fmt(x(mark))}" y2="{height}" class="hot"/>'
        )
    title = f"{what}: {len(values)} values, {np.nanmin(values):.3g} … {np.nanmax(values):.3g}"
    return (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img"><title>{html.escape(title)}</title>{guide}{marker}'
        f'<polyline class="line" points="{_points(xs, np.nan_to_num(ys), x, y)}"/></svg>'
    )


def thumbnail(file: str | Path, width: int = THUMB_WIDTH) -> tuple[str | None, str]:
    """(data URI of the clip's middle frame as JPEG, "") or (None, why it failed)."""
    try:
        import cv2

        info = media.probe(file)
        height, full_width = media.frame_size(info)
        size = (max(2, round(width * height / full_width)), width)
        middle = max(0, media.n_video_frames(info) // 2)
        frame, seen = None, 0
        with closing(media.iter_video_frames(info, size=size, chunk_frames=16)) as chunks:
            for chunk in chunks:
                frame = chunk[min(middle - seen, len(chunk) - 1)]
                if seen + len(chunk) > middle:
                    break
                seen += len(chunk)
        if frame is None:
            return None, "no frame decoded"
        ok, data = cv2.imencode(
            ".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80]
        )
        if not ok:
            return None, "JPEG encoding failed"
        return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode(), ""
    except Exception as error:  # a missing or broken clip must never stop the report
        return None, str(error).splitlines()[0] if str(error) else type(error).__name__


def thumbnails(files: list[str], workers: int = 4) -> dict[str, tuple[str | None, str]]:
    """Thumbnails of distinct files, decoded in threads (each decode is an ffmpeg process)."""
    unique = list(dict.fromkeys(files))
    if not unique:
        return {}
    with ThreadPoolExecutor(max(1, min(workers, os.cpu_count() or 1, len(unique)))) as pool:
        return dict(zip(unique, pool.map(thumbnail, unique), strict=True))


# --- render -----------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1240px;
color:#222;padding:0 16px;line-height:1.4}
h1{font-size:1.5em;margin-bottom:0}
h2{border-bottom:1px solid #ccc;padding-bottom:2px;margin-top:1.6em}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 7px;
text-align:left;vertical-align:middle;font-size:.9em}th{background:#f3f3f3}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:10px 24px}figure{margin:0}
figcaption{font-size:.85em;color:#444;max-width:380px}
.muted{color:#888}.note{background:#fff7e0;border-left:4px solid #e0a800;padding:6px 10px}
.callout{background:#e8f1ff;border-left:4px solid #2a6fdb;padding:6px 10px}
.chart text,.spark text{font-size:10px;fill:#333}.tick{font-size:10px}.mark{font-size:10px}
.axis{stroke:#888}.frame{fill:none;stroke:#ccc}.bar{fill:#4a7bd0}
polyline{fill:none;stroke-width:1.6}.solid{stroke:#2a6fdb}.dashed{stroke:#999;stroke-dasharray:5 3}
.line{stroke:#2a6fdb;stroke-width:1.2}.guide{stroke:#bbb;stroke-dasharray:2 2}.hot{stroke:#d33}
td.cur{background:#ffe9a8;font-weight:bold}img.thumb,.placeholder{display:block;width:96px}
.banner{background:#fde8e8;border-left:6px solid #c62828;padding:8px 12px;margin:12px 0}
.warn{color:#c62828;font-size:.85em}
"""

OFFSET_SIGN = (
    "Offsets are in frames of 1/25 s. <b>Positive = the audio leads</b> (is early): the "
    "sound of frame t is heard at frame t − offset. A clip whose audio was muxed 200 ms "
    "late reports −5; <code>synccurate fix</code> shifts each clip's audio by its offset."
)


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "–"


def _value(value, digits: int = 3) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if not np.isfinite(number) else f"{number:.{digits}f}"


def _clip_link(root, path: str) -> str:
    """The clip's path, linked to its file."""
    return f'<a href="{_e(filtering.clip_path(root, path).as_uri())}">{_e(path)}</a>'


def _section_totals(s: dict) -> str:
    rows = [
        ("clips", f"{s['n_clips']:,}"),
        ("scored ok", f"{s['n_ok']:,} ({_pct(s['n_ok'], s['n_clips'])})"),
        ("hours of video", f"{s['hours']:,.2f}"),
        ("model(s)", _listing(s["models"])),
        ("face detector(s)", _listing(s["face_detectors"])),
        ("files read", f"{s['files']:,}"),
    ]
    if s["duplicates_dropped"]:
        rows.append(("older rows of re-scored clips (dropped)", f"{s['duplicates_dropped']:,}"))
    return f"<h2>Totals</h2>{_facts_table(rows, 'totals')}"


def _facts_table(rows: list[tuple[str, str]], table_id: str) -> str:
    """A two-column table of (name, HTML value) rows: the totals at the top of a page."""
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table id="{table_id}">{body}</table>'


def _listing(counts: dict) -> str:
    """{name: count} as "name (count), …" ("–" when empty)."""
    return ", ".join(f"{_e(k)} ({v:,})" for k, v in counts.items()) or "–"


def _section_status(s: dict) -> str:
    rows = "".join(
        f'<tr data-status="{_e(k)}"><td>{_e(k)}</td><td class="n">{v:,}</td>'
        f'<td class="n">{_pct(v, s["n_clips"])}</td></tr>'
        for k, v in s["statuses"].items()
    )
    out = (
        f"<h2>Status</h2><table><tr><th>status</th><th>clips</th><th>share</th></tr>{rows}</table>"
    )
    if s["errors"]:
        errors = "".join(
            f"<tr><td>{_e(g['status'])}</td><td>{_e(g['kind'])}</td>"
            f'<td class="n">{g["clips"]:,}</td><td class="muted">{_e(g["example"])}</td></tr>'
            for g in s["errors"]
        )
        more = (
            f'<p class="muted">{s["errors_left_off"]:,} more clips in rarer kinds.</p>'
            if s["errors_left_off"]
            else ""
        )
        out += (
            "<h3>Why clips were not scored</h3><table><tr><th>status</th><th>error kind "
            "(path removed, numbers as N)</th><th>clips</th><th>example</th></tr>"
            f"{errors}</table>{more}"
        )
    return out


def _median_mark(median_offset: float | None) -> tuple:
    """The red line at the median offset, drawn only when it is not 0 (a shifted data set)."""
    if median_offset in (None, 0):
        return ()
    return ((median_offset, f"median {median_offset:+g}", "#d33"),)


def _histogram_figure(
    metric: str, hist: dict, *, integer: bool = False, marks: tuple = (), rows: str = "clips"
) -> str:
    """A histogram's bars with a caption: what it counts, how many `rows`, median, 5–95 %."""
    label = LABELS.get(metric, metric)
    if hist["n"]:
        chart = svg_bars(hist, integer=integer, marks=marks)
        caption = (
            f"{label} — {hist['n']:,} {rows}; median "
            f"{hist['median']:.3g}, 5–95 %: {hist['p5']:.3g} … {hist['p95']:.3g}"
        )
    else:
        chart, caption = '<p class="muted">no values</p>', label
    return f'<figure data-metric="{metric}">{chart}<figcaption>{_e(caption)}</figcaption></figure>'


def _section_distributions(s: dict) -> str:
    t = s["thresholds"]["defaults"]
    marks = {
        "prob_at_offset": ((t["min_prob"], f"filter ≥ {t['min_prob']:g}", "#d33"),),
        "offscreen_ratio": ((t["max_offscreen"], f"filter ≤ {t['max_offscreen']:g}", "#d33"),),
    }
    figures = []
    for metric, hist in s["histograms"].items():
        integer = metric == "offset_frames"
        mark = _median_mark(s["median_offset"]) if integer else marks.get(metric, ())
        figures.append(_histogram_figure(metric, hist, integer=integer, marks=mark))
    callout = ""
    if s["median_offset"] not in (None, 0):
        callout = (
            f'<p class="callout" id="median-offset">The median offset of the data set is '
            f"<b>{s['median_offset']:+g} frames</b>, not 0: the data set may be shifted as a "
            "whole (e.g. audio muxed with a constant delay). <code>synccurate fix</code> "
            "repairs every clip by its own offset.</p>"
        )
    edge = ""
    if s["at_search_edge"]:
        edge = (
            f"<p>{s['at_search_edge']:,} ok clips have their offset at the search edge "
            f"(|offset| = max offset); their true offset may lie beyond.</p>"
        )
    return (
        f"<h2>Distributions</h2><p>{OFFSET_SIGN}</p>{callout}{edge}"
        f'<div class="grid">{"".join(figures)}</div>'
    )


def _section_thresholds(s: dict) -> str:
    t = s["thresholds"]
    d = t["defaults"]
    if not any(t["prob"]["alone"]) and not any(t["offscreen"]["alone"]):
        return (
            "<h2>Thresholds</h2><p class='note'>No ok clip has a probability or an off-screen "
            "ratio (every clip failed, or a distance model scored the table), so the filter's "
            "thresholds do not apply.</p>"
        )
    charts = []
    for key, default, label, other in (
        ("prob", d["min_prob"], "minimum probability (keep ≥)", "off-screen"),
        ("offscreen", d["max_offscreen"], "maximum off-screen ratio (keep ≤)", "probability"),
    ):
        curve = t[key]
        at = curve["thresholds"].index(default)
        charts.append(
            "<figure>"
            + svg_lines(
                curve["thresholds"],
                [
                    (curve["with_defaults"], "solid", f"with the {other} default"),
                    (curve["alone"], "dashed", "this rule alone"),
                ],
                marks=(
                    (default, f"default {default:g}: {curve['with_defaults'][at]:.1%}", "#d33"),
                ),
                x_label=label,
                y_label="kept share of all clips",
            )
            + f"<figcaption>Kept share of all {t['total']:,} clips as the {label} moves."
            "</figcaption>"
            "</figure>"
        )
    grid = t["grid"]
    head = "".join(f"<th>≥ {p:g}</th>" for p in grid["prob"])
    body = ""
    for o, row in zip(grid["offscreen"], grid["kept_fraction"], strict=True):
        cells = "".join(
            f'<td class="n{" cur" if p == d["min_prob"] and o == d["max_offscreen"] else ""}">'
            f"{v:.1%}</td>"
            for p, v in zip(grid["prob"], row, strict=True)
        )
        body += f"<tr><th>≤ {o:g}</th>{cells}</tr>"
    return (
        f"<h2>Thresholds</h2><p>With the <code>synccurate filter</code> defaults "
        f"(probability ≥ {d['min_prob']:g}, off-screen ≤ {d['max_offscreen']:g}) "
        f'<b id="kept-at-defaults">{t["kept_at_defaults"]:,} of {t["total"]:,} clips '
        f"({t['kept_fraction_at_defaults']:.1%})</b> are kept. {t['near_prob']:,} ok clips "
        f"have a probability within ±{t['near']:g} of {d['min_prob']:g}, and "
        f"{t['near_offscreen']:,} an off-screen ratio within ±{t['near']:g} of "
        f"{d['max_offscreen']:g}: they flip with a small change of threshold.</p>"
        f'<div class="grid">{"".join(charts)}</div>'
        "<h3>Kept share for both thresholds</h3><table><tr><th>off-screen \\ probability</th>"
        f"{head}</tr>{body}</table>"
    )


def _section_banner(s: dict) -> str:
    """The warning that opens a page built from rows synthetic-only weights scored on real
    clips (this table's or the reference's); "" when there are none."""
    tables = [("this table", s["synthetic_on_real"])]
    if s.get("comparison"):
        tables.append(("the reference table", s["comparison"]["reference_synthetic_on_real"]))
    found = [
        f"{_e(name)}: <b>{c['rows']:,} of {c['of']:,} rows</b> "
        f"({_e(', '.join(c['models']) or 'unknown model')})"
        for name, c in tables
        if c["rows"]
    ]
    if not found:
        return ""
    return (
        '<div class="banner" id="synthetic-banner" role="alert"><b>These numbers mean nothing '
        "for the rows scored by weights trained on synthetic clips only.</b> "
        f"{'; '.join(found)} were scored that way on clips that are not "
        "<code>synccurate synth</code> clips. Such weights have only seen drawn faces and a "
        "synthetic voice: on real footage their offsets, probabilities and off-screen ratios "
        "are noise, and so is everything on this page built from them — the histograms, the "
        "kept shares at the thresholds, the worst clips, the drift, the per-model means and "
        "the comparison. Affected columns: "
        + ", ".join(f"<code>{c}</code>" for c in MEANINGLESS_COLUMNS)
        + " (and <code>face_ratio</code>, <code>face_px</code>, <code>track_jitter</code>, "
        "<code>frozen_ratio</code> and <code>yaw_deg</code> when a clip shows several faces: "
        "the track is chosen by sync). Not affected: "
        + ", ".join(f"<code>{c}</code>" for c in UNAFFECTED_COLUMNS)
        + ". <code>synccurate filter</code> and <code>fix</code> refuse such a table without "
        "<code>--allow-synthetic-weights</code>. Score real footage with real weights "
        "(<code>--model syncnet-v2</code>, or IC-SyncNet trained as in docs/train-real.md).</div>"
    )


def _model_table(entries: list[dict], table_id: str = "") -> str:
    """Per model: clips, ok clips and mean ± sd (n) of each metric any model has."""
    metrics = [m for m in compare.MODEL_METRICS if any(m in e["metrics"] for e in entries)]
    head = "".join(
        f"<th>{_e(compare.MODEL_METRICS[m][0])}<br><span class='muted'>"
        f"{_e(compare.MODEL_METRICS[m][1])}</span></th><th>n</th>"
        for m in metrics
    )
    body = ""
    for entry in entries:
        flagged = (
            f' <span class="warn">({entry["synthetic_on_real"]:,} synthetic weights on real)</span>'
            if entry.get("synthetic_on_real")
            else ""
        )
        cells = "".join(
            f'<td class="n" data-metric="{m}">{compare.format_spread(entry["metrics"].get(m))}'
            f'</td><td class="n">{entry["metrics"].get(m, {}).get("n", 0):,}</td>'
            for m in metrics
        )
        body += (
            f'<tr data-model="{_e(entry["model"])}"><td>{_e(entry["model"])}{flagged}</td>'
            f'<td class="n">{entry["clips"]:,}</td><td class="n">{entry["ok"]:,}</td>{cells}</tr>'
        )
    table_id = f' id="{table_id}"' if table_id else ""
    return f"<table{table_id}><tr><th>model</th><th>clips</th><th>ok</th>{head}</tr>{body}</table>"


SPREAD_NOTE = (
    "mean ± standard deviation over the ok clips that have the metric; the standard deviation "
    "is the sample one (n − 1 in the denominator), n the clips it is taken over. |offset| is "
    "in frames, whatever the sign."
)


def _section_models(s: dict) -> str:
    entries = s["per_model"]
    if not entries:
        return ""
    lines = "\n".join(compare.model_line(e) for e in entries)
    return (
        f"<h2>Per model</h2><p>Per value of the <code>model</code> column: {SPREAD_NOTE}</p>"
        + _model_table(entries, "per-model")
        + f'<pre id="model-lines">{_e(lines)}</pre>'
    )


CLIP_DIGITS = {"offset_frames": 0, "abs_offset": 0}  # one clip's offsets are whole frames


def _signed(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def _section_comparison(s: dict, source: str) -> str:
    c = s.get("comparison")
    if not c:
        return ""
    n = c["counts"]
    ambiguous = ""
    if n["ambiguous_paths"]:
        ambiguous = (
            f" {n['ambiguous_paths']:,} paths appear more than once in a table (the same "
            "relative path under two roots) and are left out of the matching: "
            f"{n['ambiguous_here']:,} rows of this table and {n['ambiguous_reference']:,} of "
            "the reference."
        )
    models = ""
    if c["model_pairs"] and not c["same_models"]:
        pairs = ", ".join(
            f"{_e(p['model'])} | {_e(p['reference_model'])} ({p['clips']:,})"
            for p in c["model_pairs"]
        )
        models = (
            f'<p class="note">The matched clips were scored by different models (this | '
            f"reference: {pairs}): their numbers lie on different scales.</p>"
        )
    out = [
        f'<h2 id="comparison">Compared with the reference</h2><p>This table: '
        f"<code>{_e(source)}</code>; reference: <code>{_e(c['reference_label'])}</code>. "
        "Clips are matched by <code>path</code>, the clip's path relative to the folder it was "
        "scored under, exactly (extension included; the roots are ignored, so "
        "<code>generated/a.mp4</code> matches <code>real/a.mp4</code>). "
        f'<b id="match-counts">{n["matched"]:,} clips are in both tables '
        f"({n['both_ok']:,} ok in both), {n['only_here']:,} only in this table, "
        f"{n['only_reference']:,} only in the reference</b>.{ambiguous}</p>{models}",
        "<h3>Per-model means of each table</h3>"
        f"<p>Each over all its own ok clips, matched or not: {SPREAD_NOTE}</p>"
        '<div class="grid">'
        f"<figure><figcaption>this table</figcaption>{_model_table(c['per_model'])}</figure>"
        f"<figure><figcaption>reference</figcaption>"
        f"{_model_table(c['reference_per_model'], 'reference-per-model')}</figure></div>",
    ]
    if c["differences"]:
        rows = "".join(
            f'<tr data-metric="{m}"><td>{_e(compare.DIFFERENCE_METRICS[m][0])}</td>'
            f'<td class="n">{d["n"]:,}</td><td class="n">{_value(d["mean_here"])}</td>'
            f'<td class="n">{_value(d["mean_reference"])}</td>'
            f'<td class="n">{compare.format_spread(d, signed=True)}</td>'
            f'<td class="n">{d["higher_here"]:,}</td><td class="n">{d["lower_here"]:,}</td>'
            f'<td class="n">{d["equal"]:,}</td></tr>'
            for m, d in c["differences"].items()
        )
        out.append(
            "<h3>Per-clip differences</h3><p>For the clips ok in both tables, "
            "Δ = this table − the reference, clip by clip; mean ± sample standard deviation "
            "of Δ over the n clips that have the metric in both. A lower LSE-D, a higher "
            "LSE-C or P(sync) and a smaller |offset| are better.</p>"
            '<table id="differences"><tr><th>metric</th><th>n</th><th>mean here</th>'
            "<th>mean in the reference</th><th>Δ mean ± sd</th><th>higher here</th>"
            f"<th>lower here</th><th>equal</th></tr>{rows}</table>"
        )
    else:
        out.append("<p class='muted'>No clip is ok in both tables: no per-clip differences.</p>")
    if c["clips"]:
        metrics = list(c["differences"])
        head = "".join(
            f"<th>{_e(compare.DIFFERENCE_METRICS[m][0])}<br>here / ref / Δ</th>" for m in metrics
        )
        body = "".join(
            f'<tr data-path="{_e(clip["path"])}"><td>{_e(clip["path"])}</td>'
            + "".join(
                f'<td class="n">{_value(clip["metrics"][m]["here"], CLIP_DIGITS.get(m, 3))} / '
                f"{_value(clip['metrics'][m]['reference'], CLIP_DIGITS.get(m, 3))} / "
                f"<b>{_signed(clip['metrics'][m]['delta'], CLIP_DIGITS.get(m, 3))}</b></td>"
                for m in metrics
            )
            + "</tr>"
            for clip in c["clips"]
        )
        key = compare.DIFFERENCE_METRICS[c["key_metric"]][0]
        out.append(
            f'<h3 id="matched-clips">Matched clips that lose most on {_e(key)} '
            f"({len(c['clips'])} of {c['clips_total']:,})</h3>"
            f'<table id="clip-differences"><tr><th>clip</th>{head}</tr>{body}</table>'
        )
    for key, title, count in (
        ("only_here", "Only in this table", n["only_here"]),
        ("only_reference", "Only in the reference", n["only_reference"]),
    ):
        if count:
            shown = ", ".join(f"<code>{_e(p)}</code>" for p in c[key])
            if count > len(c[key]):
                shown += f" and {count - len(c[key]):,} more" if shown else "not listed"
            out.append(f'<p id="{key}">{title} ({count:,}): {shown}.</p>')
    return "".join(out)


def _section_drift(s: dict) -> str:
    d = s["drift"]
    head = '<h2 id="drift">Offset over time</h2>'
    if not d["columns"]:
        return (
            head + "<p class='muted'>This table has no drift columns: it was scored before "
            "synccurate measured the offset over time.</p>"
        )
    intro = (
        f"{head}<p>Long clips are cut into stretches (<code>score --segment-seconds</code>, "
        "default 10 s); the offsets of the confident stretches give a drift, a robust line "
        "through them (<b>+ = the audio leads more and more</b> as the clip goes on), its "
        "residual (the median distance of the stretch offsets from the line: a drift is real "
        "when it is large against its residual) and the steps, where the offset jumps by 2 "
        f'frames or more (an edit). Of {d["ok"]:,} ok clips, <b id="drift-measured">'
        f"{d['measured']:,} have a drift</b>, {d['unmeasured']:,} have none (too short, or "
        f"too few confident stretches) and {d['stepping']:,} step their offset. "
        "<code>filter --max-drift-ms-per-min</code> / <code>--max-offset-spread</code> drop "
        "such clips; <code>fix</code> resamples a drifting clip and skips one that steps.</p>"
    )
    hist = d["histogram"]
    if hist["n"]:
        limit = hist["edges"][-1]
        beyond = f"; {hist['beyond']:,} beyond ±{limit:g} in the end bars" if hist["beyond"] else ""
        caption = (
            f"{LABELS['drift_ms_per_min']} — {hist['n']:,} clips; median {hist['median']:+.3g}, "
            f"5–95 %: {hist['p5']:+.3g} … {hist['p95']:+.3g}{beyond}"
        )
        intro += (
            f'<div class="grid"><figure data-metric="drift_ms_per_min">'
            f"{svg_bars(hist, marks=((0.0, '0', '#888'),))}<figcaption>{_e(caption)}"
            "</figcaption></figure></div>"
        )

    def range_text(clip: dict) -> str:
        low, high = clip["offset_min"], clip["offset_max"]
        if low is None or high is None:
            return "–"
        return f"{low:+.0f} … {high:+.0f}" if low != high else f"{low:+.0f}"

    def at_text(clip: dict) -> str:
        times = clip.get("offset_step_at_s")
        return ", ".join(f"{t:.1f}" for t in times) if times else "–"

    head_row = (
        "<tr><th>clip</th><th>drift (ms/min)</th><th>residual (ms)</th><th>over the clip (ms)"
        "</th><th>offset range (frames)</th><th>steps</th><th>steps at (s)</th></tr>"
    )
    out = [intro]
    for key, name, title in (
        ("largest", "largest-drift", "Largest drift (|drift_ms_per_min|)"),
        ("steps", "offset-steps", "Clips whose offset steps"),
    ):
        item = d[key]
        body = "".join(
            f'<tr data-path="{_e(c["path"])}"><td>{_clip_link(c["root"], c["path"])}</td>'
            f'<td class="n">{_signed(c["drift_ms_per_min"], 1)}</td>'
            f'<td class="n">{_value(c["drift_residual_ms"], 1)}</td>'
            f'<td class="n">{_signed(c["across_clip_ms"], 1)}</td>'
            f'<td class="n">{range_text(c)}</td>'
            f'<td class="n">{"–" if c["offset_steps"] is None else c["offset_steps"]}</td>'
            f"<td>{at_text(c)}</td></tr>"
            for c in item["clips"]
        )
        shown = f"{len(item['clips'])} of {item['total']:,}"
        content = (
            f'<table id="{name}">{head_row}{body}</table>' if body else "<p class='muted'>none</p>"
        )
        out.append(f"<h3>{_e(title)} ({shown})</h3>{content}")
    return "".join(out)


def _worst_row(row: pd.Series, lists: dict | None, thumb: tuple[str | None, str] | None) -> str:
    file = filtering.clip_path(row.get("root"), str(row["path"]))
    if thumb and thumb[0]:
        picture = f'<img class="thumb" src="{thumb[0]}" alt="middle frame" data-thumbnail="frame">'
    else:
        why = thumb[1] if thumb else "thumbnails off"
        picture = (
            '<svg class="placeholder" width="96" height="54" '
            f'data-thumbnail="placeholder"><title>{_e(why)}</title>'
            '<rect width="96" height="54" fill="#eee"/><text x="48" y="31" font-size="10" '
            'text-anchor="middle" fill="#888">no frame</text></svg>'
        )
    offset = row.get("offset_frames")
    offset_text = "–" if pd.isna(offset) else f"{int(offset):+d}" if offset else "0"
    profile = (lists or {}).get("profile")
    half = (len(profile) - 1) // 2 if profile else 0
    reasons = ", ".join(row["reasons"]) or "kept"
    extra = "".join(
        f'<td class="n">{_value(row.get(c), 2)}</td>' for c in ("lse_c", "lse_d") if c in row
    )
    profile_plot = sparkline(
        profile, x0=-half, mark=None if pd.isna(offset) else offset, what="mean S per offset"
    )
    p_t_plot = sparkline((lists or {}).get("p_t"), fixed=(0, 1), what="p_t")
    return (
        f"<tr><td>{picture}</td>"
        f'<td><a href="{_e(file.as_uri())}">{_e(row["path"])}</a></td>'
        f'<td class="n">{offset_text}</td><td class="n">{_value(row.get("prob_at_offset"))}</td>'
        f'<td class="n">{_value(row.get("offscreen_ratio"))}</td>'
        f'<td class="n">{_value(row.get("face_ratio"), 2)}</td>'
        f'<td class="n">{_value(row.get("silence_ratio"), 2)}</td>{extra}<td>{_e(reasons)}</td>'
        f"<td>{profile_plot}</td><td>{p_t_plot}</td></tr>"
    )


def _section_worst(s: dict, rows: pd.DataFrame, lists: dict, thumbs: dict, positions: dict) -> str:
    out = [
        "<h2>Worst clips</h2><p>Per clip: its middle frame, the link to the file, the filter's "
        "verdict at the defaults, the mean similarity per offset (<i>profile</i>, red line = "
        "the offset found) and the per-window probability <i>p_t</i> (grey line = 0.5).</p>"
    ]
    extra = "".join(f"<th>{c}</th>" for c in ("lse_c", "lse_d") if c in rows.columns)
    head = (
        "<tr><th>frame</th><th>clip</th><th>offset</th><th>prob</th><th>off-screen</th>"
        f"<th>face</th><th>silence</th>{extra}<th>filter</th><th>profile</th><th>p_t</th></tr>"
    )
    for name, item in s["worst"].items():
        body = []
        for position in positions[name]:
            row = rows.loc[position]
            file = str(filtering.clip_path(row.get("root"), str(row["path"])))
            key = (int(row["_file"]), int(row["_row"]))
            body.append(_worst_row(row, lists.get(key), thumbs.get(file)))
        shown = f"{len(body)} of {item['total']:,}"
        content = f"<table>{head}{''.join(body)}</table>" if body else "<p class='muted'>none</p>"
        out.append(f'<h3 id="{name}">{_e(item["title"])} ({shown})</h3>{content}')
    return "".join(out)


def render(
    s: dict, source: str, rows: pd.DataFrame, lists: dict, thumbs: dict, positions: dict
) -> str:
    """The page; `rows` are the table rows of the worst lists (by table position)."""
    return _page(
        s,
        source,
        _section_banner(s)
        + _section_totals(s)
        + _section_models(s)
        + _section_comparison(s, source)
        + _section_status(s)
        + _section_distributions(s)
        + _section_drift(s)
        + _section_thresholds(s)
        + _section_worst(s, rows, lists, thumbs, positions),
    )


def _page(s: dict, source: str, body: str, heading: str = "synccurate report") -> str:
    """The self-contained page around `body`, with the summary `s` embedded as JSON (its
    "_" keys, for the renderer only, left out)."""
    data = {k: v for k, v in s.items() if not k.startswith("_")}
    payload = json.dumps(data, allow_nan=False, separators=(",", ":")).replace("</", "<\\/")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{_e(heading)} — {_e(Path(source).name)}</title><style>{CSS}</style></head>"
        f"<body><h1>{_e(heading)}</h1><p class='muted'>{_e(source)} · generated "
        f"{_e(s['generated_at'])}</p>{body}"
        f'<script type="application/json" id="summary">{payload}</script></body></html>\n'
    )


# --- segments tables --------------------------------------------------------------------
# A segments folder (`score --segments`) or the filter's output of one: one row per clip ×
# speaker segment, plus one row without a segment for a clip that could not be scored.
# Its page answers what a data set built with `cut` will hold: how many hours, of which
# lengths, why segments end, at which offsets, and which clips it comes from.

SEGMENT_LENGTH_BIN_SECONDS = 1.0  # one bar per second of segment length
KEPT_BY_DEFAULTS = "the filter defaults"
KEPT_BY_KEPT_OUTPUT = "the filter's kept output (this table)"
KEPT_BY_REJECTED_OUTPUT = "the filter's rejected output (this table: none kept)"
END_REASON_MEANINGS = {
    "shot_cut": "the shot changed",
    "face_lost": "the face left the picture or was lost",
    "other_speaker": "another face, or a voice not this face's, went on",
    "silence": "a pause longer than the bridged gap",
    "max_length": "split at the longest segment length",
    "clip_end": "the clip ended",
}


def kept_segments(table: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Which rows the filter keeps, and by what. A table `synccurate filter` wrote is its own
    verdict, whatever thresholds it ran with (its kept output holds only kept rows, its
    rejected output only rejected ones); any other table is judged by the filter's default
    rules, as the scores report's kept share is."""
    if filtering.REJECT_REASON_COLUMN in table.columns:
        return np.zeros(len(table), dtype=bool), KEPT_BY_REJECTED_OUTPUT
    if filtering.REFERENCE_COLUMN in table.columns:
        return is_ok(table), KEPT_BY_KEPT_OUTPUT
    failures = filtering.rule_failures(table, filtering.FilterRules())
    failed = np.any(np.stack(list(failures.values())), axis=0)
    return is_ok(table) & ~failed, KEPT_BY_DEFAULTS


def segment_lengths_histogram(lengths: np.ndarray) -> dict:
    """Lengths in one-second bars from 0 to the cut's longest segment (MAX_SEGMENT_SECONDS,
    or the longest found when a table was cut with a larger one)."""
    finite = lengths[np.isfinite(lengths)]
    longest = float(finite.max()) if len(finite) else 0.0
    bars_to_longest = float(np.ceil(longest / SEGMENT_LENGTH_BIN_SECONDS))
    high = max(MAX_SEGMENT_SECONDS, bars_to_longest * SEGMENT_LENGTH_BIN_SECONDS)
    return histogram(lengths, 0.0, high, int(round(high / SEGMENT_LENGTH_BIN_SECONDS)))


def end_reason_counts(reasons: np.ndarray, lengths: np.ndarray) -> dict[str, dict]:
    """{end reason: {segments, hours}} in END_REASONS order (zeros included), then any
    other value found (a newer pipeline's reason, or "missing"), by name."""
    found = pd.DataFrame({"reason": reasons, "seconds": lengths})
    found["reason"] = found["reason"].replace("", "missing")
    grouped = found.groupby("reason", sort=True)["seconds"].agg(["size", "sum"])
    names = [*END_REASONS, *sorted(set(grouped.index) - set(END_REASONS))]
    return {
        name: {
            "segments": int(grouped["size"].get(name, 0)),
            "hours": float(grouped["sum"].get(name, 0.0)) / 3600,
        }
        for name in names
    }


def top_clips(per_clip: pd.DataFrame, by: list[str], n: int) -> list[dict]:
    """The n clips first by the columns `by` (largest first; ties in table order)."""
    ordered = per_clip.sort_values(by, ascending=False, kind="stable").head(n)
    return [
        {
            "root": str(row.root),
            "path": str(row.path),
            "segments": int(row.segments),
            "hours": float(row.seconds) / 3600,
            "kept": int(row.kept),
        }
        for row in ordered.itertuples(index=False)
    ]


def summarise_segments(table: pd.DataFrame, files: int, top: int = 10) -> dict:
    """Everything the segments page shows, as JSON-serialisable numbers.

    A segment is an ok row with a `segment` number; the other rows are clips that could not
    be scored. The keys n_clips / n_ok / thresholds.kept_at_defaults, per_model,
    synthetic_on_real and comparison are what `synccurate report` prints for any table:
    here they count segments."""
    is_segment = is_ok(table) & np.isfinite(numeric(table, "segment"))
    kept, kept_by = kept_segments(table)
    kept &= is_segment
    lengths = numeric(table, "end_s") - numeric(table, "start_s")
    offsets = numeric(table, "offset_frames")[is_segment]
    offsets_histogram, max_offset = offset_histogram(offsets)
    finite_offsets = offsets[np.isfinite(offsets)]
    per_clip = (
        pd.DataFrame(
            {
                "root": _strings(table, "root")[is_segment],
                "path": _strings(table, "path")[is_segment],
                "seconds": np.nan_to_num(lengths[is_segment]),
                "kept": kept[is_segment],
            }
        )
        .groupby(["root", "path"], sort=False)
        .agg(segments=("seconds", "size"), seconds=("seconds", "sum"), kept=("kept", "sum"))
        .reset_index()
    )
    not_scored = table.loc[~is_segment]
    n_segments = int(is_segment.sum())
    return {
        "kind": "segments",
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": files,
        "segments": n_segments,
        "clips": len(per_clip),
        "not_scored": _counts(not_scored.drop_duplicates(KEY), "status", missing="missing"),
        "hours": float(np.nansum(lengths[is_segment]) / 3600),
        "kept": {
            "segments": int(kept.sum()),
            "hours": float(np.nansum(lengths[kept]) / 3600),
            "by": kept_by,
        },
        "models": _counts(table.loc[is_segment], "model"),
        "lengths": segment_lengths_histogram(lengths[is_segment]),
        "end_reasons": end_reason_counts(
            _strings(table, "end_reason")[is_segment], np.nan_to_num(lengths[is_segment])
        ),
        "offsets": offsets_histogram,
        "max_offset": max_offset,
        "median_offset": float(np.median(finite_offsets)) if len(finite_offsets) else None,
        "most_segments": top_clips(per_clip, ["segments", "seconds"], top),
        "most_hours": top_clips(per_clip, ["seconds", "segments"], top),
        "n_clips": n_segments,
        "n_ok": n_segments,
        "thresholds": {"kept_at_defaults": int(kept.sum())},
        "per_model": [],
        "synthetic_on_real": synthetic_on_real(table),
        "comparison": None,
    }


def _hours(hours: float) -> str:
    return f"{hours:,.2f} h"


def _section_segment_totals(s: dict) -> str:
    kept = s["kept"]
    rows = [
        ("segments", f"{s['segments']:,}"),
        ("clips with segments", f"{s['clips']:,}"),
        ("hours of segments", _hours(s["hours"])),
        (
            f"kept by {_e(kept['by'])}",
            f"{kept['segments']:,} segments ({_pct(kept['segments'], s['segments'])}), "
            f"{_hours(kept['hours'])}",
        ),
        ("model(s)", _listing(s["models"])),
        ("clips not scored (no segments), by status", _listing(s["not_scored"])),
        ("files read", f"{s['files']:,}"),
    ]
    return (
        "<h2>Totals</h2><p>One row per speaker segment (<code>score --segments</code>); "
        "<code>cut</code> turns each into a clip. A clip scored ok in which no face spoke "
        "long enough has no row, so it is not counted here. Kept: the segments "
        "<code>filter</code> keeps at its defaults; for other thresholds, report the "
        "<code>filter SEGMENTS -o kept.parquet</code> output.</p>"
        + _facts_table(rows, "segment-totals")
    )


def _section_segment_distributions(s: dict) -> str:
    reasons = "".join(
        f'<tr data-reason="{_e(name)}"><td>{_e(name)}</td>'
        f"<td>{_e(END_REASON_MEANINGS.get(name, ''))}</td>"
        f'<td class="n">{item["segments"]:,}</td>'
        f'<td class="n">{_pct(item["segments"], s["segments"])}</td>'
        f'<td class="n">{item["hours"]:,.2f}</td></tr>'
        for name, item in s["end_reasons"].items()
    )
    figures = _histogram_figure(
        "segment_length_s", s["lengths"], rows="segments"
    ) + _histogram_figure(
        "offset_frames",
        s["offsets"],
        integer=True,
        marks=_median_mark(s["median_offset"]),
        rows="segments",
    )
    return (
        f"<h2>Lengths and offsets</h2><p>{OFFSET_SIGN} Each segment has its own offset, "
        f'which <code>cut</code> applies.</p><div class="grid">{figures}</div>'
        '<h2>Why segments end</h2><table id="end-reasons"><tr><th>end reason</th>'
        "<th>meaning</th><th>segments</th><th>share</th><th>hours</th></tr>"
        f"{reasons}</table>"
    )


def _section_top_clips(s: dict) -> str:
    out = ["<h2>Clips giving the most</h2>"]
    for key, title in (
        ("most_segments", "Most segments"),
        ("most_hours", "Most hours of segments"),
    ):
        body = "".join(
            f'<tr data-path="{_e(c["path"])}"><td>{_clip_link(c["root"], c["path"])}</td>'
            f'<td class="n">{c["segments"]:,}</td><td class="n">{c["hours"] * 60:,.2f}</td>'
            f'<td class="n">{c["kept"]:,}</td></tr>'
            for c in s[key]
        )
        content = (
            f'<table id="{key.replace("_", "-")}"><tr><th>clip</th><th>segments</th>'
            f"<th>minutes</th><th>kept segments</th></tr>{body}</table>"
            if body
            else "<p class='muted'>none</p>"
        )
        out.append(f"<h3>{title} ({len(s[key])} of {s['clips']:,} clips)</h3>{content}")
    return "".join(out)


def render_segments(s: dict, source: str) -> str:
    """The page of a segments table (`summarise_segments`)."""
    return _page(
        s,
        source,
        _section_segment_totals(s) + _section_segment_distributions(s) + _section_top_clips(s),
        heading="synccurate report: speaker segments",
    )


def write_segments_report(source: Path, output: Path, top: int = 10) -> dict:
    """load (every segment row of the latest run) → summarise → render → `output`."""
    summary = summarise_segments(read_segments(source), len(parquet_files(source)), top)
    _write_atomic(render_segments(summary, str(source)), output)
    return summary


def _write_atomic(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temp, default_file_mode())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def console_lines(summary: dict) -> list[str]:
    """What `synccurate report` prints besides the page: the per-model means as papers print
    them and, with a reference, the matching counts and the mean per-clip differences; for
    a segments table, its segments and hours, in all and kept."""
    lines = [compare.model_line(entry) for entry in summary["per_model"]]
    if summary.get("kind") == "segments":
        kept = summary["kept"]
        lines.append(
            f"{summary['segments']:,} segments of {summary['clips']:,} clips, "
            f"{_hours(summary['hours'])}; kept by {kept['by']}: {kept['segments']:,} segments, "
            f"{_hours(kept['hours'])}"
        )
    if summary.get("comparison"):
        lines += compare.difference_lines(summary["comparison"])
    flagged = summary["synthetic_on_real"]["rows"]
    if summary.get("comparison"):
        flagged += summary["comparison"]["reference_synthetic_on_real"]["rows"]
    if flagged:
        lines.append(
            f"WARNING: {flagged:,} rows were scored by synthetic-only weights on real clips: "
            "their numbers mean nothing (see the banner of the page)"
        )
    return lines


def _check_output(source: Path, output: Path) -> None:
    if source.is_dir() and Path(os.path.abspath(output)).is_relative_to(os.path.abspath(source)):
        raise ValueError(f"{output}: inside the scores folder {source}; write the report elsewhere")
    if same_file(source, output):
        raise ValueError(f"refusing to write the report over the scores table {source}")


def _attach_step_times(summary: dict, rows: pd.DataFrame, lists: dict) -> None:
    """`offset_step_at_s` (a list column, read for the listed clips only) into the drift lists."""
    positions = summary["_positions"]
    if not summary["drift"].get("columns"):
        return
    for key, name in (("largest", "largest_drift"), ("steps", "offset_steps")):
        for position, clip in zip(positions[name], summary["drift"][key]["clips"], strict=True):
            row = rows.loc[position]
            found = lists.get((int(row["_file"]), int(row["_row"])), {})
            times = found.get("offset_step_at_s")
            clip["offset_step_at_s"] = None if times is None else [float(t) for t in times]


def write_report(
    source: str | Path,
    output: str | Path,
    *,
    worst: int = 10,
    with_thumbnails: bool = True,
    reference: str | Path | None = None,
) -> dict:
    """load → summarise → figures → render → `output` (atomically); returns the summary.

    With `reference` (another scores table: the real clips of generated ones, another run),
    the page also compares the two (`compare.compare_tables`, clips matched by `path`).
    A segments table (`score --segments`, or the filter's output of one) gets a page of its
    own (`write_segments_report`; `worst` = clips in each list)."""
    source, output = Path(source), Path(output)
    _check_output(source, output)
    if is_segments_table(source):
        if reference is not None:
            raise ValueError(f"{source}: a segments table; --reference compares scores tables")
        return write_segments_report(source, output, worst)
    other = None
    if reference is not None:
        reference = Path(reference)
        _check_output(reference, output)
        other = load(reference)
    scores = load(source)
    labels = {"label": str(source), "reference_label": str(reference)}
    summary = summarise(scores, worst, other, **labels)
    positions = summary["_positions"]
    picked = sorted({p for items in positions.values() for p in items})
    rows = scores.table.iloc[picked].copy()
    rows.index = picked
    rows["reasons"] = filtering.reject_reasons(rows, filtering.FilterRules())
    lists = read_lists(scores, rows) if len(rows) else {}
    _attach_step_times(summary, rows, lists)
    files = [
        str(filtering.clip_path(r, str(p))) for r, p in zip(rows["root"], rows["path"], strict=True)
    ]
    thumbs = thumbnails(files) if with_thumbnails else {}
    _write_atomic(render(summary, str(source), rows, lists, thumbs, positions), output)
    return summary


__all__ = [
    "MEANINGLESS_COLUMNS",
    "Scores",
    "console_lines",
    "drift_summary",
    "error_kind",
    "load",
    "read_lists",
    "render",
    "summarise",
    "summarise_segments",
    "thumbnail",
    "write_report",
]
