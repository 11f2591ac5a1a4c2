"""The paper's numbers of a scores table, and two tables compared clip by clip.

Lip-sync papers report a generator's sync as the mean LSE-D / LSE-C over a test set, with
their spread ("LSE-D 6.469 ± 0.8, LSE-C 7.781 ± 1.1"); probability models give the mean
`prob_at_offset` and mean |offset| the same way. Two tables (generated clips against the
real ones they came from, or two runs of one model) are compared twice:

- per model, each table's means over its own ok rows (`per_model`), side by side;
- per clip, for the clips present in both (`clip_differences`), matched by `path`, the
  clip's path relative to the folder it was scored under (the roots differ: generated/x.mp4
  and real/x.mp4 are the same clip). Δ = this table − the reference, both rows ok.

Spread = the sample standard deviation (ddof = 1, `np.std(values, ddof=1)`): the clips are
a sample of what the generator or data set produces. One value has no spread (None).
Everything here is plain numbers (JSON-serialisable dicts); `report` draws them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from synccurate.curate.filtering import is_ok, numeric
from synccurate.models import provenance

DDOF = 1  # sample standard deviation
NO_MODEL = "(no model)"
# name: (label on the page, how to read it); abs_offset = |offset_frames|
MODEL_METRICS = {
    "lse_d": ("LSE-D", "lower = closer"),
    "lse_c": ("LSE-C", "higher = more confident"),
    "prob_at_offset": ("P(sync)", "probability at the offset"),
    "abs_offset": ("|offset|", "frames, whatever the sign"),
}
# per-clip differences: the model metrics and the signed offset (a change of direction)
DIFFERENCE_METRICS = {
    **MODEL_METRICS,
    "offset_frames": ("offset", "frames; + = the audio leads"),
}
# the metric whose decline orders the listed clips, the first one both tables have
KEY_METRICS = ("lse_c", "prob_at_offset")


def metric_values(table: pd.DataFrame, name: str) -> np.ndarray:
    """A metric per row as floats (NaN where missing); abs_offset = |offset_frames|."""
    if name == "abs_offset":
        return np.abs(numeric(table, "offset_frames"))
    return numeric(table, name)


def spread(values: np.ndarray) -> dict:
    """{"n", "mean", "sd"} of the finite values; sd is the sample standard deviation
    (ddof = 1): None below two values, mean None without any."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    n = len(values)
    mean = float(np.mean(values)) if n else None
    sd = float(np.std(values, ddof=DDOF)) if n > DDOF else None
    return {"n": int(n), "mean": mean, "sd": sd}


def per_model(table: pd.DataFrame) -> list[dict]:
    """Per value of the `model` column (largest first): clips, ok clips and the spread of each
    MODEL_METRICS over the ok rows that have it (metrics no ok row has are left out)."""
    if not len(table):
        return []
    models = table["model"] if "model" in table.columns else pd.Series(NO_MODEL, table.index)
    codes, names = pd.factorize(models.astype("string").fillna(NO_MODEL), sort=True)
    ok = is_ok(table)
    flagged = provenance.synthetic_on_real_rows(table)
    values = {name: metric_values(table, name) for name in MODEL_METRICS}
    result = []
    for code, model in enumerate(names):
        rows = codes == code
        chosen = rows & ok
        metrics = {}
        for name, column in values.items():
            stat = spread(column[chosen])
            if stat["n"]:
                metrics[name] = stat
        result.append(
            {
                "model": str(model),
                "clips": int(rows.sum()),
                "ok": int(chosen.sum()),
                "synthetic_on_real": int((rows & flagged).sum()),
                "metrics": metrics,
            }
        )
    return sorted(result, key=lambda r: (-r["clips"], r["model"]))


def format_spread(stat: dict | None, digits: int = 3, signed: bool = False) -> str:
    """Mean ± spread as "6.469 ± 0.800" (the spread is the sample standard deviation;
    "+0.512 ± 0.300" with `signed`, for differences); "–" without values."""
    if not stat or stat.get("mean") is None:
        return "–"
    sd = "–" if stat.get("sd") is None else f"{stat['sd']:.{digits}f}"
    return f"{stat['mean']:{'+' if signed else ''}.{digits}f} ± {sd}"


def model_line(entry: dict) -> str:
    """One model as papers print it: "LSE-D 6.469 ± 0.800, LSE-C 7.781 ± 1.100 (n = 12)"."""
    metrics = entry["metrics"]
    if not metrics:
        return f"{entry['model']}: no ok clip with a sync metric ({entry['clips']:,} clips)"
    counts = {stat["n"] for stat in metrics.values()}
    parts = []
    for name, stat in metrics.items():
        text = f"{MODEL_METRICS[name][0]} {format_spread(stat)}"
        parts.append(text if len(counts) == 1 else f"{text} (n = {stat['n']:,})")
    tail = f" (n = {counts.pop():,})" if len(counts) == 1 else ""
    return f"{entry['model']}: {', '.join(parts)}{tail}"


def _match(table: pd.DataFrame, reference: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Both tables indexed by `path`, without the paths that are not unique in either table
    (the same relative path under two roots: which row would it match?), and the counts:
    matched, only_here, only_reference, and the rows left out as ambiguous in each."""
    paths = [t["path"].astype("string") for t in (table, reference)]
    shared = pd.Index(
        pd.concat([p[p.duplicated(keep=False)] for p in paths]).unique(), dtype=object
    )
    frames, ambiguous = [], []
    for t, p in zip((table, reference), paths, strict=True):
        left_out = p.isin(shared).to_numpy(dtype=bool)
        frame = t.loc[~left_out].copy()
        frame.index = pd.Index(p[~left_out].to_numpy(dtype=object), name="path")
        frames.append(frame)
        ambiguous.append(int(left_out.sum()))
    here, there = frames
    counts = {
        "matched": int(len(here.index.intersection(there.index))),
        "only_here": int(len(here.index.difference(there.index))),
        "only_reference": int(len(there.index.difference(here.index))),
        "ambiguous_paths": int(len(shared)),
        "ambiguous_here": ambiguous[0],
        "ambiguous_reference": ambiguous[1],
    }
    return here, there, counts


def _pairs(here: pd.DataFrame, there: pd.DataFrame) -> pd.DataFrame:
    common = here.index.intersection(there.index).sort_values()
    pairs = pd.DataFrame(index=pd.Index(common, name="path"))
    if not len(common):
        return pairs
    a, b = here.loc[common], there.loc[common]
    ok = is_ok(a) & is_ok(b)
    for side, frame in (("", a), ("_ref", b)):
        pairs[f"status{side}"] = frame["status"].astype("string").fillna("missing").to_numpy()
        models = frame["model"] if "model" in frame.columns else pd.Series(NO_MODEL, common)
        pairs[f"model{side}"] = models.astype("string").fillna(NO_MODEL).to_numpy()
    pairs["both_ok"] = ok
    for name in DIFFERENCE_METRICS:
        mine, theirs = metric_values(a, name), metric_values(b, name)
        pairs[name] = mine
        pairs[f"{name}_ref"] = theirs
        pairs[f"delta_{name}"] = np.where(ok, mine - theirs, np.nan)
    return pairs


def clip_differences(table: pd.DataFrame, reference: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Per clip present in both tables (matched by `path`), its metrics in each and
    Δ = this − reference where both rows are ok and both have the metric.

    Returns (one row per matched path, sorted by path: `status`, `model`, each
    DIFFERENCE_METRICS `<name>` of this table and `<name>_ref` of the reference (same for
    status and model), `both_ok` and `delta_<name>`; counts: matched, both_ok, only_here,
    only_reference, ambiguous_paths and the rows they take in each table)."""
    here, there, counts = _match(table, reference)
    pairs = _pairs(here, there)
    return pairs, {**counts, "both_ok": int(pairs["both_ok"].sum()) if len(pairs) else 0}


def _examples(index: pd.Index, n: int) -> list[str]:
    return [str(p) for p in index.sort_values()[:n]]


def compare_tables(
    table: pd.DataFrame,
    reference: pd.DataFrame,
    n: int = 10,
    *,
    label: str = "this table",
    reference_label: str = "reference",
) -> dict:
    """Everything the comparison shows (JSON-serialisable): both tables' per-model means,
    the matching counts (with up to n example paths of the clips in one table only), the
    spread of each per-clip Δ, and the n matched clips that lost most on the key metric."""
    here, there, counts = _match(table, reference)
    pairs = _pairs(here, there)
    counts = {**counts, "both_ok": int(pairs["both_ok"].sum()) if len(pairs) else 0}
    differences = {}
    for name in DIFFERENCE_METRICS:
        column = f"delta_{name}" if len(pairs) else None
        if column is None or not np.isfinite(pairs[column].to_numpy(dtype=float)).any():
            continue
        delta = pairs[column].to_numpy(dtype=float)
        used = np.isfinite(delta)
        differences[name] = {
            **spread(delta),
            "mean_here": spread(pairs[name].to_numpy(dtype=float)[used])["mean"],
            "mean_reference": spread(pairs[f"{name}_ref"].to_numpy(dtype=float)[used])["mean"],
            "higher_here": int((delta[used] > 0).sum()),
            "lower_here": int((delta[used] < 0).sum()),
            "equal": int((delta[used] == 0).sum()),
        }
    key = next((m for m in KEY_METRICS if m in differences), None)
    listed = []
    if key is not None:
        delta = pairs[f"delta_{key}"]
        order = delta[np.isfinite(delta.to_numpy(dtype=float))].sort_values(kind="stable")
        for path in order.index[:n]:
            row = pairs.loc[path]
            listed.append(
                {
                    "path": str(path),
                    "metrics": {
                        name: {
                            "here": _number(row[name]),
                            "reference": _number(row[f"{name}_ref"]),
                            "delta": _number(row[f"delta_{name}"]),
                        }
                        for name in differences
                    },
                }
            )
    model_pairs = []  # which model scored each side of the clips ok in both
    if len(pairs):
        both = pairs[pairs["both_ok"]]
        for (mine, theirs), size in both.groupby(["model", "model_ref"]).size().items():
            model_pairs.append({"model": mine, "reference_model": theirs, "clips": int(size)})
    return {
        "label": label,
        "reference_label": reference_label,
        "matched_by": "path",
        "counts": counts,
        "only_here": _examples(here.index.difference(there.index), n),
        "only_reference": _examples(there.index.difference(here.index), n),
        "per_model": per_model(table),
        "reference_per_model": per_model(reference),
        "model_pairs": model_pairs,
        "same_models": all(p["model"] == p["reference_model"] for p in model_pairs),
        "differences": differences,
        "key_metric": key,
        "clips": listed,
        "clips_total": int(np.isfinite(pairs[f"delta_{key}"].to_numpy(dtype=float)).sum())
        if key
        else 0,
    }


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def difference_lines(comparison: dict) -> list[str]:
    """The comparison in a few console lines (matching counts, then one line per metric)."""
    c = comparison["counts"]
    lines = [
        f"matched by path: {c['matched']:,} clips in both ({c['both_ok']:,} ok in both), "
        f"{c['only_here']:,} only in {comparison['label']}, "
        f"{c['only_reference']:,} only in {comparison['reference_label']}"
    ]
    for name, stat in comparison["differences"].items():
        lines.append(
            f"Δ {DIFFERENCE_METRICS[name][0]} (this − reference) "
            f"{format_spread(stat, signed=True)} "
            f"(n = {stat['n']:,})"
        )
    return lines


__all__ = [
    "DDOF",
    "DIFFERENCE_METRICS",
    "MODEL_METRICS",
    "clip_differences",
    "compare_tables",
    "difference_lines",
    "format_spread",
    "metric_values",
    "model_line",
    "per_model",
    "spread",
]
