"""`synccurate report`, the offset over time: drift histogram, most drifting clips, steps.

Known answers worked out by hand from a small table (see DRIFT_CASES)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from test_report import make_frame, summary_of

from synccurate.curate import report
from synccurate.io.files import write_table
from synccurate.store.schema import rows_to_frame

MODEL = "icsyncnet@aaaa1111"
DRIFT_COLUMNS = [
    "drift_ms_per_min",
    "offset_start_ms",
    "drift_residual_ms",
    "offset_min",
    "offset_max",
    "offset_steps",
    "offset_step_at_s",
]
# name: (status, drift ms/min, residual ms, offset_min, offset_max, steps, steps at s)
DRIFT_CASES = {
    "a.mp4": ("ok", 12.0, 1.0, 0, 1, 0, []),
    "b.mp4": ("ok", -80.0, 5.0, -3, 2, 0, []),
    "c.mp4": ("ok", 45.5, 2.0, 0, 2, 1, [30.0]),
    "d.mp4": ("ok", None, None, 1, 1, 0, []),  # too few confident stretches: no drift
    "e.mp4": ("ok", 80.0, 4.0, 0, 3, 0, []),  # |drift| ties with b: table order, b first
    "f.mp4": ("no_face", 500.0, 1.0, 0, 9, 3, [1.0, 2.0, 3.0]),  # not ok: never listed
    "g.mp4": ("ok", 0.0, 0.5, -6, 0, 2, [20.0, 50.0]),
    "h.mp4": ("ok", 3.0, 0.2, 0, 6, 1, [10.0]),
    "s.mp4": ("ok", None, None, None, None, None, None),  # too short for any stretch
}
DURATION_S = 120.0
# by hand: |drift| largest first among ok rows with a drift, ties in table order
LARGEST = ["b.mp4", "e.mp4", "c.mp4", "a.mp4", "h.mp4", "g.mp4"]
# offset_steps >= 1 among ok rows: most steps first, then the wider offset range
STEPS = ["g.mp4", "h.mp4", "c.mp4"]  # g: 2 steps; h: 1 step, range 6; c: 1 step, range 2


def drift_row(name: str, case: tuple) -> dict:
    status, drift, residual, low, high, steps, at = case
    ok = status == "ok"
    return {
        "root": "/data/clips",
        "path": f"long/{name}",
        "status": status,
        "error": None if ok else f"/data/clips/long/{name}: a face in only 12% of frames",
        "duration_s": DURATION_S,
        "offset_frames": 1 if ok else None,
        "prob_at_offset": 0.8 if ok else None,
        "offscreen_ratio": 0.05 if ok else None,
        "face_ratio": 0.95,
        "silence_ratio": 0.1,
        "at_search_edge": False,
        "model": MODEL,
        "drift_ms_per_min": drift,
        "offset_start_ms": None if drift is None else 40.0,
        "drift_residual_ms": residual,
        "offset_min": low,
        "offset_max": high,
        "offset_steps": steps,
        "offset_step_at_s": at,
    }


@pytest.fixture
def drift_page(tmp_path) -> tuple[dict, str]:
    frame = rows_to_frame([drift_row(name, case) for name, case in DRIFT_CASES.items()])
    scores = write_table(frame, tmp_path / "long.parquet")
    page = tmp_path / "long.html"
    report.write_report(scores, page, worst=10, with_thumbnails=False)
    return summary_of(page), page.read_text(encoding="utf-8")


def listed(text: str, table_id: str) -> list[str]:
    """The clip names of one table of the page, top to bottom."""
    match = re.search(rf'<table id="{table_id}">(.*?)</table>', text, re.S)
    assert match, f"no table {table_id}"
    return [path.split("/")[-1] for path in re.findall(r'data-path="([^"]+)"', match.group(1))]


def test_counts_of_measured_unmeasured_and_stepping_clips(drift_page):
    summary, text = drift_page
    drift = summary["drift"]
    assert drift["columns"] is True
    assert drift["ok"] == 8  # every case but f
    assert drift["measured"] == 6  # ok with a drift: a b c e g h
    assert drift["unmeasured"] == 2  # d and s
    assert drift["stepping"] == 3  # c g h (f steps too, but is not ok)
    assert 'id="drift-measured">6 have a drift' in text


def test_drift_histogram_is_signed_over_round_limits(drift_page):
    summary, _ = drift_page
    hist = summary["drift"]["histogram"]
    # |drift| of the six: 80, 80, 45.5, 12, 3, 0 -> 99th percentile 80 -> limit 100 (1-2-5 steps)
    assert hist["edges"][0] == -100 and hist["edges"][-1] == 100 and len(hist["counts"]) == 20
    # bins of 10 ms/min from -100: -80 -> bin 2, 0 and 3 -> bin 10, 12 -> 11, 45.5 -> 14, 80 -> 18
    expected = [0] * 20
    for index in (2, 10, 10, 11, 14, 18):
        expected[index] += 1
    assert hist["counts"] == expected
    assert hist["n"] == 6 and hist["beyond"] == 0
    assert hist["median"] == pytest.approx((3.0 + 12.0) / 2)


def test_most_drifting_clips_in_order_with_their_residual_range_and_steps(drift_page):
    summary, text = drift_page
    largest = summary["drift"]["largest"]
    assert [c["path"].split("/")[-1] for c in largest["clips"]] == LARGEST
    assert largest["total"] == 6
    assert listed(text, "largest-drift") == LARGEST
    first = largest["clips"][0]  # b.mp4
    assert first["drift_ms_per_min"] == -80.0 and first["drift_residual_ms"] == 5.0
    assert (first["offset_min"], first["offset_max"], first["offset_steps"]) == (-3, 2, 0)
    assert first["across_clip_ms"] == pytest.approx(-80.0 * DURATION_S / 60)  # -160 ms
    row = re.search(r'<tr data-path="long/b.mp4">(.*?)</tr>', text).group(1)
    assert "-80.0" in row and "5.0" in row and "-160.0" in row and "-3 … +2" in row


def test_clips_whose_offset_steps_with_the_step_times(drift_page):
    summary, text = drift_page
    steps = summary["drift"]["steps"]
    assert [c["path"].split("/")[-1] for c in steps["clips"]] == STEPS
    assert steps["total"] == 3
    assert listed(text, "offset-steps") == STEPS
    times = {c["path"].split("/")[-1]: c["offset_step_at_s"] for c in steps["clips"]}
    assert times == {"g.mp4": [20.0, 50.0], "h.mp4": [10.0], "c.mp4": [30.0]}
    assert "20.0, 50.0" in text


def test_worst_option_cuts_both_lists(tmp_path):
    frame = rows_to_frame([drift_row(name, case) for name, case in DRIFT_CASES.items()])
    scores = write_table(frame, tmp_path / "long.parquet")
    summary = report.write_report(scores, tmp_path / "two.html", worst=2, with_thumbnails=False)
    assert [c["path"] for c in summary["drift"]["largest"]["clips"]] == [
        f"long/{n}" for n in LARGEST[:2]
    ]
    assert [c["path"] for c in summary["drift"]["steps"]["clips"]] == [
        f"long/{n}" for n in STEPS[:2]
    ]
    assert summary["drift"]["largest"]["total"] == 6


def test_an_older_table_without_drift_columns_still_makes_a_page(tmp_path):
    frame = make_frame("/data/clips").drop(columns=DRIFT_COLUMNS)
    scores = write_table(frame, tmp_path / "old.parquet")
    page = tmp_path / "old.html"
    summary = report.write_report(scores, page, worst=3, with_thumbnails=False)
    assert summary["drift"] == {"columns": False}
    text = page.read_text(encoding="utf-8")
    assert "no drift columns" in text and 'id="largest-drift"' not in text
    assert summary_of(page)["n_clips"] == len(frame)


def test_drift_columns_all_empty_give_empty_lists(tmp_path):
    frame = make_frame("/data/clips")  # today's schema: the drift columns exist, all null
    assert frame["drift_ms_per_min"].isna().all()
    scores = write_table(frame, tmp_path / "short.parquet")
    summary = report.write_report(scores, tmp_path / "short.html", with_thumbnails=False)
    drift = summary["drift"]
    assert drift["measured"] == 0 and drift["unmeasured"] == drift["ok"] == 10
    assert drift["largest"]["clips"] == [] and drift["steps"]["clips"] == []
    assert drift["histogram"]["n"] == 0


def test_rare_large_drifts_go_to_the_end_bars():
    values = np.array([1.0] * 199 + [-5000.0])  # the 99th percentile of |drift| is 1
    hist = report.drift_histogram(values)
    assert hist["edges"][0] == -1 and hist["edges"][-1] == 1
    assert hist["counts"][0] == 1 and hist["beyond"] == 1 and hist["n"] == 200
