"""The data set's own offset (ModEFormer §3.5: an offset is relative to the model's training
data, and LRS2 sits one frame off LRS3): its estimate, and `filter` / `fix` taking it as
"in sync". Tables are built by hand with the columns `score` writes; every expected value
is worked out from the rows below.
"""

import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.curate.filtering import (
    FilterRules,
    confident_clips,
    dataset_offset,
    reject_reasons,
    resolve_reference,
)
from synccurate.curate.fix import plan_fixes
from synccurate.io.files import write_table
from synccurate.store.schema import rows_to_frame
from synccurate.training import synth

# (name, status, offset, prob_at_offset, offscreen_ratio, at_search_edge)
ROWS = (
    [(f"zero_{i}", "ok", 0, 0.8, 0.05, False) for i in range(6)]
    + [("one_a", "ok", 1, 0.8, 0.05, False), ("one_b", "ok", 1, 0.8, 0.05, False)]
    + [(f"k{k:+d}", "ok", k, 0.8, 0.05, False) for k in (-1, 2, -2, 3, -3, 5)]
    + [("talker", "ok", 0, 0.8, 0.5, False)]  # confident, but someone else talks: offscreen
    + [(f"unsure_{i}", "ok", 4, 0.3, 0.05, False) for i in range(8)]  # below min-prob 0.5
    + [(f"edge_{i}", "ok", -15, 0.9, 0.05, True) for i in range(9)]  # at the search edge
    + [
        ("no_face_a", "no_face", None, None, None, None),
        ("no_face_b", "no_face", None, None, None, None),
    ]
)
# Confident (ok, prob >= 0.5, not at the edge): 6 + 2 + 6 + 1 = 15 clips, offset 0 seven
# times. The 8 unsure clips (offset 4) and 9 edge clips (-15) outnumber them: a confidence
# or edge test left out moves the mode there.
UNSHIFTED_DISTRIBUTION = {-3: 1, -2: 1, -1: 1, 0: 7, 1: 2, 2: 1, 3: 1, 5: 1}


def scores_table(shift: int = 0) -> pd.DataFrame:
    """The rows above as `score` writes them; every ok clip's offset moved by `shift`
    (a data set shifted as a whole)."""
    rows = []
    for name, status, offset, prob, offscreen, edge in ROWS:
        ok = status == "ok"
        offset = offset + shift if ok else None
        rows.append(
            {
                "root": "/data/set",
                "path": f"{name}.mp4",
                "status": status,
                "error": None if ok else "no face in 80 % of frames",
                "duration_s": 4.0,
                "n_frames": 100,
                "source_fps": 25.0,
                "offset_frames": offset,
                "offset_seconds": None if offset is None else offset / 25,
                "prob_at_offset": prob,
                "offscreen_ratio": offscreen,
                "confidence": 0.3 if ok else None,
                "face_ratio": 1.0 if ok else 0.2,
                "silence_ratio": 0.1,
                "at_search_edge": edge,
                "vote_offset": offset,
                "vote_share": 0.6 if ok else None,
                "offset_method": "mean" if ok else None,
                "model": "icsyncnet-small@0123abcd",
                "face_detector": "none",
                "p_t": [0.8] * 96 if ok else None,
                "onscreen": [True] * 96 if ok else None,
                "profile": [0.0] * 31 if ok else None,
            }
        )
    return rows_to_frame(rows)


def test_dataset_offset_is_the_mode_over_confident_clips():
    assert dataset_offset(scores_table()) == (0, 15, UNSHIFTED_DISTRIBUTION)
    offset, n_confident, distribution = dataset_offset(scores_table(shift=1))
    assert offset == 1 and n_confident == 15
    assert distribution == {k + 1: n for k, n in UNSHIFTED_DISTRIBUTION.items()}
    mask, rule = confident_clips(scores_table())
    assert mask.sum() == 15 and "prob_at_offset ≥ 0.5" in rule


def _offsets(offsets, **columns) -> pd.DataFrame:
    table = pd.DataFrame({"status": "ok", "offset_frames": pd.array(offsets, dtype="Int64")})
    for name, values in columns.items():
        table[name] = values
    return table


def test_tied_modes_go_to_the_one_nearest_the_median():
    # 0 and 2 twice each; median of 0 0 2 2 3 is 2 → 2 (not the smaller |offset| 0)
    assert dataset_offset(_offsets([0, 0, 2, 2, 3], prob_at_offset=0.9)).offset == 2
    # -1 and +1 twice each, median 0: equally near, equally large → the positive one
    assert dataset_offset(_offsets([-1, -1, 1, 1], prob_at_offset=0.9)).offset == 1
    # -4 and 1, median 1 → 1
    assert dataset_offset(_offsets([-4, -4, 1, 1, 2], prob_at_offset=0.9)).offset == 1


def test_distance_models_use_lse_c_and_missing_columns_do_not_break_it():
    # SyncNet v2 tables: no probability; lse_c ≥ 3 makes a clip confident (3 itself counts)
    syncnet = _offsets(
        [2, 2, 2, 0, 0, 0, 0, 0],
        prob_at_offset=np.nan,
        lse_c=[5.0, 3.0, 7.5, 1.0, 2.9, 0.5, 1.2, 2.0],
    )
    assert dataset_offset(syncnet) == (2, 3, {2: 3})
    assert "lse_c ≥ 3" in confident_clips(syncnet)[1]
    # neither value: nothing is confident, so there is no data set offset to report
    assert dataset_offset(_offsets([1, 1, 0])) == (None, 0, {})
    assert dataset_offset(_offsets([1, 1, 0], prob_at_offset=np.nan)) == (None, 0, {})
    # no status and no at_search_edge column: every row with an offset counts
    bare = pd.DataFrame({"offset_frames": [1, 1, 0], "prob_at_offset": [0.5, 0.9, 0.9]})
    assert dataset_offset(bare) == (1, 3, {0: 1, 1: 2})
    with pytest.raises(ValueError, match="no confident clip"):
        resolve_reference(_offsets([1]), "dataset")


def test_rules_measure_offsets_from_the_reference():
    table = _offsets([1, 4, -2, 3], prob_at_offset=0.9, offscreen_ratio=0.0)
    reasons = reject_reasons(table, FilterRules(max_abs_offset=2, reference_offset=1))
    # |1-1| = 0, |4-1| = 3, |-2-1| = 3, |3-1| = 2
    assert reasons.tolist() == [[], ["large_offset"], ["large_offset"], []]


def _filter(scores, out, *extra):
    args = ["filter", str(scores), "-o", str(out / "kept.parquet")]
    args += ["--rejected", str(out / "rejected.parquet"), "--max-abs-offset", "2", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    kept = pd.read_parquet(out / "kept.parquet")
    rejected = pd.read_parquet(out / "rejected.parquet")
    return result.output, kept, rejected


def test_filter_relative_to_the_dataset_keeps_what_plain_filter_keeps_unshifted(tmp_path):
    for name in ("plain", "shifted", "relative", "given"):
        (tmp_path / name).mkdir()
    unshifted = write_table(scores_table(), tmp_path / "unshifted.parquet")
    shifted = write_table(scores_table(shift=1), tmp_path / "shifted.parquet")

    _, kept0, rejected0 = _filter(unshifted, tmp_path / "plain")
    output, kept1, rejected1 = _filter(
        shifted, tmp_path / "relative", "--offset-relative-to", "dataset"
    )
    # 6 × 0, two × 1, -1, 2, -2 pass |offset| ≤ 2; "talker" is off-screen
    expected = {f"zero_{i}.mp4" for i in range(6)} | {"one_a.mp4", "one_b.mp4"}
    expected |= {"k-1.mp4", "k+2.mp4", "k-2.mp4"}
    assert set(kept0["path"]) == expected
    assert set(kept1["path"]) == expected
    reasons = [
        dict(zip(r["path"], r["reject_reason"], strict=True)) for r in (rejected0, rejected1)
    ]
    assert reasons[0] == reasons[1]
    assert reasons[1]["unsure_0.mp4"] == "low_prob,large_offset"  # |5 - 1| > 2
    assert reasons[1]["edge_0.mp4"] == "large_offset"
    # the reference used is in both outputs
    assert (kept1["reference_offset"] == 1).all() and (rejected1["reference_offset"] == 1).all()
    assert (kept0["reference_offset"] == 0).all() and str(
        kept1["reference_offset"].dtype
    ) == "Int64"
    # and printed, with the confident clips' distribution
    assert "mode +1" in output and "median +1" in output and "in sync = offset +1" in output
    assert "◀ mode" in output

    # measured from 0 the shifted table keeps another set: the data set offset matters
    _, kept_plain, _ = _filter(shifted, tmp_path / "shifted")
    assert set(kept_plain["path"]) != expected
    assert "k+2.mp4" not in set(kept_plain["path"]) and "k-3.mp4" in set(kept_plain["path"])

    _, kept_given, _ = _filter(shifted, tmp_path / "given", "--reference-offset", "1")
    assert set(kept_given["path"]) == expected
    both = ["--reference-offset", "1", "--offset-relative-to", "dataset"]
    refused = CliRunner().invoke(
        app, ["filter", str(shifted), "-o", str(tmp_path / "x.parquet"), *both]
    )
    assert refused.exit_code == 2 and "not both" in refused.output


def test_fix_plan_shifts_by_offset_minus_reference(tmp_path):
    root = tmp_path / "clips"
    root.mkdir()
    for name in ("a", "b", "c", "d"):
        (root / f"{name}.mp4").write_bytes(b"planning never opens the clip")
    scores = pd.DataFrame(
        {
            "root": str(root),
            "path": ["a.mp4", "b.mp4", "c.mp4", "d.mp4"],
            "status": ["ok", "ok", "ok", "no_face"],
            "offset_frames": pd.array([1, 3, -2, None], dtype="Int64"),
        }
    )
    plan = plan_fixes(scores, tmp_path / "out", reference_offset=1)
    tasks = [(t.row["path"], t.action, t.shift_frames) for t in plan.tasks]
    assert tasks == [("a.mp4", "copy", 0), ("b.mp4", "fix", 2), ("c.mp4", "fix", -3)]
    assert [t.row["reference_offset"] for t in plan.tasks] == [1, 1, 1]
    assert [t.row["offset_frames"] for t in plan.tasks] == [1, 3, -2]  # as scored
    assert plan.rows[3]["status"] == "skipped_not_ok" and plan.rows[3]["reference_offset"] == 1
    unshifted = plan_fixes(scores, tmp_path / "out")
    assert [(t.action, t.shift_frames) for t in unshifted.tasks] == [
        ("fix", 1),
        ("fix", 3),
        ("fix", -2),
    ]


def test_fix_relative_to_the_dataset_writes_and_logs_the_reference(tmp_path):
    root = tmp_path / "clips"
    synth.synth_clip(root / "late.mp4", seconds=2.0, seed=3, size=48)
    shutil.copyfile(root / "late.mp4", root / "aligned.mp4")
    rows = [
        {"root": str(root), "path": path, "status": "ok", "offset_frames": offset}
        | {"prob_at_offset": 0.8, "offscreen_ratio": 0.0, "at_search_edge": False}
        for path, offset in (("late.mp4", 3), ("aligned.mp4", 1))
    ]
    scores = write_table(rows_to_frame(rows), tmp_path / "scores.parquet")
    out = tmp_path / "fixed"

    def fix(*extra):
        args = ["fix", str(scores), "--out-dir", str(out), *extra]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        return result.output, pd.read_parquet(out / "fixes.parquet").set_index("path")

    # offsets 3 and 1 tie as modes; the median 2 is as near to both, |1| < |3| → +1
    output, log = fix("--relative-to", "dataset")
    assert "in sync = offset +1" in output
    late, aligned = log.loc["late.mp4"], log.loc["aligned.mp4"]
    assert late.status == "fixed" and late.offset_frames == 3 and late.reference_offset == 1
    rate = late.sample_rate
    assert late.applied_shift_samples == 2 * rate // 25  # (3 - 1) frames, delayed
    assert aligned.status == "copied" and aligned.applied_shift_samples == 0
    assert aligned.reference_offset == 1

    _, again = fix("--reference-offset", "1")  # same job: reused
    assert again["reused"].all()
    _, absolute = fix()  # from 0 the shifts change: redone
    assert not absolute["reused"].any()
    assert absolute.loc["late.mp4", "applied_shift_samples"] == 3 * rate // 25
    assert absolute.loc["aligned.mp4", "status"] == "fixed"
    assert (absolute["reference_offset"] == 0).all()
