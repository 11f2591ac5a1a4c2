"""`synccurate report`: per-model means with their spread, and `--reference` (a second table
compared model by model and clip by clip). Known answers worked out by hand."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from test_report import summary_of
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.curate import compare, report
from synccurate.io.files import write_table
from synccurate.store.schema import rows_to_frame

V2 = "syncnet-v2@11111111"
IC = "icsyncnet@22222222"


def row(root: str, name: str, status: str = "ok", model: str = V2, **metrics) -> dict:
    return {
        "root": root,
        "path": name,
        "status": status,
        "error": None if status == "ok" else f"{root}/{name}: boom",
        "duration_s": 4.0,
        "model": model,
        **metrics,
    }


# --- per-model means ------------------------------------------------------------------------


def two_models() -> pd.DataFrame:
    rows = [
        row("/d", "v1.mp4", lse_d=6.0, lse_c=7.5, offset_frames=0),
        row("/d", "v2.mp4", lse_d=7.0, lse_c=8.5, offset_frames=-1),
        row("/d", "v3.mp4", lse_d=8.0, lse_c=6.0, offset_frames=2),
        row("/d", "v4.mp4", lse_d=None, lse_c=None, offset_frames=None),  # ok without values
        row("/d", "v5.mp4", "no_face", lse_d=99.0, lse_c=-9.0, offset_frames=15),  # stale values
        row("/d", "p1.mp4", model=IC, prob_at_offset=0.9, offset_frames=-2),
        row("/d", "p2.mp4", model=IC, prob_at_offset=0.6, offset_frames=1),
        row("/d", "p3.mp4", model=IC, prob_at_offset=0.3, offset_frames=3),
        row("/d", "p4.mp4", "decode_error", model=IC, prob_at_offset=0.01, offset_frames=-15),
    ]
    return rows_to_frame(rows)


@pytest.fixture
def models_page(tmp_path) -> tuple[dict, str, pd.DataFrame]:
    frame = two_models()
    scores = write_table(frame, tmp_path / "models.parquet")
    page = tmp_path / "models.html"
    report.write_report(scores, page, worst=3, with_thumbnails=False)
    return summary_of(page), page.read_text(encoding="utf-8"), pd.read_parquet(scores)


def test_per_model_means_and_sample_spread_by_hand(models_page):
    summary, _, _ = models_page
    assert summary["spread"] == "sample standard deviation (ddof = 1)"
    by_model = {entry["model"]: entry for entry in summary["per_model"]}
    v2, ic = by_model[V2], by_model[IC]
    assert (v2["clips"], v2["ok"], ic["clips"], ic["ok"]) == (5, 4, 4, 3)
    # LSE-D 6, 7, 8: mean 7, sample sd sqrt((1 + 0 + 1) / 2) = 1 (population: 0.816)
    assert v2["metrics"]["lse_d"] == {"n": 3, "mean": 7.0, "sd": 1.0}
    # LSE-C 7.5, 8.5, 6: mean 22/3, deviations 1/6, 7/6, -4/3
    sd_c = math.sqrt(((1 / 6) ** 2 + (7 / 6) ** 2 + (4 / 3) ** 2) / 2)
    assert v2["metrics"]["lse_c"]["mean"] == pytest.approx(22 / 3)
    assert v2["metrics"]["lse_c"]["sd"] == pytest.approx(sd_c)
    # |offset| 0, 1, 2 (signed mean would be 1/3): mean 1, sample sd 1
    assert v2["metrics"]["abs_offset"] == {"n": 3, "mean": 1.0, "sd": 1.0}
    assert "prob_at_offset" not in v2["metrics"]
    # P(sync) 0.9, 0.6, 0.3: mean 0.6, sample sd 0.3; |offset| 2, 1, 3: mean 2, sd 1
    assert ic["metrics"]["prob_at_offset"]["mean"] == pytest.approx(0.6)
    assert ic["metrics"]["prob_at_offset"]["sd"] == pytest.approx(0.3)
    assert ic["metrics"]["abs_offset"] == {"n": 3, "mean": 2.0, "sd": 1.0}
    assert "lse_d" not in ic["metrics"]


def test_per_model_means_equal_numpy_on_the_table(models_page):
    summary, _, table = models_page
    ok = table[table["status"] == "ok"]
    for entry in summary["per_model"]:
        rows = ok[ok["model"] == entry["model"]]
        for name, stat in entry["metrics"].items():
            column = rows["offset_frames"].abs() if name == "abs_offset" else rows[name]
            values = column.dropna().to_numpy(dtype=float)
            assert stat["n"] == len(values)
            assert stat["mean"] == pytest.approx(np.mean(values))
            assert stat["sd"] == pytest.approx(np.std(values, ddof=1))


def test_per_model_lines_as_papers_print_them(models_page):
    summary, text, _ = models_page
    lines = report.console_lines(summary)
    assert lines[0] == (
        f"{V2}: LSE-D 7.000 ± 1.000, LSE-C 7.333 ± 1.258, |offset| 1.000 ± 1.000 (n = 3)"
    )
    assert lines[1] == f"{IC}: P(sync) 0.600 ± 0.300, |offset| 2.000 ± 1.000 (n = 3)"
    assert '<pre id="model-lines">' in text and "LSE-D 7.000 ± 1.000" in text
    cell = re.search(rf'<tr data-model="{re.escape(V2)}">(.*?)</tr>', text).group(1)
    assert '<td class="n" data-metric="lse_d">7.000 ± 1.000</td>' in cell


def test_spread_of_one_value_is_none():
    assert compare.spread(np.array([4.0, np.nan])) == {"n": 1, "mean": 4.0, "sd": None}
    assert compare.spread(np.array([])) == {"n": 0, "mean": None, "sd": None}
    assert compare.format_spread({"n": 1, "mean": 4.0, "sd": None}) == "4.000 ± –"


# --- --reference ----------------------------------------------------------------------------


def generated() -> pd.DataFrame:
    rows = [
        row("/data/gen", "a.mp4", lse_d=8.0, lse_c=5.0, offset_frames=1),
        row("/data/gen", "b.mp4", lse_d=7.5, lse_c=6.5, offset_frames=0),
        row("/data/gen", "c.mp4", lse_d=9.0, lse_c=4.0, offset_frames=-2),
        row("/data/gen", "d.mp4", "no_face", lse_d=9.9, lse_c=1.0, offset_frames=5),  # failed
        row("/data/gen", "e.mp4", lse_d=6.0, lse_c=7.0, offset_frames=0),
        row("/data/gen", "only_gen.mp4", lse_d=7.0, lse_c=6.0, offset_frames=0),
        row("/data/gen", "dup.mp4", lse_d=7.0, lse_c=6.0, offset_frames=0),  # under two roots
        row("/data/gen2", "dup.mp4", lse_d=7.0, lse_c=6.0, offset_frames=0),
    ]
    return rows_to_frame(rows)


def real() -> pd.DataFrame:
    rows = [
        row("/data/real", "a.mp4", lse_d=6.5, lse_c=7.0, offset_frames=0),
        row("/data/real", "b.mp4", lse_d=7.0, lse_c=6.0, offset_frames=0),
        row("/data/real", "c.mp4", lse_d=6.0, lse_c=7.5, offset_frames=1),
        row("/data/real", "d.mp4", lse_d=6.2, lse_c=8.0, offset_frames=0),
        row("/data/real", "e.mp4", "no_face", lse_d=9.0, lse_c=9.0, offset_frames=0),  # failed
        row("/data/real", "only_ref1.mp4", lse_d=6.0, lse_c=8.0, offset_frames=0),
        row("/data/real", "only_ref2.mp4", "no_audio"),
        row("/data/real", "dup.mp4", lse_d=6.0, lse_c=8.0, offset_frames=0),
    ]
    return rows_to_frame(rows)


# Δ = generated − real over a, b, c (ok in both; d failed in gen, e in real; dup ambiguous)
DELTA = {
    "lse_c": {"a.mp4": 5.0 - 7.0, "b.mp4": 6.5 - 6.0, "c.mp4": 4.0 - 7.5},
    "lse_d": {"a.mp4": 8.0 - 6.5, "b.mp4": 7.5 - 7.0, "c.mp4": 9.0 - 6.0},
    "offset_frames": {"a.mp4": 1 - 0, "b.mp4": 0 - 0, "c.mp4": -2 - 1},
    "abs_offset": {"a.mp4": 1 - 0, "b.mp4": 0 - 0, "c.mp4": 2 - 1},
}


def by_hand(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@pytest.fixture
def compared(tmp_path) -> tuple[dict, str]:
    gen = write_table(generated(), tmp_path / "gen" / "scores.parquet")
    ref = write_table(real(), tmp_path / "real" / "scores.parquet")
    page = tmp_path / "compared.html"
    report.write_report(gen, page, worst=10, with_thumbnails=False, reference=ref)
    return summary_of(page), page.read_text(encoding="utf-8")


def test_clips_are_matched_by_relative_path_and_counted(compared):
    summary, text = compared
    c = summary["comparison"]
    assert c["matched_by"] == "path"
    assert c["counts"] == {
        "matched": 5,  # a b c d e
        "both_ok": 3,  # a b c
        "only_here": 1,  # only_gen
        "only_reference": 2,  # only_ref1, only_ref2
        "ambiguous_paths": 1,  # dup.mp4: twice in the generated table
        "ambiguous_here": 2,
        "ambiguous_reference": 1,
    }
    assert c["only_here"] == ["only_gen.mp4"]
    assert c["only_reference"] == ["only_ref1.mp4", "only_ref2.mp4"]
    words = " ".join(re.sub(r"<[^>]+>", "", text).split())
    assert "Clips are matched by path" in words
    assert "5 clips are in both tables (3 ok in both), 1 only in this table, 2 only in" in words
    assert "1 paths appear more than once" in words
    assert 'id="only_reference">Only in the reference (2)' in text


def test_per_clip_differences_by_hand(compared):
    summary, text = compared
    c = summary["comparison"]
    assert c["key_metric"] == "lse_c"
    # listed: the clips that lose most LSE-C first: c (-3.5), a (-2.0), b (+0.5)
    assert [clip["path"] for clip in c["clips"]] == ["c.mp4", "a.mp4", "b.mp4"]
    assert c["clips_total"] == 3
    for clip in c["clips"]:
        for name, deltas in DELTA.items():
            assert clip["metrics"][name]["delta"] == pytest.approx(deltas[clip["path"]]), name
    a = c["clips"][1]["metrics"]["lse_c"]
    assert (a["here"], a["reference"], a["delta"]) == (5.0, 7.0, -2.0)
    rows = re.findall(r'<tr data-path="([^"]+)">', text.split('id="clip-differences"')[1])
    assert rows[:3] == ["c.mp4", "a.mp4", "b.mp4"]
    assert "4.000 / 7.500 / <b>-3.500</b>" in text  # c.mp4's LSE-C: here / ref / Δ


def test_mean_differences_and_their_spread_by_hand(compared):
    summary, text = compared
    differences = summary["comparison"]["differences"]
    assert set(differences) == {"lse_d", "lse_c", "abs_offset", "offset_frames"}
    for name, deltas in DELTA.items():
        mean, sd = by_hand(list(deltas.values()))
        stat = differences[name]
        assert stat["n"] == 3, name
        assert stat["mean"] == pytest.approx(mean), name
        assert stat["sd"] == pytest.approx(sd), name
    lse_c = differences["lse_c"]  # Δ -2, +0.5, -3.5: mean -5/3
    assert lse_c["mean"] == pytest.approx(-5 / 3)
    assert lse_c["mean_here"] == pytest.approx((5.0 + 6.5 + 4.0) / 3)
    assert lse_c["mean_reference"] == pytest.approx((7.0 + 6.0 + 7.5) / 3)
    assert (lse_c["higher_here"], lse_c["lower_here"], lse_c["equal"]) == (1, 2, 0)
    assert differences["offset_frames"]["mean"] == pytest.approx(-2 / 3)
    assert differences["abs_offset"]["mean"] == pytest.approx(2 / 3)
    assert "-1.667 ± 2.021" in text


def test_each_tables_per_model_means_side_by_side(compared):
    summary, text = compared
    c = summary["comparison"]
    (here,) = c["per_model"]
    (there,) = c["reference_per_model"]
    # every ok row of each table, matched or not (dup rows included: they are ok rows)
    gen_c = [5.0, 6.5, 4.0, 7.0, 6.0, 6.0, 6.0]
    ref_c = [7.0, 6.0, 7.5, 8.0, 8.0, 8.0]
    assert here["metrics"]["lse_c"]["n"] == len(gen_c)
    assert here["metrics"]["lse_c"]["mean"] == pytest.approx(np.mean(gen_c))
    assert here["metrics"]["lse_c"]["sd"] == pytest.approx(np.std(gen_c, ddof=1))
    assert there["metrics"]["lse_c"]["mean"] == pytest.approx(np.mean(ref_c))
    assert there["metrics"]["lse_c"]["sd"] == pytest.approx(np.std(ref_c, ddof=1))
    assert (here["clips"], here["ok"], there["clips"], there["ok"]) == (8, 7, 8, 6)
    assert 'id="reference-per-model"' in text
    assert c["model_pairs"] == [{"model": V2, "reference_model": V2, "clips": 3}]
    assert c["same_models"] is True


def test_clip_differences_keeps_every_matched_clip():
    pairs, counts = compare.clip_differences(generated(), real())
    assert list(pairs.index) == ["a.mp4", "b.mp4", "c.mp4", "d.mp4", "e.mp4"]
    assert counts["matched"] == 5 and counts["both_ok"] == 3
    assert (
        pairs.loc["d.mp4", "status"] == "no_face" and pairs.loc["e.mp4", "status_ref"] == "no_face"
    )
    assert np.isnan(pairs.loc["d.mp4", "delta_lse_c"]) and np.isnan(
        pairs.loc["e.mp4", "delta_lse_d"]
    )
    assert pairs.loc["c.mp4", "delta_lse_d"] == pytest.approx(3.0)


def test_report_command_with_reference(tmp_path):
    gen = write_table(generated(), tmp_path / "gen.parquet")
    ref = write_table(real(), tmp_path / "real.parquet")
    out = tmp_path / "report.html"
    runner = CliRunner()
    result = runner.invoke(
        app, ["report", str(gen), "--reference", str(ref), "-o", str(out), "--no-thumbnails"]
    )
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert f"{V2}: LSE-D" in output
    assert "matched by path: 5 clips in both (3 ok in both), 1 only in" in output
    assert "Δ LSE-C (this − reference) -1.667 ± 2.021 (n = 3)" in output
    assert summary_of(out)["comparison"]["counts"]["only_reference"] == 2
    missing = runner.invoke(app, ["report", str(gen), "--reference", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    over = runner.invoke(app, ["report", str(gen), "--reference", str(ref), "-o", str(ref)])
    assert over.exit_code == 2 and len(pd.read_parquet(ref)) == len(real())
