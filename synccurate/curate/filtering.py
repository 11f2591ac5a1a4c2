"""Filter a scores table into kept and rejected clips (SPEC §9, paper Appendix E).

The library behind `synccurate filter`:

- `FilterRules` holds the thresholds, `reject_reasons` lists why each row fails them,
  `apply_filter` splits the table into kept and rejected (with a `reject_reason` column).
- `summarize` / `render_summary` describe what happened (counts per reason, the
  distributions of the three main metrics over the `ok` rows, and the offsets of the
  confident clips with their mode, the data set's own offset).
- `dataset_offset` is that mode; `resolve_reference` picks the offset that counts as
  "in sync" (0, the data set's offset, or a given one) for `filter` and `fix`.
- writing goes through `tables.write_table` (atomic, never over the input table);
  `kept_paths` gives the kept clips' absolute paths (for `--list`); `link_to` mirrors the
  kept clips into a folder of symlinks.

`mirror_paths` (the relative path a clip gets in an output folder) is shared with `fix`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np
import pandas as pd

from synccurate.io.files import same_file
from synccurate.store.readers import holds_segments, read_scores, read_segments

# Defaults (SPEC §9: the paper's recommended values are lost in its text; these are ours).
DEFAULT_MIN_PROB = 0.5
DEFAULT_MAX_OFFSCREEN = 0.2

REASON_LOW_PROB = "low_prob"
REASON_OFFSCREEN = "offscreen"
REASON_LARGE_OFFSET = "large_offset"
REASON_SILENCE = "silence"
REASON_EDGE = "at_search_edge"
REASON_LOW_LSE_C = "low_lse_c"
REASON_HIGH_LSE_D = "high_lse_d"
REASON_DRIFT = "drift"
REASON_OFFSET_SPREAD = "offset_spread"
REASON_SMALL_FACE = "small_face"
REASON_YAW = "yaw"
REASON_JITTER = "jitter"
REASON_LITTLE_SPEECH = "little_speech"
REASON_FROZEN = "frozen"
DEFAULT_MIN_LSE_C = 3.0  # SyncNet v2's confidence bar of LatentSync's data pipeline
STATUS_PREFIX = "status:"

REJECT_REASON_COLUMN = "reject_reason"
REFERENCE_COLUMN = "reference_offset"


@dataclass(frozen=True)
class FilterRules:
    """Thresholds of `synccurate filter`. A clip is kept when every rule passes.

    min_prob (default 0.5): keep when prob_at_offset >= min_prob.
        prob_at_offset = sigmoid(mean_t c_t / tau) has no bias term (SPEC §3), so 0.5 is
        exactly cos = 0, the model's own decision boundary between "this audio belongs to
        this mouth" and "it does not" — independent of the learned temperature tau. A clip
        that does not reach 0.5 even at its best offset shows no audio-visual evidence of
        the visible face speaking. It is the least arbitrary value; users curating a
        training set strictly may raise it (0.7 matches the chunk threshold of SPEC §7,
        which already decides which runs of frames count as on-screen).
    max_offscreen (default 0.2): keep when offscreen_ratio <= max_offscreen.
        The paper's examples of LRS2 videos with an off-screen speaker (narration, an
        interviewer, dubbing) are those with an off-screen ratio above 0.2. At 0.2 at most
        one frame in five is heard-but-not-seen speech (about 1 s of a 5 s clip), which a
        training pipeline sampling 5-frame windows tolerates; lower it for clean data.
    max_abs_offset (default None = no limit): reject when |offset_frames| > max_abs_offset.
        A large offset is not a defect by itself — `synccurate fix` repairs it (SPEC §9) —
        so there is no default limit. (LatentSync-style curation uses 6.)
    max_silence (default None = no limit): reject when silence_ratio > max_silence. Any
        mouth fits silence, so mostly-silent clips look "in sync" for free (SPEC §7).
    drop_at_search_edge (default False): reject when |offset| = K, the edge of the search
        window: the true offset may lie outside it. Off by default because such a clip is
        suspect rather than wrong; it is counted in the summary either way.
    reference_offset (default 0): the offset that counts as "in sync". max_abs_offset
        limits |offset_frames - reference_offset|. Set it to the data set's own offset
        (`dataset_offset`) when the whole data set is shifted against the model's
        training data (ModEFormer found LRS2 one frame off LRS3). The search edge stays
        |offset| = K: it is a property of the search window, not of the reference.
    min_lse_c (default 3.0) / max_lse_d (default None): for rows of a distance model
        (SyncNet v2: lse_c set, prob_at_offset null) these replace min_prob and
        max_offscreen, which such a model does not have (docs/models.md). 3 is LatentSync's
        bar (conf >= 3, with |offset| <= 6). Rows of probability models ignore them.
    max_drift_ms_per_min (default None = no limit): reject when |drift_ms_per_min| is
        larger: the offset changes over the clip (a recorder's clock, a resampled track),
        so one shift cannot put it all in sync. A clip too short to measure a drift (fewer
        than three confident stretches: drift_ms_per_min null) passes: nothing says it drifts.
    max_offset_spread (default None = no limit): reject when offset_max - offset_min, over
        the clip's confident stretches, is larger (frames): drift, an edit that stepped the
        offset, or stretches that disagree. A clip without such stretches passes this rule
        (its probability or LSE-C rule judges it).

    What curators filter on besides sync (all off by default; each judges the speaker's
    face, `face_track`). A row without the value passes the rule, as with the drift: the
    columns are empty in tables scored before they existed, and `yaw_deg` is empty for
    every detector without landmarks (`none`, `opencv`, `face-alignment`), so
    `max_abs_yaw` judges CenterFace rows only.
    min_face_px (None = no limit): reject when face_px (median face box height, source
        pixels) is smaller: too few pixels on the mouth (reason small_face).
    max_abs_yaw (None = no limit): reject when |yaw_deg| is larger: a profile view hides
        half of the mouth (reason yaw).
    max_jitter (None = no limit): reject when track_jitter (median box-centre motion a
        frame, in face heights) is larger: a shaky camera or a restless head (reason jitter).
    min_speech_ratio (None = no limit): reject when speech_ratio (voiced share of the
        frames) is smaller: any mouth fits silence, and music or noise is not speech
        (reason little_speech).
    max_frozen_ratio (None = no limit): reject when frozen_ratio (share of the face's
        frames that repeat the previous one) is larger: stutter, or a low-rate source
        made 25 fps (reason frozen).
    """

    min_prob: float = DEFAULT_MIN_PROB
    max_offscreen: float = DEFAULT_MAX_OFFSCREEN
    max_abs_offset: int | None = None
    max_silence: float | None = None
    drop_at_search_edge: bool = False
    reference_offset: int = 0
    min_lse_c: float = DEFAULT_MIN_LSE_C
    max_lse_d: float | None = None
    max_drift_ms_per_min: float | None = None
    max_offset_spread: int | None = None
    min_face_px: float | None = None
    max_abs_yaw: float | None = None
    max_jitter: float | None = None
    min_speech_ratio: float | None = None
    max_frozen_ratio: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_prob <= 1.0:
            raise ValueError(f"min_prob must lie in [0, 1], got {self.min_prob}")
        if not 0.0 <= self.max_offscreen <= 1.0:
            raise ValueError(f"max_offscreen must lie in [0, 1], got {self.max_offscreen}")
        if self.max_abs_offset is not None and self.max_abs_offset < 0:
            raise ValueError(f"max_abs_offset must be >= 0, got {self.max_abs_offset}")
        if self.max_silence is not None and not 0.0 <= self.max_silence <= 1.0:
            raise ValueError(f"max_silence must lie in [0, 1], got {self.max_silence}")
        for name in ("min_speech_ratio", "max_frozen_ratio"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        for name in ("min_face_px", "max_abs_yaw", "max_jitter"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")


# --- reading the table ------------------------------------------------------------------

REQUIRED_COLUMNS = ("root", "path", "status", "offset_frames", "prob_at_offset", "offscreen_ratio")


def load_scores(path: str | Path) -> pd.DataFrame:
    """Read a scores table (folder of parts or one file) and check it has what filtering needs.

    Reads through `readers.read_scores`, so a clip scored twice appears once (latest row);
    a segments table (`pipeline.segments`, key root, path, segment) through
    `readers.read_segments`, one row per segment, so the same rules judge each segment.
    """
    table = read_segments(path) if holds_segments(path) else read_scores(path)
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"{path}: not a scores table (missing columns: {', '.join(missing)})")
    return table


def numeric(table: pd.DataFrame, column: str) -> np.ndarray:
    """Column as float64 with NaN for missing values (handles nullable dtypes and pd.NA)."""
    if column not in table.columns:
        return np.full(len(table), np.nan)
    return pd.to_numeric(table[column], errors="coerce").astype("float64").to_numpy()


def _flag(table: pd.DataFrame, column: str) -> np.ndarray:
    if column not in table.columns:
        return np.zeros(len(table), dtype=bool)
    return table[column].astype("boolean").fillna(False).to_numpy(dtype=bool)


def is_ok(table: pd.DataFrame) -> np.ndarray:
    return (table["status"].astype("string").fillna("") == "ok").to_numpy(dtype=bool)


# --- the rules --------------------------------------------------------------------------


def rule_failures(table: pd.DataFrame, rules: FilterRules) -> dict[str, np.ndarray]:
    """Per rule that `rules` switches on, a boolean array: True where the row fails it.

    Keys in the order low_prob, offscreen, (low_lse_c, high_lse_d,) large_offset, silence,
    at_search_edge, drift, offset_spread, small_face, yaw, jitter, little_speech, frozen
    (only the rules that apply). Status is not looked at: `reject_reasons` handles rows
    that are not ok. A missing (NaN) metric fails the sync rules ("not >= P" is true for
    NaN) and passes the drift and curation rules (see FilterRules). Vectorised, so
    `synccurate report` can evaluate the rules on millions of rows.
    """
    prob = numeric(table, "prob_at_offset")
    offscreen = numeric(table, "offscreen_ratio")
    lse_c, lse_d = numeric(table, "lse_c"), numeric(table, "lse_d")
    distance_rows = np.isnan(prob) & ~np.isnan(lse_c)  # SyncNet v2: no probability by design
    with np.errstate(invalid="ignore"):
        failures = {
            REASON_LOW_PROB: ~distance_rows & ~(prob >= rules.min_prob),
            REASON_OFFSCREEN: ~distance_rows & ~(offscreen <= rules.max_offscreen),
        }
        if distance_rows.any():
            failures[REASON_LOW_LSE_C] = distance_rows & ~(lse_c >= rules.min_lse_c)
            if rules.max_lse_d is not None:
                failures[REASON_HIGH_LSE_D] = distance_rows & ~(lse_d <= rules.max_lse_d)
        if rules.max_abs_offset is not None:
            distance = np.abs(numeric(table, "offset_frames") - rules.reference_offset)
            failures[REASON_LARGE_OFFSET] = ~(distance <= rules.max_abs_offset)
        if rules.max_silence is not None:
            silence = numeric(table, "silence_ratio")
            failures[REASON_SILENCE] = ~(silence <= rules.max_silence)
        if rules.drop_at_search_edge:
            failures[REASON_EDGE] = _flag(table, "at_search_edge")
        if rules.max_drift_ms_per_min is not None:  # unmeasured (NaN) passes: see FilterRules
            drift = np.abs(numeric(table, "drift_ms_per_min"))
            failures[REASON_DRIFT] = drift > rules.max_drift_ms_per_min
        if rules.max_offset_spread is not None:
            spread = numeric(table, "offset_max") - numeric(table, "offset_min")
            failures[REASON_OFFSET_SPREAD] = spread > rules.max_offset_spread
        # what curators filter on besides sync: an empty value (NaN) passes (FilterRules)
        if rules.min_face_px is not None:
            failures[REASON_SMALL_FACE] = numeric(table, "face_px") < rules.min_face_px
        if rules.max_abs_yaw is not None:
            failures[REASON_YAW] = np.abs(numeric(table, "yaw_deg")) > rules.max_abs_yaw
        if rules.max_jitter is not None:
            failures[REASON_JITTER] = numeric(table, "track_jitter") > rules.max_jitter
        if rules.min_speech_ratio is not None:
            speech = numeric(table, "speech_ratio")
            failures[REASON_LITTLE_SPEECH] = speech < rules.min_speech_ratio
        if rules.max_frozen_ratio is not None:
            frozen = numeric(table, "frozen_ratio")
            failures[REASON_FROZEN] = frozen > rules.max_frozen_ratio
    return failures


def reject_reasons(table: pd.DataFrame, rules: FilterRules) -> pd.Series:
    """Per row, the list of reasons it fails `rules` (empty list = kept).

    A row whose status is not ok gets the single reason `status:<status>`: its metrics are
    missing or meaningless, so they are not judged. An ok row may collect several reasons,
    in the order low_prob, offscreen, large_offset, silence, at_search_edge. A missing
    (NaN) metric on an ok row fails its rule ("not >= P" is true for NaN).
    """
    status = table["status"].astype("string").fillna("missing").to_numpy(dtype=object)
    ok = status == "ok"
    checks = list(rule_failures(table, rules).items())

    reasons: list[list[str]] = []
    for i in range(len(table)):
        if not ok[i]:
            reasons.append([f"{STATUS_PREFIX}{status[i]}"])
        else:
            reasons.append([name for name, failed in checks if failed[i]])
    return pd.Series(reasons, index=table.index, dtype=object, name="reasons")


def apply_filter(table: pd.DataFrame, rules: FilterRules) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split `table` into (kept, rejected); both keep every column and the row order.

    Both get (or have replaced) the column `reference_offset`: rules.reference_offset, the
    offset the rules took as in sync. `rejected` gets one more column, `reject_reason`:
    the reasons joined with ',' (e.g. "low_prob,offscreen" or "status:no_face").
    """
    reasons = reject_reasons(table, rules)
    rejected_mask = reasons.map(bool).to_numpy(dtype=bool)
    kept = table.loc[~rejected_mask].copy()
    rejected = table.loc[rejected_mask].copy()
    for part in (kept, rejected):
        part[REFERENCE_COLUMN] = pd.array([rules.reference_offset] * len(part), dtype="Int64")
    rejected[REJECT_REASON_COLUMN] = pd.Series(
        [",".join(r) for r in reasons[rejected_mask]], index=rejected.index, dtype="string"
    )
    return kept, rejected


# --- the data set's own offset -----------------------------------------------------------


class DatasetOffset(NamedTuple):
    """`dataset_offset`'s answer."""

    offset: int | None  # mode of offset_frames over the confident clips; None when there are none
    n_confident: int
    distribution: dict[int, int]  # {offset: confident clips}, by offset


def confident_clips(
    table: pd.DataFrame, min_prob: float = DEFAULT_MIN_PROB, min_lse_c: float = DEFAULT_MIN_LSE_C
) -> tuple[np.ndarray, str]:
    """(mask, rule): the rows whose offset is trustworthy enough to estimate the data set's.

    A confident clip has status ok (every row when there is no status column), an
    offset, is not at the search edge (`at_search_edge`, when the column exists), and
    passes a confidence bar: prob_at_offset >= min_prob (the filter's default, 0.5) or,
    when no row has a prob_at_offset (distance models such as SyncNet v2 write none),
    lse_c >= min_lse_c (3). With neither value in the table no clip is confident.
    `rule` says in words which bar was used.
    """
    ok = is_ok(table) if "status" in table.columns else np.ones(len(table), dtype=bool)
    offset = numeric(table, "offset_frames")
    base = ok & np.isfinite(offset) & ~_flag(table, "at_search_edge")
    prob = numeric(table, "prob_at_offset")
    lse_c = numeric(table, "lse_c")
    with np.errstate(invalid="ignore"):
        if np.isfinite(prob).any():
            return base & (prob >= min_prob), f"prob_at_offset ≥ {min_prob:g}"
        if np.isfinite(lse_c).any():
            return base & (lse_c >= min_lse_c), f"lse_c ≥ {min_lse_c:g}"
    return np.zeros(len(table), dtype=bool), "no prob_at_offset or lse_c value"


def _mode(values: np.ndarray) -> int:
    """The most frequent offset; among equally frequent ones the one nearest the median of
    all values, then the smaller |offset|, then the positive one."""
    offsets, counts = np.unique(values, return_counts=True)
    modes = offsets[counts == counts.max()]
    median = float(np.median(values))
    return int(min(modes, key=lambda k: (abs(k - median), abs(k), -k)))


def dataset_offset(
    table: pd.DataFrame, min_prob: float = DEFAULT_MIN_PROB, min_lse_c: float = DEFAULT_MIN_LSE_C
) -> DatasetOffset:
    """The data set's own offset: the mode of offset_frames over its confident clips
    (`confident_clips`; ties: see `_mode`).

    An offset is always relative to the model's training data. A data set shifted as a
    whole (ModEFormer: LRS2 is one frame off LRS3 and VoxCeleb2) shows it as a peak of
    the offset histogram away from 0; `filter`/`fix` can treat that value as in sync.
    """
    mask, _ = confident_clips(table, min_prob, min_lse_c)
    values = numeric(table, "offset_frames")[mask].round().astype(int)
    if not len(values):
        return DatasetOffset(None, 0, {})
    offsets, counts = np.unique(values, return_counts=True)
    distribution = {int(k): int(c) for k, c in zip(offsets, counts, strict=True)}
    return DatasetOffset(_mode(values), len(values), distribution)


REFERENCES = ("zero", "dataset")


def resolve_reference(
    table: pd.DataFrame, relative_to: str = "zero", given: int | None = None
) -> tuple[int, str]:
    """(reference offset, how it was chosen) for `--offset-relative-to` / `--reference-offset`.

    relative_to "zero": 0 (SPEC §6 as is); "dataset": `dataset_offset(table)`; a `given`
    offset wins over "zero" and cannot be combined with "dataset".
    """
    if relative_to not in REFERENCES:
        raise ValueError(f"offsets are relative to one of {REFERENCES}, not {relative_to!r}")
    if given is not None and relative_to != "zero":
        raise ValueError("give --reference-offset N or --offset-relative-to dataset, not both")
    if given is not None:
        return int(given), "given"
    if relative_to == "zero":
        return 0, "zero"
    found = dataset_offset(table)
    _, rule = confident_clips(table)
    if found.offset is None:
        raise ValueError(
            f"no confident clip ({rule}, status ok, not at the search edge) to take the data "
            "set's offset from; give --reference-offset N instead"
        )
    return found.offset, f"the data set's offset: mode over {found.n_confident} confident clips"


# --- summary ----------------------------------------------------------------------------

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
METRICS = ("prob_at_offset", "offscreen_ratio", "offset_frames")


def _histogram(values: np.ndarray, metric: str) -> dict:
    if metric == "offset_frames":
        if len(values):
            low, high = int(np.floor(values.min())), int(np.ceil(values.max()))
        else:
            low, high = 0, 0
        edges = np.arange(low, high + 2) - 0.5  # one bin per integer offset
    else:
        edges = np.linspace(0.0, 1.0, 11)  # ten bins of 0.1 (both metrics live in [0, 1])
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def _distribution(values: np.ndarray, metric: str) -> dict:
    values = values[np.isfinite(values)]
    result: dict = {"n": int(len(values))}
    if len(values):
        result.update(
            min=float(values.min()),
            max=float(values.max()),
            mean=float(values.mean()),
            quantiles={f"{q:g}": float(np.quantile(values, q)) for q in QUANTILES},
        )
    else:
        result.update(min=None, max=None, mean=None, quantiles={f"{q:g}": None for q in QUANTILES})
    result["histogram"] = _histogram(values, metric)
    return result


def summarize(
    table: pd.DataFrame,
    kept: pd.DataFrame,
    rejected: pd.DataFrame,
    rules: FilterRules | None = None,
) -> dict:
    """Counts and metric distributions, JSON-serialisable.

    Keys: total, ok, kept, rejected, reasons ({reason: rows with that reason}; a row with
    several reasons counts once under each), only_reason ({reason: rows rejected for that
    reason alone}), statuses ({status: rows}), at_search_edge (ok rows with |offset| = K),
    rules (when given), distributions ({metric: {n, min, max, mean, quantiles, histogram}}
    over the ok rows of `table` for prob_at_offset, offscreen_ratio and offset_frames),
    confident_offsets (offset_frames over the `confident_clips`: rule, n, mode — the data
    set's offset, `dataset_offset` —, median, histogram).
    """
    reasons: dict[str, int] = {}
    only_reason: dict[str, int] = {}
    if len(rejected) and REJECT_REASON_COLUMN in rejected.columns:
        for joined in rejected[REJECT_REASON_COLUMN].astype("string").fillna(""):
            parts = [part for part in str(joined).split(",") if part]
            for part in parts:
                reasons[part] = reasons.get(part, 0) + 1
            if len(parts) == 1:
                only_reason[parts[0]] = only_reason.get(parts[0], 0) + 1
    ok = is_ok(table)
    statuses = table["status"].astype("string").fillna("missing").value_counts()
    ok_rows = table.loc[ok]
    summary = {
        "total": int(len(table)),
        "ok": int(ok.sum()),
        "kept": int(len(kept)),
        "rejected": int(len(rejected)),
        "reasons": dict(sorted(reasons.items(), key=lambda item: (-item[1], item[0]))),
        "only_reason": dict(sorted(only_reason.items(), key=lambda item: (-item[1], item[0]))),
        "statuses": {str(k): int(v) for k, v in statuses.items()},
        "at_search_edge": int(_flag(ok_rows, "at_search_edge").sum()),
        "distributions": {
            metric: _distribution(numeric(ok_rows, metric), metric) for metric in METRICS
        },
    }
    mask, rule = confident_clips(table)
    confident = numeric(table, "offset_frames")[mask]
    summary["confident_offsets"] = {
        "rule": rule,
        "n": int(len(confident)),
        "mode": dataset_offset(table).offset,
        "median": float(np.median(confident)) if len(confident) else None,
        "histogram": _histogram(confident, "offset_frames"),
    }
    if rules is not None:
        summary["rules"] = asdict(rules)
    return summary


_BLOCKS = " ▏▎▍▌▋▊▉█"
# How the summary names the optional rules that have a value ("rules: …").
RULE_TEXTS = {
    "max_drift_ms_per_min": "|drift| ≤ {:g} ms/min",
    "max_offset_spread": "offset spread ≤ {}",
    "min_face_px": "face ≥ {:g} px",
    "max_abs_yaw": "|yaw| ≤ {:g}°",
    "max_jitter": "jitter ≤ {:g}",
    "min_speech_ratio": "speech ≥ {:g}",
    "max_frozen_ratio": "frozen ≤ {:g}",
}


def bar(count: int, largest: int, width: int = 30) -> str:
    """A horizontal bar of unicode blocks, `width` characters for `largest`."""
    if largest <= 0 or count <= 0:
        return ""
    eighths = max(1, round(8 * width * count / largest))
    full, rest = divmod(eighths, 8)
    return "█" * full + (_BLOCKS[rest] if rest else "")


def _bin_label(metric: str, low: float, high: float) -> str:
    if metric == "offset_frames":
        return f"{int(round((low + high) / 2)):+d}"
    return f"{low:.1f}–{high:.1f}"


def _bin_style(metric: str, low: float, high: float, rules: dict | None) -> str:
    """green: the bin lies on the kept side of its rule; red: on the rejected side;
    yellow: the threshold falls inside it; "" when no rule applies to the metric."""
    if not rules:
        return ""
    eps = 1e-9
    if metric == "prob_at_offset":  # kept when value >= min_prob
        threshold = rules["min_prob"]
        return "green" if low >= threshold - eps else "red" if high <= threshold + eps else "yellow"
    if metric == "offscreen_ratio":  # kept when value <= max_offscreen
        threshold = rules["max_offscreen"]
        return "green" if high <= threshold + eps else "red" if low >= threshold - eps else "yellow"
    if metric == "offset_frames" and rules.get("max_abs_offset") is not None:
        distance = abs((low + high) / 2 - (rules.get("reference_offset") or 0))
        return "green" if distance <= rules["max_abs_offset"] else "red"
    return ""


def render_summary(summary: dict, console) -> None:
    """Print `summary` with rich: a table of counts, then one histogram per metric."""
    from rich.table import Table

    counts = Table(title="filter", show_header=True, header_style="bold")
    counts.add_column("clips")
    counts.add_column("count", justify="right")
    counts.add_column("share", justify="right")
    total = max(summary["total"], 1)

    def add(label: str, value: int, style: str | None = None) -> None:
        counts.add_row(label, str(value), f"{100 * value / total:.1f} %", style=style)

    add("total", summary["total"])
    add("scored ok", summary["ok"])
    add("kept", summary["kept"], "green")
    add("rejected", summary["rejected"], "red")
    for reason, value in summary["reasons"].items():
        alone = summary.get("only_reason", {}).get(reason, 0)
        add(f"  {reason} (alone: {alone})", value)
    if summary.get("at_search_edge"):
        add("ok clips at the search edge", summary["at_search_edge"], "yellow")
    console.print(counts)

    rules = summary.get("rules")
    if rules:
        parts = [f"prob ≥ {rules['min_prob']:g}", f"offscreen ≤ {rules['max_offscreen']:g}"]
        reference = rules.get("reference_offset") or 0
        if rules.get("max_abs_offset") is not None and reference:
            parts.append(f"|offset − ({reference:+d})| ≤ {rules['max_abs_offset']}")
        elif rules.get("max_abs_offset") is not None:
            parts.append(f"|offset| ≤ {rules['max_abs_offset']}")
        if rules.get("max_silence") is not None:
            parts.append(f"silence ≤ {rules['max_silence']:g}")
        if rules.get("drop_at_search_edge"):
            parts.append("not at the search edge")
        for key, text in RULE_TEXTS.items():
            if rules.get(key) is not None:
                parts.append(text.format(rules[key]))
        console.print("rules: " + ", ".join(parts))

    for metric, dist in summary["distributions"].items():
        if not dist["n"]:
            console.print(f"[bold]{metric}[/bold]: no ok clips")
            continue
        q = dist["quantiles"]
        console.print(
            f"[bold]{metric}[/bold] (ok clips: {dist['n']}) "
            f"min {dist['min']:.3g}  p5 {q['0.05']:.3g}  median {q['0.5']:.3g}  "
            f"p95 {q['0.95']:.3g}  max {dist['max']:.3g}"
        )
        _render_histogram(metric, dist["histogram"], rules, console)

    confident = summary.get("confident_offsets")
    if confident is None:
        return
    if not confident["n"]:
        console.print(f"[bold]offset_frames of confident clips[/bold]: none ({confident['rule']})")
        return
    console.print(
        f"[bold]offset_frames of confident clips[/bold] ({confident['rule']}, status ok, not "
        f"at the search edge: {confident['n']}) mode {confident['mode']:+d}  "
        f"median {confident['median']:+g}  (the mode is the data set's own offset)",
        highlight=False,
    )
    marks = {confident["mode"]: "◀ mode"}
    reference = (rules or {}).get("reference_offset")
    if reference is not None:
        both = reference == confident["mode"]
        marks[reference] = "◀ mode, reference (in sync)" if both else "◀ reference (in sync)"
    _render_histogram("offset_frames", confident["histogram"], rules, console, marks)


def _render_histogram(
    metric: str, histogram: dict, rules: dict | None, console, marks: dict | None = None
) -> None:
    """One bar per bin; `marks` {offset: text} annotates offset bins."""
    edges, values = histogram["edges"], histogram["counts"]
    largest = max(values) if values else 0
    skip_empty = len(values) > 16  # long offset ranges: only the offsets that occur
    for i, value in enumerate(values):
        low, high = edges[i], edges[i + 1]
        centre = int(round((low + high) / 2))
        mark = (marks or {}).get(centre, "") if metric == "offset_frames" else ""
        if skip_empty and not value and not mark:
            continue
        style = _bin_style(metric, low, high, rules)
        label = _bin_label(metric, low, high)
        text = bar(value, largest)
        line = f"  {label:>9} │{text}"
        if style:
            line = f"  {label:>9} │[{style}]{text}[/{style}]"
        console.print(f"{line} {value}{' ' + mark if mark else ''}", highlight=False)


# --- writing ----------------------------------------------------------------------------


def clip_path(root: str | None, path: str) -> Path:
    """Absolute path of a clip (root/path; `path` alone when absolute or root missing)."""
    clip = Path(path)
    if not clip.is_absolute() and root is not None and not pd.isna(root) and str(root):
        clip = Path(str(root)) / clip
    return Path(os.path.abspath(clip))


def kept_paths(kept: pd.DataFrame) -> list[str]:
    """Absolute paths (root/path) of the kept clips, in table order — the `--list` output."""
    roots = kept["root"] if "root" in kept.columns else [None] * len(kept)
    return [str(clip_path(root, path)) for root, path in zip(roots, kept["path"], strict=True)]


def _relative(root: str | None, path: str) -> PurePosixPath:
    clip = PurePosixPath(Path(path).as_posix())
    if clip.is_absolute():
        if root is not None and not pd.isna(root) and str(root):
            try:
                clip = clip.relative_to(PurePosixPath(Path(str(root)).as_posix()))
            except ValueError:
                clip = PurePosixPath(*clip.parts[1:])
        else:
            clip = PurePosixPath(*clip.parts[1:])
    # never let a name climb out of the output folder
    parts = [part for part in clip.parts if part not in ("", ".", "..")]
    return PurePosixPath(*parts) if parts else PurePosixPath("clip")


def root_folder_names(roots: Iterable[str]) -> dict[str, str]:
    """A distinct folder name per root: its base name, '-2', '-3'… added on collisions.

    Roots are taken in sorted order so the naming does not depend on the table's order.
    """
    names: dict[str, str] = {}
    used: set[str] = set()
    for root in sorted({str(r) for r in roots}):
        base = Path(root).name or "root"
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}-{n}"
        used.add(name)
        names[root] = name
    return names


def _roots(table: pd.DataFrame) -> pd.Series:
    if "root" not in table.columns:
        return pd.Series([""] * len(table), index=table.index, dtype=object)
    return table["root"].astype("string").fillna("").astype(str)


def mirror_paths(table: pd.DataFrame, layout_from: pd.DataFrame | None = None) -> pd.Series:
    """Relative output path (posix string) of each clip inside an output folder.

    One root: the clip's path relative to that root (out/talks/a.mp4 for
    root/talks/a.mp4). Several roots: the root's folder name first (out/<root-name>/…),
    made distinct with '-2', '-3'… when two roots share a name (see `root_folder_names`).
    The roots are those of `layout_from` (default: `table`); pass the full scores table
    so that a subset (kept clips) gets the same layout as the whole.
    """
    roots = _roots(table)
    all_roots = roots if layout_from is None else _roots(layout_from)
    unique = sorted(set(all_roots) | set(roots))
    names = root_folder_names(unique) if len(unique) > 1 else {}
    out = []
    for root, path in zip(roots, table["path"].astype(str), strict=True):
        relative = _relative(root or None, path)
        if names:
            relative = PurePosixPath(names[root]) / relative
        out.append(relative.as_posix())
    return pd.Series(out, index=table.index, dtype=object, name="mirror_path")


@dataclass
class LinkReport:
    """What `link_to` did: links made, links already in place, and conflicts left alone."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # (link path, why)


def link_to(
    kept: pd.DataFrame, folder: str | Path, mirror_from: pd.DataFrame | None = None
) -> LinkReport:
    """Symlink every kept clip into `folder`, mirroring its relative path (`mirror_paths`).

    Links point to absolute paths. An existing entry that already is (or points to) the
    same clip is left and reported as existing; anything else in the way is never
    overwritten and is reported as a conflict. `mirror_from` (default: `kept`) is the table
    whose roots decide the mirroring — pass the full scores table to get the same layout
    as `synccurate fix`.
    """
    folder = Path(folder)
    report = LinkReport()
    relative = mirror_paths(kept, layout_from=mirror_from)
    for target, rel in zip(kept_paths(kept), relative, strict=True):
        link = folder / rel
        if link.is_symlink() or link.exists():
            if (link.is_symlink() and os.readlink(link) == target) or same_file(link, Path(target)):
                report.existing.append(str(link))
            else:
                report.conflicts.append((str(link), "a different file is already there"))
            continue
        try:
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, link)
        except OSError as error:
            report.conflicts.append(
                (str(link), f"{type(error).__name__}: {error.strerror or error}")
            )
            continue
        report.created.append(str(link))
    return report


__all__ = [
    "DEFAULT_MAX_OFFSCREEN",
    "DEFAULT_MIN_LSE_C",
    "DEFAULT_MIN_PROB",
    "DatasetOffset",
    "FilterRules",
    "LinkReport",
    "REFERENCE_COLUMN",
    "REJECT_REASON_COLUMN",
    "apply_filter",
    "bar",
    "clip_path",
    "confident_clips",
    "dataset_offset",
    "kept_paths",
    "link_to",
    "load_scores",
    "mirror_paths",
    "reject_reasons",
    "rule_failures",
    "render_summary",
    "resolve_reference",
    "root_folder_names",
    "summarize",
]
