"""Scores folders with known answers: a --max-offset other than 15 pinned and a mixed run
refused, legacy single-file tables of another model with failed rows, and shard assignment
checked with paths whose shard by any other hash input (the absolute path, the file name
alone) is another one, computed here with zlib.crc32."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pandas as pd
import pytest
import torch
from scoring_cli import run_score
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.io import inputs
from synccurate.io.files import write_table
from synccurate.io.inputs import ClipRef
from synccurate.models.icsyncnet import CONFIGS, ICSyncNet, save_checkpoint
from synccurate.store import readers, schema
from synccurate.store.folder import METADATA_NAME, read_metadata
from synccurate.store.manifest import shard_status
from synccurate.store.parts import LEGACY_NAME, open_output
from synccurate.training import synth

MINE = "tiny@0123abcd"
OTHER = "big@ffff0000"


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """An untrained tiny IC-SyncNet: the plumbing needs a model, not a good one."""
    torch.manual_seed(0)
    return save_checkpoint(ICSyncNet(CONFIGS["tiny"]), tmp_path_factory.mktemp("w") / "tiny")


# --- --max-offset other than 15 ------------------------------------------------------------


def test_a_max_offset_of_10_is_pinned_and_a_run_with_another_is_refused(tmp_path, tiny_weights):
    clips = tmp_path / "clips"
    synth.synth_clip(clips / "a.mp4", seconds=1.2, seed=1)
    out = tmp_path / "scores.parquet"
    weights = ("--weights", str(tiny_weights))
    first = run_score(clips, out, "--max-offset", "10", *weights)
    assert first.exit_code == 0, first.output
    assert read_metadata(out)["max_offset"] == 10
    (row,) = readers.read_scores(out).to_dict("records")
    assert len(row["profile"]) == 21  # offsets -10 … +10
    parts = sorted(p.name for p in out.glob("*.parquet"))

    synth.synth_clip(clips / "b.mp4", seconds=1.2, seed=2)  # a new clip to score
    for other in ([], ["--max-offset", "12"]):  # the default (15), then 12
        refused = run_score(clips, out, *other, *weights)
        assert refused.exit_code == 2, refused.output
        message = " ".join(refused.output.split())
        assert "max_offset=10" in message and f"max_offset={other[1] if other else 15}" in message
    assert sorted(p.name for p in out.glob("*.parquet")) == parts  # nothing written
    assert json.loads((out / METADATA_NAME).read_text())["max_offset"] == 10

    again = run_score(clips, out, "--max-offset", "10", *weights)  # the same setting: resumes
    assert again.exit_code == 0, again.output
    table = readers.read_scores(out).set_index("path")
    assert sorted(table.index) == ["a.mp4", "b.mp4"]
    assert {len(profile) for profile in table["profile"]} == {21}


# --- legacy single-file tables ---------------------------------------------------------------


def legacy_row(path: str, status: str, model: str | None) -> dict:
    ok = status == "ok"
    return {
        "root": "/clips",
        "path": path,
        "status": status,
        "error": None if ok else f"/clips/{path}: {status}",
        "model": model,
        "offset_frames": 2 if ok else None,
        "prob_at_offset": 0.8 if ok else None,
    }


def write_legacy(path: Path, rows: list[dict]) -> bytes:
    write_table(schema.rows_to_frame(rows), path)
    return path.read_bytes()


def test_a_legacy_table_of_another_model_is_refused_though_its_failed_rows_name_none(tmp_path):
    """Its scores are another model's: refused before anything moves, whatever the failed
    rows say (here: no model, as for a file that could not be opened)."""
    legacy = tmp_path / "scores.parquet"
    before = write_legacy(
        legacy,
        [
            legacy_row("a.mp4", "ok", OTHER),
            legacy_row("b.mp4", "ok", OTHER),
            legacy_row("c.mp4", "decode_error", None),
        ],
    )
    with pytest.raises(ValueError) as refused:
        open_output(legacy, {"model": MINE, "max_offset": 15})
    message = str(refused.value)
    assert f"holds model={OTHER}" in message and f"asks for model={MINE}" in message
    assert "\n" not in message
    assert legacy.is_file() and legacy.read_bytes() == before
    assert not list(tmp_path.glob(".*migrating*"))


def test_failed_rows_of_another_model_do_not_stop_a_migration(tmp_path):
    """Failed rows carry no scores: a table whose scores are all this model's is migrated,
    its failed rows kept (done, or to redo with --retry-failed)."""
    legacy = tmp_path / "scores.parquet"
    write_legacy(
        legacy,
        [
            legacy_row("a.mp4", "ok", MINE),
            legacy_row("b.mp4", "no_face", OTHER),
            legacy_row("c.mp4", "decode_error", OTHER),
        ],
    )
    writer, done = open_output(legacy, {"model": MINE, "max_offset": 10})
    writer.close()
    assert legacy.is_dir() and (legacy / LEGACY_NAME).is_file()
    assert read_metadata(legacy)["model"] == MINE and read_metadata(legacy)["max_offset"] == 10
    assert done == {("/clips", "a.mp4"), ("/clips", "b.mp4"), ("/clips", "c.mp4")}
    statuses = readers.read_scores(legacy).set_index("path")["status"].to_dict()
    assert statuses == {"a.mp4": "ok", "b.mp4": "no_face", "c.mp4": "decode_error"}
    _, retry = open_output(legacy, {"model": MINE, "max_offset": 10}, retry_failed=True)
    assert retry == {("/clips", "a.mp4")}


def test_a_legacy_table_of_only_failed_rows_of_another_model_is_migrated(tmp_path):
    legacy = tmp_path / "scores.parquet"
    write_legacy(legacy, [legacy_row("a.mp4", "decode_error", OTHER)])
    writer, done = open_output(legacy, {"model": MINE, "max_offset": 15}, retry_failed=True)
    writer.close()
    assert legacy.is_dir() and done == set()


# --- shards ----------------------------------------------------------------------------------

N = 3
PER_SHARD = 3


def crc_shard(text: str) -> int:
    return zlib.crc32(text.encode()) % N


def telling_paths(root: str) -> dict[int, list[str]]:
    """PER_SHARD relative paths spk<j>/<i>.mp4 for each shard k (crc32 of the relative
    path mod N = k), each of which the absolute path or the file name alone would put in
    another shard: no other hash input can assign them right by chance."""
    chosen: dict[int, list[str]] = {k: [] for k in range(N)}
    for i in range(10_000):
        name = f"{i:05d}.mp4"
        path = f"spk{i % 4}/{name}"
        right = crc_shard(path)
        if right not in (crc_shard(f"{root}/{path}"), crc_shard(name)):
            if len(chosen[right]) < PER_SHARD:
                chosen[right].append(path)
        if all(len(paths) == PER_SHARD for paths in chosen.values()):
            return chosen
    raise AssertionError("no such paths")  # pragma: no cover


def test_shard_takes_the_clips_whose_relative_path_hashes_to_it():
    by_shard = telling_paths("/data/set")
    refs = [ClipRef("/data/set", path) for paths in by_shard.values() for path in paths]
    refs.sort(key=lambda ref: ref.path)
    for k in range(N):
        assert [ref.path for ref in inputs.shard(refs, k, N)] == sorted(by_shard[k])
        assert {inputs.shard_of(path, N) for path in by_shard[k]} == {k}


def test_a_shard_job_scores_its_clips_and_shards_says_which_remain(tmp_path, tiny_weights):
    """Empty files are enough: each gets a decode_error row, and rows are what shards count."""
    clips = tmp_path / "clips"
    by_shard = telling_paths(str(clips.resolve()))
    for path in (p for paths in by_shard.values() for p in paths):
        (clips / path).parent.mkdir(parents=True, exist_ok=True)
        (clips / path).write_bytes(b"")
    manifest = tmp_path / "clips.parquet"
    runner = CliRunner()
    assert runner.invoke(app, ["manifest", str(clips), "-o", str(manifest)]).exit_code == 0
    out = tmp_path / "scores.parquet"
    job = run_score(
        [], out, "--manifest", str(manifest), "--shard", f"1/{N}", "--weights", str(tiny_weights)
    )
    assert job.exit_code == 0, job.output
    table = readers.read_scores(out)
    assert sorted(table["path"]) == sorted(by_shard[1])
    assert set(table["status"]) == {"decode_error"}

    status = shard_status(out, manifest)
    assert [(s.index, s.clips, s.done, s.state) for s in status] == [
        (0, PER_SHARD, 0, "missing"),
        (1, PER_SHARD, PER_SHARD, "finished"),
        (2, PER_SHARD, 0, "missing"),
    ]
    listed = runner.invoke(app, ["shards", str(out), "--manifest", str(manifest)])
    assert listed.exit_code == 0 and listed.stdout.strip().splitlines()[-1] == "0,2"


def test_rows_count_for_the_shard_of_their_relative_path(tmp_path):
    """A hand-written folder: rows for all of shard 2 and one clip of shard 0."""
    by_shard = telling_paths("/data/set")
    paths = sorted(p for ps in by_shard.values() for p in ps)
    manifest = tmp_path / "clips.parquet"
    write_table(pd.DataFrame({"root": "/data/set", "path": paths}), manifest)
    folder = tmp_path / "scores"
    writer, _ = open_output(folder, {"model": MINE, "max_offset": 15}, shard=f"2/{N}")
    with writer:
        for path in [*by_shard[2], by_shard[0][0]]:
            writer.add({"root": "/data/set", "path": path, "status": "decode_error"})
    status = shard_status(folder, manifest)
    assert [(s.index, s.clips, s.done, s.state) for s in status] == [
        (0, PER_SHARD, 1, "unfinished"),
        (1, PER_SHARD, 0, "missing"),
        (2, PER_SHARD, PER_SHARD, "finished"),
    ]
