"""Text the user gave (file names, paths in errors) is printed as is: rich must not read
brackets in it as markup ("[red]" would vanish, "synccurate[ray]" would lose "[ray]")."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.training import synth

BRACKETS = "[red]take[/red] [2]"  # a name rich would eat: markup tags and a bracket pair


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def flat(output: str) -> str:
    """The output with rich's line wrapping undone (it wraps at spaces)."""
    return " ".join(output.split())


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A good clip and a broken one, both with brackets in their names."""
    folder = tmp_path_factory.mktemp("markup")
    synth.synth_clip(folder / f"{BRACKETS} good.mp4", seconds=1.0, seed=3, offset_frames=2)
    (folder / f"{BRACKETS} broken.mp4").write_bytes(b"not a video")
    return folder


def score(folder, out):
    result = run("score", folder, "-o", out, "--face-detector", "none", "--workers", 0)
    assert result.exit_code == 0, result.output
    return result


def test_score_prints_file_names_with_brackets_as_they_are(folder, tmp_path):
    out = tmp_path / f"scores {BRACKETS}"
    result = score(folder, out)
    assert f"{BRACKETS} broken.mp4: " in flat(result.output)  # the failed clip's status line


def test_filter_and_fix_errors_keep_the_brackets(folder, tmp_path):
    out = tmp_path / f"scores {BRACKETS}"
    score(folder, out)
    inside = out / "kept.parquet"
    refused = run("filter", out, "-o", inside)
    assert refused.exit_code == 2
    assert f"{inside}: inside the scores folder {out}" in flat(refused.output)
    fixed = tmp_path / f"{BRACKETS} fixed.mp4"
    result = run("fix", folder / f"{BRACKETS} good.mp4", "--output", fixed, "--offset", 2)
    assert result.exit_code == 0, result.output
    assert f"{fixed}: audio shifted by" in flat(result.output)
    again = run("fix", folder / f"{BRACKETS} good.mp4", "--output", fixed, "--offset", 2)
    assert again.exit_code == 2 and f"{fixed}: already exists" in flat(again.output)


def test_the_ray_extra_message_names_the_extra(folder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as without the extra: import ray fails
    monkeypatch.delitem(sys.modules, "synccurate.pipeline.executors.ray", raising=False)
    result = run("score", folder, "-o", tmp_path / "s", "--executor", "ray")
    assert result.exit_code == 2
    assert "pip install 'synccurate[ray]'" in flat(result.output)
