"""`synccurate report` of a speaker-segments table, against one built by hand.

Seven segments of three clips (and one clip that could not be scored), each with a known
length, end reason, offset and filter verdict, so every number on the page is known.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.curate import report
from synccurate.pipeline.segments import END_REASONS
from synccurate.store import parts
from synccurate.store.schema import SEGMENTS

PINS = {
    "model": "m",
    "max_offset": 15,
    "max_gap_seconds": 1.0,
    "min_segment_seconds": 2.0,
    "max_segment_seconds": 20.0,
    "segment_threshold": None,
}
ROOT = "/data/talks"
# path: [(start_s, end_s, end_reason, offset, prob, offscreen)], in time order. The filter
# defaults (prob ≥ 0.5, off-screen ≤ 0.2) reject a's second segment and b's only one.
SEGMENTS_BY_CLIP = {
    "a.mp4": [
        (0.0, 4.0, "silence", 2, 0.90, 0.0),
        (5.0, 12.0, "other_speaker", 2, 0.30, 0.0),  # low probability
        (12.0, 32.0, "max_length", 3, 0.80, 0.0),
        (32.0, 35.5, "silence", 3, 0.85, 0.0),
    ],
    "b.mp4": [(1.5, 13.5, "shot_cut", -1, 0.95, 0.5)],  # off-screen
    "c.mp4": [
        (0.0, 2.5, "other_speaker", 0, 0.70, 0.0),
        (3.0, 9.0, "silence", 0, 0.60, 0.0),
    ],
}
FAILED = {"bad.mp4": "decode_error"}
N_SEGMENTS = 7
N_CLIPS = 3
SECONDS = 4.0 + 7.0 + 20.0 + 3.5 + 12.0 + 2.5 + 6.0  # 55 s = 0.02 h
KEPT_SECONDS = 4.0 + 20.0 + 3.5 + 2.5 + 6.0  # 36 s = 0.01 h
KEPT_AT_DEFAULTS = 5
END_REASON_COUNTS = {"silence": 3, "other_speaker": 2, "max_length": 1, "shot_cut": 1}
LENGTH_BARS = {2: 1, 3: 1, 4: 1, 6: 1, 7: 1, 12: 1, 19: 1}  # one-second bars; 20 s in the last
OFFSET_COUNTS = {-1: 1, 0: 2, 2: 2, 3: 2}
MOST_SEGMENTS = ["a.mp4", "c.mp4", "b.mp4"]  # 4, 2, 1 segments
MOST_HOURS = ["a.mp4", "b.mp4", "c.mp4"]  # 34.5 s, 12 s, 8.5 s


def segment_row(path: str, number: int, segment: tuple) -> dict:
    start, end, reason, offset, prob, offscreen = segment
    return {
        "root": ROOT,
        "path": path,
        "status": "ok",
        "segment": number,
        "shot": 0,
        "face_track": 0,
        "start_s": start,
        "end_s": end,
        "offset_frames": offset,
        "prob_at_offset": prob,
        "offscreen_ratio": offscreen,
        "end_reason": reason,
        "model": "m",
    }


@pytest.fixture
def segments_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "segments"
    writer, _ = parts.open_output(folder, PINS, table=SEGMENTS)
    with writer:
        for path, segments in SEGMENTS_BY_CLIP.items():
            for number, segment in enumerate(segments):
                writer.add(segment_row(path, number, segment))
        for path, status in FAILED.items():
            writer.add({"root": ROOT, "path": path, "status": status, "model": "m"})
    return folder


def summary_of(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="summary">(.*?)</script>', page)
    return json.loads(found.group(1))


def bar_counts(page: str, metric: str) -> list[int]:
    """The data-count of every bar of the figure of `metric`, left to right."""
    figure = re.search(rf'<figure data-metric="{metric}">(.*?)</figure>', page, re.S).group(1)
    return [int(count) for count in re.findall(r'data-count="(\d+)"', figure)]


def written_report(folder: Path, tmp_path: Path) -> tuple[dict, str]:
    """(summary returned, page) of `write_report` on `folder`; the page embeds the summary."""
    page_path = tmp_path / "report.html"
    summary = report.write_report(folder, page_path, with_thumbnails=False)
    page = page_path.read_text()
    assert summary_of(page) == summary | {"generated_at": summary_of(page)["generated_at"]}
    return summary, page


def fact(page: str, name: str) -> str:
    """The value cell of row `name` of the totals table."""
    return re.search(rf"<tr><th>{re.escape(name)}</th><td>(.*?)</td></tr>", page).group(1)


def test_totals_count_segments_and_their_hours_in_all_and_kept_at_the_filter_defaults(
    segments_folder, tmp_path
):
    summary, page = written_report(segments_folder, tmp_path)
    assert (summary["segments"], summary["clips"]) == (N_SEGMENTS, N_CLIPS)
    assert summary["hours"] == pytest.approx(SECONDS / 3600)
    assert summary["kept"]["segments"] == KEPT_AT_DEFAULTS
    assert summary["kept"]["hours"] == pytest.approx(KEPT_SECONDS / 3600)
    assert summary["kept"]["by"] == report.KEPT_BY_DEFAULTS
    assert summary["not_scored"] == {"decode_error": 1}
    assert fact(page, "segments") == "7"
    assert fact(page, "clips with segments") == "3"
    assert fact(page, "hours of segments") == "0.02 h"  # 55 s
    assert fact(page, "kept by the filter defaults") == "5 segments (71.4 %), 0.01 h"  # 36 s


def test_the_length_histogram_has_one_bar_a_second_up_to_the_longest_segment(
    segments_folder, tmp_path
):
    summary, page = written_report(segments_folder, tmp_path)
    expected = [LENGTH_BARS.get(second, 0) for second in range(20)]
    assert summary["lengths"]["edges"] == [float(second) for second in range(21)]
    assert summary["lengths"]["counts"] == expected
    assert bar_counts(page, "segment_length_s") == expected
    assert summary["lengths"]["median"] == pytest.approx(6.0)


def test_end_reasons_are_counted_per_segment_with_their_hours(segments_folder, tmp_path):
    summary, page = written_report(segments_folder, tmp_path)
    assert list(summary["end_reasons"]) == list(END_REASONS)  # every reason, zeros too
    for reason in END_REASONS:
        count = END_REASON_COUNTS.get(reason, 0)
        assert summary["end_reasons"][reason]["segments"] == count
        cell = re.search(
            rf'<tr data-reason="{reason}">(?:<td>.*?</td>){{2}}<td class="n">(\d+)<', page
        )
        assert int(cell.group(1)) == count
    assert summary["end_reasons"]["silence"]["hours"] == pytest.approx((4.0 + 3.5 + 6.0) / 3600)


def test_segment_offsets_get_one_bar_a_frame_over_the_search_range(segments_folder, tmp_path):
    summary, page = written_report(segments_folder, tmp_path)
    expected = [OFFSET_COUNTS.get(offset, 0) for offset in range(-15, 16)]
    assert summary["offsets"]["counts"] == expected
    assert bar_counts(page, "offset_frames") == expected
    assert summary["median_offset"] == 2


def test_the_clips_with_most_segments_and_most_hours_are_listed_in_order(segments_folder, tmp_path):
    summary, page = written_report(segments_folder, tmp_path)
    assert [c["path"] for c in summary["most_segments"]] == MOST_SEGMENTS
    assert [c["path"] for c in summary["most_hours"]] == MOST_HOURS
    first = summary["most_segments"][0]
    assert (first["segments"], first["kept"]) == (4, 3)
    assert first["hours"] == pytest.approx(34.5 / 3600)
    for table_id, paths in (("most-segments", MOST_SEGMENTS), ("most-hours", MOST_HOURS)):
        table = re.search(rf'<table id="{table_id}">(.*?)</table>', page).group(1)
        assert re.findall(r'data-path="([^"]+)"', table) == paths
    assert f'href="file://{ROOT}/a.mp4"' in page


def test_a_kept_table_written_by_filter_is_the_kept_set_whatever_its_thresholds(
    segments_folder, tmp_path
):
    """Filtered at --min-prob 0.25, a's low-probability segment (7 s) is kept too: the page
    counts the filter's verdict, not the defaults'."""
    kept_table = tmp_path / "kept.parquet"
    runner = CliRunner()
    result = runner.invoke(
        app, ["filter", str(segments_folder), "-o", str(kept_table), "--min-prob", "0.25"]
    )
    assert result.exit_code == 0, result.output
    summary, page = written_report(kept_table, tmp_path)
    assert summary["segments"] == KEPT_AT_DEFAULTS + 1
    assert summary["kept"] == {
        "segments": KEPT_AT_DEFAULTS + 1,
        "hours": pytest.approx((KEPT_SECONDS + 7.0) / 3600),
        "by": report.KEPT_BY_KEPT_OUTPUT,
    }
    kept_fact = fact(page, html.escape(f"kept by {report.KEPT_BY_KEPT_OUTPUT}"))
    assert kept_fact == "6 segments (100.0 %), 0.01 h"  # 43 s


def test_a_rescored_clip_counts_only_its_latest_segments(segments_folder, tmp_path):
    writer, _ = parts.open_output(segments_folder, PINS, table=SEGMENTS)
    with writer:  # c.mp4 again: one segment of 10 s instead of 2.5 s + 6 s
        writer.add(segment_row("c.mp4", 0, (0.0, 10.0, "clip_end", 0, 0.9, 0.0)))
    summary, _ = written_report(segments_folder, tmp_path)
    assert summary["segments"] == N_SEGMENTS - 1
    assert summary["hours"] == pytest.approx((SECONDS - 8.5 + 10.0) / 3600)
    assert summary["end_reasons"]["clip_end"]["segments"] == 1


def test_the_command_prints_segments_and_refuses_to_compare_them(segments_folder, tmp_path):
    runner = CliRunner()
    page = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(segments_folder), "-o", str(page)])
    assert result.exit_code == 0, result.output
    assert "7 segments of 3 clips, 0.02 h; kept by the filter defaults: 5 segments, 0.01 h" in (
        " ".join(result.output.split())
    )
    compared = runner.invoke(
        app, ["report", str(segments_folder), "-o", str(page), "--reference", str(segments_folder)]
    )
    assert compared.exit_code != 0 and "segments table" in compared.output
    with pytest.raises(ValueError, match="segments table"):
        report.load(segments_folder)  # one row per clip would drop segments
