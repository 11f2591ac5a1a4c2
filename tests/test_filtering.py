"""`synccurate filter`: rules, boundaries, reasons, summary, writing and linking (SPEC §9)."""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from synccurate.curate.filtering import (
    DEFAULT_MAX_OFFSCREEN,
    DEFAULT_MIN_PROB,
    FilterRules,
    apply_filter,
    bar,
    kept_paths,
    link_to,
    mirror_paths,
    reject_reasons,
    render_summary,
    summarize,
)
from synccurate.io.files import write_table

P, R, K, S = 0.6, 0.25, 3, 0.5
RULES = FilterRules(min_prob=P, max_offscreen=R, max_abs_offset=K, max_silence=S)

# name: (status, prob, offscreen, offset, silence, at_edge, expected reasons)
CASES = {
    "boundary.mp4": ("ok", P, R, K, S, False, []),  # every value exactly at its limit: kept
    "negative_boundary.mp4": ("ok", 0.9, 0.0, -K, 0.0, False, []),
    "low_prob.mp4": ("ok", P - 1e-9, 0.0, 0, 0.0, False, ["low_prob"]),
    "offscreen.mp4": ("ok", 0.9, R + 1e-9, 0, 0.0, False, ["offscreen"]),
    "large_offset.mp4": ("ok", 0.9, 0.0, K + 1, 0.0, False, ["large_offset"]),
    "large_negative.mp4": ("ok", 0.9, 0.0, -(K + 1), 0.0, False, ["large_offset"]),
    "silence.mp4": ("ok", 0.9, 0.0, 0, S + 0.01, False, ["silence"]),
    "edge.mp4": ("ok", 0.9, 0.0, 15, 0.0, True, ["large_offset", "at_search_edge"]),
    "several.mp4": ("ok", 0.1, 0.9, -1, 0.9, False, ["low_prob", "offscreen", "silence"]),
    "nan_prob.mp4": ("ok", math.nan, 0.0, 0, 0.0, False, ["low_prob"]),
    "no_face.mp4": ("no_face", math.nan, math.nan, None, math.nan, None, ["status:no_face"]),
    "broken.mp4": ("decode_error", None, None, None, None, None, ["status:decode_error"]),
}


def make_table(root: str = "/data/clips") -> pd.DataFrame:
    rows = []
    for name, (status, prob, offscreen, offset, silence, edge, _) in CASES.items():
        ok = status == "ok"
        rows.append(
            {
                "root": root,
                "path": f"sub/{name}",
                "status": status,
                "error": None if ok else f"{status} happened",
                "duration_s": 5.0 if ok else None,
                "n_frames": 125 if ok else None,
                "source_fps": 25.0 if ok else None,
                "offset_frames": offset,
                "offset_seconds": None if offset is None else offset / 25,
                "prob_at_offset": prob,
                "offscreen_ratio": offscreen,
                "confidence": 1.0 if ok else None,
                "face_ratio": 1.0 if ok else 0.0,
                "silence_ratio": silence,
                "at_search_edge": edge,
                "model": "test-model",
                "p_t": [0.9, 0.8] if ok else [],
                "onscreen": [True, False] if ok else [],
            }
        )
    table = pd.DataFrame(rows)
    # the scorer's nullable dtypes
    table["offset_frames"] = table["offset_frames"].astype("Int64")
    table["n_frames"] = table["n_frames"].astype("Int64")
    table["at_search_edge"] = table["at_search_edge"].astype("boolean")
    for column in ("root", "path", "status", "error", "model"):
        table[column] = table[column].astype("string")
    return table


def test_defaults_are_documented_values():
    rules = FilterRules()
    assert rules.min_prob == DEFAULT_MIN_PROB == 0.5
    assert rules.max_offscreen == DEFAULT_MAX_OFFSCREEN == 0.2
    assert rules.max_abs_offset is None and rules.max_silence is None
    assert rules.drop_at_search_edge is False
    with pytest.raises(ValueError):
        FilterRules(min_prob=1.5)


def test_reasons_cover_every_rule_and_boundary():
    table = make_table()
    rules = FilterRules(P, R, K, S, drop_at_search_edge=True)
    reasons = reject_reasons(table, rules)
    for name, reason in zip(table["path"], reasons, strict=True):
        assert reason == CASES[name.split("/")[1]][-1], name


def test_edge_is_only_a_reason_when_asked():
    table = make_table()
    reasons = reject_reasons(table, RULES)
    edge_row = table.index[table["path"] == "sub/edge.mp4"][0]
    assert reasons[edge_row] == ["large_offset"]
    no_limits = reject_reasons(table, FilterRules(min_prob=0.0, max_offscreen=1.0))
    assert no_limits[edge_row] == []


def test_apply_filter_splits_and_keeps_columns(tmp_path):
    table = make_table()
    kept, rejected = apply_filter(table, FilterRules(P, R, K, S, drop_at_search_edge=True))
    assert sorted(kept["path"]) == ["sub/boundary.mp4", "sub/negative_boundary.mp4"]
    assert len(kept) + len(rejected) == len(table)
    assert list(kept.columns) == [*table.columns, "reference_offset"]
    assert list(rejected.columns) == [*table.columns, "reference_offset", "reject_reason"]
    by_path = dict(zip(rejected["path"], rejected["reject_reason"], strict=True))
    assert by_path["sub/several.mp4"] == "low_prob,offscreen,silence"
    assert by_path["sub/edge.mp4"] == "large_offset,at_search_edge"
    assert by_path["sub/no_face.mp4"] == "status:no_face"
    # order and list columns survive a Parquet round trip
    write_table(rejected, tmp_path / "rejected.parquet")
    back = pd.read_parquet(tmp_path / "rejected.parquet")
    assert list(back["path"]) == list(rejected["path"])
    assert list(back.loc[back["path"] == "sub/several.mp4", "p_t"].iloc[0]) == [0.9, 0.8]


def test_summary_numbers():
    table = make_table()
    rules = FilterRules(P, R, K, S, drop_at_search_edge=True)
    kept, rejected = apply_filter(table, rules)
    summary = summarize(table, kept, rejected, rules)
    assert summary["total"] == 12
    assert summary["ok"] == 10
    assert summary["kept"] == 2
    assert summary["rejected"] == 10
    assert summary["reasons"] == {
        "low_prob": 3,
        "large_offset": 3,
        "offscreen": 2,
        "silence": 2,
        "at_search_edge": 1,
        "status:decode_error": 1,
        "status:no_face": 1,
    }
    assert summary["only_reason"]["low_prob"] == 2  # low_prob.mp4 and nan_prob.mp4
    assert summary["statuses"] == {"ok": 10, "no_face": 1, "decode_error": 1}
    assert summary["at_search_edge"] == 1
    prob = summary["distributions"]["prob_at_offset"]
    assert prob["n"] == 9  # ok rows with a finite value
    assert sum(prob["histogram"]["counts"]) == 9
    assert prob["quantiles"]["0.5"] == pytest.approx(0.9)
    offsets = summary["distributions"]["offset_frames"]
    assert offsets["n"] == 10 and offsets["min"] == -4 and offsets["max"] == 15
    assert len(offsets["histogram"]["counts"]) == 20  # one bin per integer offset -4…15
    assert offsets["histogram"]["counts"][4] == 4  # four clips at offset 0
    assert summary["rules"]["max_abs_offset"] == K


def test_render_summary_draws_bars():
    table = make_table()
    kept, rejected = apply_filter(table, RULES)
    console = Console(record=True, width=100, force_terminal=False)
    render_summary(summarize(table, kept, rejected, RULES), console)
    text = console.export_text()
    for word in ("kept", "rejected", "low_prob", "prob_at_offset", "offscreen_ratio", "█"):
        assert word in text
    assert bar(8, 8, width=4) == "████" and bar(1, 8, width=4) == "▌" and bar(0, 8) == ""


def test_empty_and_all_failed_tables_do_not_crash():
    table = make_table()
    failed = table[table["status"] != "ok"]
    kept, rejected = apply_filter(failed, RULES)
    assert kept.empty and len(rejected) == 2
    summary = summarize(failed, kept, rejected, RULES)
    assert summary["distributions"]["prob_at_offset"]["n"] == 0
    render_summary(summary, Console(record=True, width=100))
    empty = table.iloc[:0]
    kept, rejected = apply_filter(empty, RULES)
    assert kept.empty and rejected.empty and "reject_reason" in rejected.columns


def test_write_table_is_atomic_and_protects_the_input(tmp_path):
    table = make_table()
    scores = write_table(table, tmp_path / "scores.parquet")
    with pytest.raises(ValueError, match="input table"):
        write_table(table, tmp_path / "sub" / ".." / "scores.parquet", protect=[scores])
    os.symlink(scores, tmp_path / "alias.parquet")
    with pytest.raises(ValueError, match="input table"):
        write_table(table, tmp_path / "alias.parquet", protect=[scores])
    write_table(table.iloc[:3], tmp_path / "kept.parquet", protect=[scores])
    assert len(pd.read_parquet(tmp_path / "kept.parquet")) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "alias.parquet",
        "kept.parquet",
        "scores.parquet",
    ]  # no temp files left behind
    assert len(pd.read_parquet(scores)) == len(table)


def test_kept_paths_and_links(tmp_path):
    root = tmp_path / "clips"
    table = make_table(str(root))
    for path in table["path"]:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"video")
    kept, _ = apply_filter(table, RULES)
    listed = kept_paths(kept)
    assert listed == [
        str(root / "sub" / "boundary.mp4"),
        str(root / "sub" / "negative_boundary.mp4"),
    ]

    links = tmp_path / "links"
    (links / "sub").mkdir(parents=True)
    (links / "sub" / "negative_boundary.mp4").write_bytes(b"someone else's file")
    report = link_to(kept, links)
    assert report.created == [str(links / "sub" / "boundary.mp4")]
    assert [c[0] for c in report.conflicts] == [str(links / "sub" / "negative_boundary.mp4")]
    assert (links / "sub" / "negative_boundary.mp4").read_bytes() == b"someone else's file"
    assert os.readlink(links / "sub" / "boundary.mp4") == listed[0]
    again = link_to(kept, links)
    assert again.created == [] and again.existing == [str(links / "sub" / "boundary.mp4")]


def test_mirror_paths_with_several_roots():
    table = pd.DataFrame(
        {
            "root": ["/a/data", "/b/data", "/c/other", "/a/data"],
            "path": ["x.mp4", "x.mp4", "deep/y.mp4", "z/w.mp4"],
        }
    )
    assert list(mirror_paths(table)) == [
        "data/x.mp4",
        "data-2/x.mp4",
        "other/deep/y.mp4",
        "data/z/w.mp4",
    ]
    single = table[table["root"] == "/a/data"]
    assert list(mirror_paths(single)) == ["x.mp4", "z/w.mp4"]
    assert list(mirror_paths(single, layout_from=table)) == ["data/x.mp4", "data/z/w.mp4"]
    # absolute paths are made relative to their root; '..' never climbs out of the output
    odd = pd.DataFrame({"root": ["/r", "/r"], "path": ["/r/s/t.mp4", "../up.mp4"]})
    assert list(mirror_paths(odd)) == ["s/t.mp4", "up.mp4"]


def test_distance_model_rows_are_judged_by_lse_not_by_a_missing_probability():
    """SyncNet v2 rows have no prob_at_offset / offscreen_ratio; lse_c >= 3 (and lse_d) decide."""
    from synccurate.curate.filtering import FilterRules, reject_reasons

    table = pd.DataFrame(
        {
            "root": "/d",
            "path": ["v2_low.mp4", "v2_at_bar.mp4", "v2_far.mp4", "ic.mp4"],
            "status": "ok",
            "offset_frames": [0, 1, 0, 0],
            "prob_at_offset": [np.nan, np.nan, np.nan, 0.9],
            "offscreen_ratio": [np.nan, np.nan, np.nan, 0.1],
            "lse_c": [2.99, 3.0, 8.0, np.nan],
            "lse_d": [7.0, 7.0, 9.5, np.nan],
        }
    )
    reasons = reject_reasons(table, FilterRules()).tolist()
    assert reasons == [["low_lse_c"], [], [], []]
    strict = FilterRules(min_lse_c=2.0, max_lse_d=9.0, max_abs_offset=0)
    assert reject_reasons(table, strict).tolist() == [[], ["large_offset"], ["high_lse_d"], []]
