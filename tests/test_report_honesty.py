"""`synccurate report` says when its numbers mean nothing: a banner opens every page built
from rows that synthetic-only weights scored on real clips, and no other page."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from test_report import make_frame

from synccurate.curate import report
from synccurate.io.files import write_table

FLAG = "synthetic_weights_on_real"


def page_of(tmp_path, frame: pd.DataFrame, name: str, reference: pd.DataFrame | None = None):
    scores = write_table(frame, tmp_path / f"{name}.parquet")
    other = None if reference is None else write_table(reference, tmp_path / f"{name}-ref.parquet")
    page = tmp_path / f"{name}.html"
    summary = report.write_report(scores, page, worst=2, with_thumbnails=False, reference=other)
    return summary, page.read_text(encoding="utf-8")


def banner(text: str) -> str | None:
    match = re.search(r'<div class="banner" id="synthetic-banner"[^>]*>(.*?)</div>', text, re.S)
    return match.group(1) if match else None


@pytest.mark.parametrize(
    "flags",
    [
        None,  # an older table: no such column
        "all false",
        "all missing",  # the files could not be opened: origin unknown, not judged
    ],
)
def test_no_banner_without_flagged_rows(tmp_path, flags):
    frame = make_frame("/data/clips")
    if flags is None:
        frame = frame.drop(columns=[FLAG])
    else:
        frame[FLAG] = pd.array([False if flags == "all false" else None] * len(frame), "boolean")
    summary, text = page_of(tmp_path, frame, "clean")
    assert summary["synthetic_on_real"]["rows"] == 0
    assert banner(text) is None and 'id="synthetic-banner"' not in text


def test_one_flagged_row_opens_the_page_with_the_banner(tmp_path):
    frame = make_frame("/data/clips")
    flags = [None] * len(frame)  # unknown origin elsewhere: not counted
    flags[3] = True
    flags[4] = False
    frame[FLAG] = pd.array(flags, dtype="boolean")
    summary, text = page_of(tmp_path, frame, "flagged")
    assert summary["synthetic_on_real"] == {
        "rows": 1,
        "of": len(frame),
        "models": ["icsyncnet@aaaa1111"],
    }
    found = banner(text)
    assert found is not None
    # it opens the page: before the first section
    assert text.index('id="synthetic-banner"') < text.index("<h2>Totals</h2>")
    words = " ".join(re.sub(r"<[^>]+>", "", found).split())
    assert f"1 of {len(frame)} rows" in words
    assert "trained on synthetic clips only" in words and "mean nothing" in words
    assert "kept shares" in words and "probabilities" in words and "offsets" in words
    for column in (
        "offset_frames",
        "prob_at_offset",
        "offscreen_ratio",
        "confidence",
        "lse_d",
        "lse_c",
        "vote_offset",
        "vote_share",
        "p_t",
        "drift_ms_per_min",
        "offset_steps",
    ):
        assert f"<code>{column}</code>" in found, column
    # the per-model table marks the model whose rows are affected
    assert "(1 synthetic weights on real)" in text


def test_a_flagged_row_that_failed_still_counts(tmp_path):
    frame = make_frame("/data/clips")
    failed = frame.index[frame["status"] != "ok"][0]
    frame[FLAG] = pd.array([i == failed for i in frame.index], dtype="boolean")
    summary, text = page_of(tmp_path, frame, "failed")
    assert summary["synthetic_on_real"]["rows"] == 1 and banner(text) is not None


def test_flagged_rows_in_the_reference_table_open_the_page_too(tmp_path):
    clean = make_frame("/data/gen")
    clean[FLAG] = pd.array([False] * len(clean), dtype="boolean")
    flagged = make_frame("/data/real")
    flagged[FLAG] = pd.array([True, True] + [False] * (len(flagged) - 2), dtype="boolean")
    summary, text = page_of(tmp_path, clean, "compared", reference=flagged)
    assert summary["synthetic_on_real"]["rows"] == 0
    assert summary["comparison"]["reference_synthetic_on_real"]["rows"] == 2
    found = banner(text)
    assert found is not None and "the reference table: <b>2 of" in found
    assert "this table:" not in found
    assert "WARNING: 2 rows" in " ".join(report.console_lines(summary))
