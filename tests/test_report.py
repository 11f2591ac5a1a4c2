"""`synccurate report`: the numbers on the page against a table built by hand."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.curate import report
from synccurate.curate.filtering import FilterRules, apply_filter
from synccurate.store.schema import rows_to_frame
from synccurate.training import synth

MODEL = "icsyncnet@aaaa1111"
# name: (offset, prob, offscreen, face, silence, at_edge, kept by the filter defaults)
OK_CASES = {
    "a.mp4": (1, 0.92, 0.00, 1.00, 0.10, False, True),
    "b.mp4": (1, 0.82, 0.12, 0.96, 0.05, False, True),
    "c.mp4": (1, 0.50, 0.20, 0.91, 0.22, False, True),  # exactly at both defaults
    "d.mp4": (0, 0.49, 0.00, 0.88, 0.31, False, False),  # low probability
    "e.mp4": (2, 0.96, 0.21, 0.77, 0.02, False, False),  # off-screen
    "f.mp4": (-3, 0.33, 0.62, 0.63, 0.47, False, False),  # both
    "g.mp4": (15, 0.72, 0.06, 0.99, 0.12, True, True),  # at the search edge: kept by default
    "h.mp4": (-15, 0.23, 0.14, 0.84, 0.08, True, False),
    "i.mp4": (1, 0.99, 0.00, 1.00, 0.01, False, True),
    "j.mp4": (1, 0.66, 0.16, 0.93, 0.17, False, True),
}
# name: (status, error after the path, duration)
FAILED_CASES = {
    "x1.mp4": ("no_audio", "no audio stream", 4.0),
    "x2.mp4": ("no_audio", "no audio stream", 4.0),
    "x3.mp4": ("no_audio", "no audio stream", 4.0),
    "y1.mp4": (
        "no_face",
        "a face in only 12% of frames (or in no run of 5 consecutive frames)",
        5.0,
    ),
    "y2.mp4": (
        "no_face",
        "a face in only 31% of frames (or in no run of 5 consecutive frames)",
        5.0,
    ),
    "z.mp4": ("decode_error", "moov atom not found", None),
    "w.mp4": ("error", "RuntimeError: boom", None),
}
N_CLIPS = len(OK_CASES) + len(FAILED_CASES)
KEPT = [name for name, case in OK_CASES.items() if case[-1]]
OK_SECONDS = 6.0
T = 146  # visual windows per ok clip (150 frames)


def ok_row(root: str, name: str, case: tuple) -> dict:
    offset, prob, offscreen, face, silence, edge, _ = case
    profile = (np.exp(-0.5 * ((np.arange(-15, 16) - offset) / 2.0) ** 2) * 0.6).round(4)
    return {
        "root": root,
        "path": f"talks/{name}",
        "status": "ok",
        "error": None,
        "duration_s": OK_SECONDS,
        "n_frames": T + 4,
        "source_fps": 25.0,
        "offset_frames": offset,
        "offset_seconds": offset / 25,
        "prob_at_offset": prob,
        "offscreen_ratio": offscreen,
        "confidence": 0.4,
        "face_ratio": face,
        "silence_ratio": silence,
        "at_search_edge": edge,
        "model": MODEL,
        "face_detector": "opencv",
        "p_t": np.clip(np.linspace(prob - 0.2, prob + 0.2, T), 0, 1).round(4).tolist(),
        "onscreen": [True] * T,
        "profile": profile.tolist(),
    }


def failed_row(root: str, name: str, case: tuple) -> dict:
    status, message, duration = case
    return {
        "root": root,
        "path": f"talks/{name}",
        "status": status,
        "error": f"{root}/talks/{name}: {message}",
        "duration_s": duration,
        "model": MODEL,
        "face_detector": "opencv" if status == "no_face" else None,
        "face_ratio": 0.2 if status == "no_face" else None,
    }


def make_frame(root: str) -> pd.DataFrame:
    rows = [ok_row(root, name, case) for name, case in OK_CASES.items()]
    rows += [failed_row(root, name, case) for name, case in FAILED_CASES.items()]
    return rows_to_frame(rows)


def make_scores(tmp_path: Path, with_clip: bool = False) -> tuple[Path, pd.DataFrame]:
    """The hand-built table as scores.parquet; with_clip writes a real h.mp4 (the lowest
    probability clip, so it is listed with a thumbnail)."""
    root = tmp_path / "clips"
    if with_clip:
        synth.synth_clip(root / "talks" / "h.mp4", seconds=1.0, seed=3, size=64)
    frame = make_frame(str(root))
    path = tmp_path / "scores.parquet"
    frame.to_parquet(path, index=False)
    return path, frame


def summary_of(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    match = re.search(r'<script type="application/json" id="summary">(.*?)</script>', text, re.S)
    assert match, "no summary block"
    return json.loads(match.group(1))


@pytest.fixture
def rendered(tmp_path) -> tuple[dict, pd.DataFrame, Path]:
    scores, frame = make_scores(tmp_path)
    page = tmp_path / "out" / "report.html"
    report.write_report(scores, page, worst=3, with_thumbnails=False)
    return summary_of(page), frame, page


def test_counts_and_totals_match_the_table(rendered):
    summary, frame, _ = rendered
    assert summary["n_clips"] == N_CLIPS and summary["n_ok"] == len(OK_CASES)
    assert summary["statuses"] == frame["status"].value_counts().to_dict()
    assert summary["statuses"] == {
        "ok": 10,
        "no_audio": 3,
        "no_face": 2,
        "decode_error": 1,
        "error": 1,
    }
    seconds = len(OK_CASES) * OK_SECONDS + 3 * 4.0 + 2 * 5.0
    assert summary["hours"] == pytest.approx(seconds / 3600)
    assert summary["models"] == {MODEL: N_CLIPS}
    assert summary["face_detectors"] == {"opencv": len(OK_CASES) + 2}
    kinds = {(g["status"], g["kind"]): g["clips"] for g in summary["errors"]}
    assert kinds == {
        ("no_audio", "no audio stream"): 3,
        ("no_face", "a face in only N% of frames (or in no run of N consecutive frames)"): 2,
        ("decode_error", "moov atom not found"): 1,
        ("error", "RuntimeError: boom"): 1,
    }
    assert summary["errors"][0]["example"] == "talks/x1.mp4"
    assert summary["at_search_edge"] == 2


def test_histograms_match_the_table(rendered):
    summary, frame, _ = rendered
    hists = summary["histograms"]
    offsets = hists["offset_frames"]
    assert summary["max_offset"] == 15 and len(offsets["counts"]) == 31
    by_offset = dict(zip(range(-15, 16), offsets["counts"], strict=True))
    assert {k: v for k, v in by_offset.items() if v} == {-15: 1, -3: 1, 0: 1, 1: 5, 2: 1, 15: 1}
    assert summary["median_offset"] == 1
    for metric in ("prob_at_offset", "offscreen_ratio", "face_ratio", "silence_ratio"):
        values = pd.to_numeric(frame[metric]).dropna().to_numpy(dtype=float)
        expected, _ = np.histogram(values, bins=np.asarray(hists[metric]["edges"]))
        assert hists[metric]["counts"] == expected.tolist(), metric
        assert hists[metric]["n"] == len(values) and len(hists[metric]["counts"]) == 20
    assert hists["face_ratio"]["n"] == len(OK_CASES) + 2  # no_face clips have a face ratio too
    assert hists["prob_at_offset"]["counts"][4] == 1  # 0.23 in [0.20, 0.25)
    assert hists["prob_at_offset"]["counts"][10] == 1  # 0.50 in [0.50, 0.55)
    assert "lse_c" not in hists and "vote_share" not in hists


def test_kept_fractions_at_the_filter_defaults(rendered):
    summary, frame, page = rendered
    t = summary["thresholds"]
    assert t["defaults"] == {"min_prob": 0.5, "max_offscreen": 0.2}
    kept, _ = apply_filter(frame, FilterRules())
    assert sorted(kept["path"]) == [f"talks/{n}" for n in KEPT]
    assert t["kept_at_defaults"] == len(KEPT) == 6
    assert t["kept_fraction_at_defaults"] == pytest.approx(6 / N_CLIPS)
    prob, offscreen = t["prob"], t["offscreen"]
    at_p = prob["thresholds"].index(0.5)
    at_o = offscreen["thresholds"].index(0.2)
    assert prob["with_defaults"][at_p] == offscreen["with_defaults"][at_o] == pytest.approx(6 / 17)
    assert prob["alone"][at_p] == pytest.approx(7 / 17)  # a b c e g i j
    assert offscreen["alone"][at_o] == pytest.approx(8 / 17)  # all but e f
    assert prob["alone"][0] == offscreen["alone"][-1] == pytest.approx(10 / 17)
    grid = t["grid"]
    cell = grid["kept_fraction"][grid["offscreen"].index(0.2)][grid["prob"].index(0.5)]
    assert cell == pytest.approx(6 / 17, abs=1e-4)
    assert t["near_prob"] == 2  # 0.49 and 0.50 within ±0.05 of 0.5
    assert t["near_offscreen"] == 3  # 0.16, 0.20, 0.21
    assert 'id="kept-at-defaults">6 of 17 clips' in page.read_text(encoding="utf-8")


def test_worst_clips_lists(rendered):
    summary, _, page = rendered
    worst = summary["worst"]
    paths = {name: [c["path"] for c in item["clips"]] for name, item in worst.items()}
    assert paths["lowest_prob"] == ["talks/h.mp4", "talks/f.mp4", "talks/d.mp4"]
    assert paths["highest_offscreen"] == ["talks/f.mp4", "talks/e.mp4", "talks/c.mp4"]
    assert paths["search_edge"] == ["talks/h.mp4", "talks/g.mp4"]
    assert worst["lowest_prob"]["total"] == 10 and worst["search_edge"]["total"] == 2
    assert worst["lowest_prob"]["clips"][0]["value"] == 0.23
    text = page.read_text(encoding="utf-8")
    clip = Path(summary["worst"]["lowest_prob"]["clips"][0]["root"]) / "talks" / "h.mp4"
    assert f'href="{clip.as_uri()}"' in text
    assert text.count('class="spark"') == 2 * 8  # profile + p_t for each listed clip
    assert "low_prob, offscreen" in text  # f.mp4's verdict


def test_page_loads_nothing_from_the_network(rendered):
    _, _, page = rendered
    text = page.read_text(encoding="utf-8")
    references = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", text, re.I)
    references += re.findall(r"url\(\s*['\"]?([^'\")]+)", text, re.I)
    assert references and all(ref.startswith(("data:", "file:", "#")) for ref in references)
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", text, re.I)
    assert "http://" not in text and "https://" not in text  # not even an SVG namespace
    assert "@import" not in text and '<link rel="stylesheet"' not in text
    scripts = re.findall(r"<script[^>]*>", text)
    assert scripts == ['<script type="application/json" id="summary">']
    assert summary_of(page)  # the JSON block parses (no NaN, no raw "</")


def test_median_offset_called_out_only_when_not_zero(tmp_path):
    frame = make_frame("/data/clips")
    frame["offset_frames"] = frame["offset_frames"].where(frame["status"] != "ok", 0)
    frame.to_parquet(tmp_path / "zero.parquet", index=False)
    report.write_report(tmp_path / "zero.parquet", tmp_path / "zero.html", with_thumbnails=False)
    assert summary_of(tmp_path / "zero.html")["median_offset"] == 0
    assert 'id="median-offset"' not in (tmp_path / "zero.html").read_text(encoding="utf-8")
    scores, _ = make_scores(tmp_path)
    report.write_report(scores, tmp_path / "one.html", with_thumbnails=False)
    text = (tmp_path / "one.html").read_text(encoding="utf-8")
    assert 'id="median-offset"' in text and "<b>+1 frames</b>" in text


def test_folder_of_parts_keeps_the_latest_row_per_clip(tmp_path):
    frame = make_frame("/data/clips")
    frame["scored_at"] = pd.Timestamp("2025-01-01", tz="UTC")
    rescored = frame[frame["path"].isin(["talks/d.mp4", "talks/x1.mp4"])].copy()
    rescored["scored_at"] = pd.Timestamp("2025-02-01", tz="UTC")
    rescored["prob_at_offset"] = 0.9  # d.mp4 now passes
    rescored["status"] = "ok"  # x1.mp4 now scored
    rescored["error"] = None
    for column, value in {"offset_frames": 0, "offscreen_ratio": 0.0}.items():
        rescored[column] = rescored[column].fillna(value)
    parts = tmp_path / "scores"
    parts.mkdir()
    rescored.to_parquet(parts / "a-newer.parquet", index=False)  # read first, yet newer
    frame.to_parquet(parts / "b-older.parquet", index=False)
    (parts / ".b-older.parquet.123.tmp").write_bytes(b"half written")  # ignored like pandas
    page = tmp_path / "report.html"
    summary = report.write_report(parts, page, with_thumbnails=False)
    assert summary["rows_read"] == N_CLIPS + 2 and summary["duplicates_dropped"] == 2
    assert summary["n_clips"] == N_CLIPS
    assert summary["statuses"]["ok"] == len(OK_CASES) + 1
    assert summary["statuses"]["no_audio"] == 2
    assert summary["thresholds"]["kept_at_defaults"] == len(KEPT) + 2
    with pytest.raises(ValueError, match="inside the scores folder"):
        report.write_report(parts, parts / "report.html")


def test_distance_model_table_shows_lse_and_vote_share(tmp_path):
    frame = make_frame("/data/clips")
    ok = frame["status"] == "ok"
    frame["prob_at_offset"] = np.nan
    frame["offscreen_ratio"] = np.nan
    frame["lse_c"] = np.where(ok, np.linspace(1.0, 9.0, len(frame)), np.nan)
    frame["lse_d"] = np.where(ok, np.linspace(9.0, 6.0, len(frame)), np.nan)
    frame["vote_share"] = np.where(ok, 0.8, np.nan)
    frame.to_parquet(tmp_path / "lse.parquet", index=False)
    summary = report.write_report(
        tmp_path / "lse.parquet", tmp_path / "lse.html", worst=3, with_thumbnails=False
    )
    hists = summary["histograms"]
    assert hists["lse_c"]["n"] == hists["lse_d"]["n"] == len(OK_CASES)
    assert sum(hists["lse_c"]["counts"]) == len(OK_CASES)
    assert hists["vote_share"]["counts"][16] == len(OK_CASES)  # 0.8 in [0.80, 0.85)
    assert hists["prob_at_offset"]["n"] == 0
    assert [c["path"] for c in summary["worst"]["lowest_lse_c"]["clips"]] == [
        "talks/a.mp4",
        "talks/b.mp4",
        "talks/c.mp4",
    ]
    assert "lowest_prob" not in summary["worst"]
    # Distance rows are judged by lse_c >= 3 (filter's default for them), not by probability.
    assert summary["thresholds"]["kept_at_defaults"] == int((frame["lse_c"] >= 3.0).sum()) > 0
    text = (tmp_path / "lse.html").read_text(encoding="utf-8")
    assert "thresholds do not apply" in text and 'data-metric="lse_c"' in text


def test_thumbnail_of_a_real_clip_and_a_placeholder_otherwise(tmp_path):
    scores, frame = make_scores(tmp_path, with_clip=True)
    uri, why = report.thumbnail(tmp_path / "clips" / "talks" / "h.mp4")
    assert why == "" and uri.startswith("data:image/jpeg;base64,")
    import cv2

    picture = cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8), 1)
    assert picture.shape == (report.THUMB_WIDTH, report.THUMB_WIDTH, 3)  # square synth clip
    missing, why = report.thumbnail(tmp_path / "clips" / "talks" / "f.mp4")
    assert missing is None and "no such file" in why
    page = tmp_path / "report.html"
    report.write_report(scores, page, worst=3)
    text = page.read_text(encoding="utf-8")
    assert text.count('data-thumbnail="frame"') == 2  # h.mp4: lowest prob and search edge
    assert uri in text
    assert text.count('data-thumbnail="placeholder"') == (3 + 3 + 2) - 2  # 8 rows listed


def test_read_lists_reads_only_the_picked_rows_across_row_groups(tmp_path):
    frame = make_frame("/data/clips")
    path = tmp_path / "groups.parquet"
    frame.to_parquet(path, index=False, row_group_size=4)
    scores = report.load(path)
    assert "p_t" not in scores.table.columns and "profile" not in scores.table.columns
    picks = scores.table.iloc[[1, 6, 9]]
    lists = report.read_lists(scores, picks)
    assert sorted(lists) == [(0, 1), (0, 6), (0, 9)]
    for row in (1, 6, 9):
        assert lists[(0, row)]["p_t"] == pytest.approx(list(frame.at[row, "p_t"]))
        assert lists[(0, row)]["profile"] == pytest.approx(list(frame.at[row, "profile"]))


def test_error_kind_strips_the_path_and_numbers():
    assert (
        report.error_kind("/r/a b/c.mp4: no audio stream", "/r", "a b/c.mp4") == "no audio stream"
    )
    assert report.error_kind("elsewhere/clip.MKV: only 3 frames at 25 fps") == (
        "only N frames at N fps"
    )
    assert report.error_kind("'x.mp4': Invalid data found") == "Invalid data found"
    assert report.error_kind(None) == "(no message)"


def simulated(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ok = rng.random(n) > 0.05
    frame = pd.DataFrame(
        {
            "root": "/data/clips",
            "path": [f"c{i:07d}.mp4" for i in range(n)],
            "status": np.where(ok, "ok", "no_face"),
            "error": np.where(
                ok, None, [f"/data/clips/c{i:07d}.mp4: a face in 1%" for i in range(n)]
            ),
            "duration_s": rng.uniform(2, 10, n),
            "offset_frames": np.where(ok, rng.integers(-3, 4, n), np.nan),
            "prob_at_offset": np.where(ok, rng.beta(5, 2, n), np.nan),
            "offscreen_ratio": np.where(ok, rng.beta(1, 8, n), np.nan),
            "face_ratio": rng.uniform(0.3, 1, n),
            "silence_ratio": rng.beta(2, 8, n),
            "at_search_edge": False,
            "model": MODEL,
            "face_detector": "opencv",
        }
    )
    frame["p_t"] = [rng.uniform(0, 1, 60).round(4) for _ in range(n)]
    frame["profile"] = [rng.uniform(0, 1, 31).round(4) for _ in range(n)]
    return frame


def test_page_size_does_not_grow_with_the_table(tmp_path):
    sizes = {}
    for n in (100, 20_000):
        simulated(n).to_parquet(tmp_path / f"{n}.parquet", index=False)
        page = tmp_path / f"{n}.html"
        summary = report.write_report(tmp_path / f"{n}.parquet", page, with_thumbnails=False)
        assert summary["n_clips"] == n
        sizes[n] = page.stat().st_size
    assert sizes[20_000] < 1.25 * sizes[100], sizes


def test_report_command(tmp_path):
    scores, _ = make_scores(tmp_path)
    runner = CliRunner()
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(scores), "-o", str(out), "--no-thumbnails"])
    assert result.exit_code == 0, result.output
    assert summary_of(out)["n_clips"] == N_CLIPS
    assert "6 kept at the filter defaults" in " ".join(result.output.split())  # rich wraps
    refused = runner.invoke(app, ["report", str(scores), "-o", str(scores)])
    assert refused.exit_code == 2 and len(pd.read_parquet(scores)) == N_CLIPS
    missing = runner.invoke(app, ["report", str(tmp_path / "nope.parquet")])
    assert missing.exit_code == 2
    assert math.isclose(summary_of(out)["thresholds"]["kept_fraction_at_defaults"], 6 / N_CLIPS)
