"""Resuming a scores table: a rerun scores only what is missing, --retry-failed only the failed
rows, clips are told apart by root and path, and a table of another model is refused.

"Not rescored" is proven from the table itself: rows of the first run are marked (a
confidence of 999, which no scoring can produce) and must come back marked. The
`prepared` fixture also lists the clips the scorer decoded; it is the one place that knows
a scorer internal (`synccurate.pipeline.driver.prepare_clip`).
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from scoring_cli import run_score, score_table

from synccurate.models.icsyncnet import CONFIGS, ICSyncNet, save_checkpoint
from synccurate.store.readers import list_parts, read_scores
from synccurate.training import synth

MARK = 999.0  # a confidence no scoring produces (it is a difference of cosines, at most 2)


@pytest.fixture
def prepared(monkeypatch):
    """Relative paths of the clips the scorer decodes, in order (in-process runs only)."""
    from synccurate.pipeline import prepare

    seen: list[str] = []
    real = prepare.prepare_clip

    def counting(ref, *args, **kwargs):
        seen.append(ref.path)
        return real(ref, *args, **kwargs)

    monkeypatch.setattr(prepare, "prepare_clip", counting)
    return seen


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three short in-sync clips and a broken file, written once; tests copy what they need."""
    folder = tmp_path_factory.mktemp("resume_clips")
    for i, name in enumerate(["a.mp4", "b.mp4", "c.mp4"]):
        synth.synth_clip(folder / name, seconds=1.0, seed=70 + i, offset_frames=i - 1)
    (folder / "broken.mp4").write_bytes(b"not a video")
    return folder


def _folder(tmp_path, clips, *names):
    folder = tmp_path / "clips"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes((clips / name).read_bytes())
    return folder


def mark(out, **rows) -> None:
    """Overwrite fields of rows (by path) in the scores folder; confidence=MARK by default.

    The folder's parts are replaced by one part holding the edited rows (tests only: a
    real run never rewrites a part)."""
    table = read_scores(out)
    for path, changes in rows.items():
        index = table.index[table["path"] == path]
        assert len(index) == 1, path
        for column, value in (changes or {"confidence": MARK}).items():
            table.loc[index, column] = value
    for part in list_parts(out):
        part.unlink()
    table.to_parquet(out / "part-marked.parquet", index=False)


def snapshot(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_rerun_scores_only_the_new_clips(tmp_path, clips, prepared):
    folder = _folder(tmp_path, clips, "a.mp4", "b.mp4")
    out = tmp_path / "scores.parquet"
    score_table(folder, out)
    assert prepared == ["a.mp4", "b.mp4"]
    mark(out, **{"a.mp4": None, "b.mp4": None})
    _folder(tmp_path, clips, "c.mp4")
    prepared.clear()
    table = score_table(folder, out)
    assert prepared == ["c.mp4"]
    assert sorted(table.index) == ["a.mp4", "b.mp4", "c.mp4"]
    assert table.loc["a.mp4", "confidence"] == MARK and table.loc["b.mp4", "confidence"] == MARK
    assert table.loc["c.mp4", "status"] == "ok" and table.loc["c.mp4", "confidence"] < 2
    prepared.clear()
    again = score_table(folder, out)  # nothing left to do
    assert prepared == [] and again.equals(table)


def test_retry_failed_rescores_the_failed_rows_only(tmp_path, clips, prepared):
    folder = _folder(tmp_path, clips, "a.mp4", "b.mp4", "broken.mp4")
    out = tmp_path / "scores.parquet"
    first = score_table(folder, out)
    assert first.loc["broken.mp4", "status"] == "decode_error"
    # b.mp4 failed in that run (say, a disk hiccup); a.mp4 is marked to see it is left alone
    failed = {"status": "error", "error": "b.mp4: it failed that time", "confidence": None}
    mark(out, **{"a.mp4": None, "b.mp4": failed})
    prepared.clear()
    plain = score_table(folder, out)
    assert prepared == []  # without --retry-failed a failed row is done too
    assert plain.loc["b.mp4", "status"] == "error"

    retried = score_table(folder, out, "--retry-failed")
    assert sorted(prepared) == ["b.mp4", "broken.mp4"]
    assert retried.loc["b.mp4", "status"] == "ok" and pd.isna(retried.loc["b.mp4", "error"])
    assert retried.loc["broken.mp4", "status"] == "decode_error"
    assert retried.loc["a.mp4", "confidence"] == MARK
    assert len(retried) == 3


def test_the_same_relative_path_under_two_roots_is_two_clips(tmp_path, clips, prepared):
    first, second = tmp_path / "first", tmp_path / "second"
    for root, name in ((first, "a.mp4"), (second, "b.mp4")):
        root.mkdir()
        (root / "clip.mp4").write_bytes((clips / name).read_bytes())
    out = tmp_path / "scores.parquet"
    score_table(first, out)
    prepared.clear()
    result = run_score([first, second], out)
    assert result.exit_code == 0, result.output
    table = read_scores(out)
    assert prepared == ["clip.mp4"]
    assert sorted(table["root"]) == sorted([str(first.resolve()), str(second.resolve())])
    assert list(table["path"]) == ["clip.mp4", "clip.mp4"]
    assert (table["status"] == "ok").all()


def test_a_table_of_another_model_is_refused(tmp_path, clips):
    torch.manual_seed(0)
    tiny = save_checkpoint(ICSyncNet(CONFIGS["tiny"]), tmp_path / "w" / "tiny")
    folder = _folder(tmp_path, clips, "a.mp4")
    out = tmp_path / "scores.parquet"
    table = score_table(folder, out, "--weights", str(tiny))
    assert table["model"].str.startswith("tiny@").all()
    before = snapshot(out)
    _folder(tmp_path, clips, "b.mp4")
    refused = run_score(folder, out)  # the bundled small model
    assert refused.exit_code == 2
    assert "tiny@" in refused.output and "icsyncnet-small@" in refused.output
    assert snapshot(out) == before
    # the same model resumes as usual
    resumed = score_table(folder, out, "--weights", str(tiny))
    assert sorted(resumed.index) == ["a.mp4", "b.mp4"]
