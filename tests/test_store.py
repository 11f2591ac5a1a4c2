"""The scores store: immutable parts, latest-wins reading, resume, migration, many jobs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.io import inputs
from synccurate.io.files import write_table
from synccurate.pipeline import driver as score
from synccurate.pipeline import prepare
from synccurate.store import folder as store_folder
from synccurate.store import parts as store
from synccurate.store import readers, schema
from synccurate.store.manifest import read_manifest, shard_status, write_manifest
from synccurate.store.parts import PartsWriter, open_output

META = {"model": "tiny@0123abcd", "max_offset": 15}
REPO = Path(__file__).resolve().parents[1]


def make_row(path: str, status: str = "ok", root: str = "/clips", **extra) -> dict:
    ok = status == "ok"
    rng = np.random.default_rng(zlib.crc32(path.encode()))
    row = {
        "root": root,
        "path": path,
        "status": status,
        "error": None if ok else f"{root}/{path}: {status}",
        "n_frames": 30,
        "model": META["model"],
        "offset_frames": int(rng.integers(-15, 16)) if ok else None,
        "prob_at_offset": float(rng.random()) if ok else None,
        "at_search_edge": False if ok else None,
        "p_t": rng.random(26).round(4).tolist() if ok else None,
        "onscreen": (rng.random(26) > 0.3).tolist() if ok else None,
        "profile": rng.random(31).round(4) if ok else None,  # NumPy arrays are fine too
    }
    return row | extra


def scores_of(folder) -> dict[str, str]:
    table = readers.read_scores(folder)
    assert not table.duplicated(["root", "path"]).any()
    return dict(zip(table["path"], table["status"], strict=True))


# --- publishing ----------------------------------------------------------------------------


def test_a_reader_sees_complete_parts_only(tmp_path, monkeypatch):
    folder = tmp_path / "scores.parquet"
    real_publish = store.publish
    seen = []

    def publish_after_looking(temp, final):
        assert temp.exists() and temp.stat().st_size > 0  # fully written, not yet published
        if store_folder.is_part(final):
            seen.append(len(readers.read_keys(folder, latest=False)))
            assert len(pd.read_parquet(folder)) == seen[-1]
            assert ds.dataset(folder).count_rows() == seen[-1]
        real_publish(temp, final)

    monkeypatch.setattr(store, "publish", publish_after_looking)
    with PartsWriter(folder, metadata=META, rows_per_part=7) as writer:
        for i in range(30):
            writer.add(make_row(f"c{i:03d}.mp4"))
    assert seen == [0, 7, 14, 21, 28]  # at each publish only the earlier parts are visible
    assert len(readers.read_scores(folder)) == 30
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp left


def test_leftovers_of_a_crash_are_ignored_by_every_reader(tmp_path):
    folder = tmp_path / "scores.parquet"
    with PartsWriter(folder, metadata=META, rows_per_part=5) as writer:
        for i in range(10):
            writer.add(make_row(f"c{i}.mp4"))
    part = writer.parts[0].read_bytes()
    (folder / ".part-all-x-00009.parquet").write_bytes(part[: len(part) // 2])  # torn
    (folder / f".{writer.parts[0].name}.1a2b3c4d.tmp").write_bytes(part[:100])
    assert len(readers.read_scores(folder)) == 10
    assert len(readers.read_keys(folder)) == 10
    assert len(pd.read_parquet(folder)) == 10
    assert ds.dataset(folder).count_rows() == 10


def test_parts_are_never_overwritten_and_names_carry_shard_and_run(tmp_path):
    folder = tmp_path / "scores"
    first = PartsWriter(folder, metadata=META, shard="3/16", run_id="runA", rows_per_part=2)
    for i in range(2):
        first.add(make_row(f"a{i}.mp4"))
    assert [p.name for p in first.parts] == ["part-s00003of00016-runA-00000.parquet"]
    again = PartsWriter(folder, metadata=META, shard="3/16", run_id="runA")  # same run id
    again.add(make_row("b.mp4"))
    again.close()
    assert again.parts[0].name == "part-s00003of00016-runA-00001.parquet"
    assert set(scores_of(folder)) == {"a0.mp4", "a1.mp4", "b.mp4"}
    with pytest.raises(ValueError, match="closed"):
        again.add(make_row("c.mp4"))


def test_a_part_is_published_after_seconds_per_part(tmp_path, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(store.time, "monotonic", lambda: clock[0])
    writer = PartsWriter(tmp_path / "s", metadata=META, seconds_per_part=30)
    writer.add(make_row("a.mp4"))
    clock[0] += 29
    writer.add(make_row("b.mp4"))
    assert writer.parts == []
    clock[0] += 1  # the oldest buffered row is now 30 s old
    writer.add(make_row("c.mp4"))
    assert len(writer.parts) == 1 and writer.rows_written == 3


def test_rows_go_to_disk_every_rows_per_group_and_new_columns_start_a_part(tmp_path):
    folder = tmp_path / "scores.parquet"
    writer = PartsWriter(folder, metadata=META, rows_per_group=4)
    for i in range(10):
        writer.add(make_row(f"c{i}.mp4"))
    assert len(writer._rows) + writer._batched < 4  # the rest is in the hidden part
    assert [p.name.startswith(".part-") for p in folder.iterdir() if p.suffix == ".tmp"] == [True]
    assert readers.list_parts(folder) == []  # nothing is published yet
    writer.add(make_row("late.mp4", sharpness=1.5))  # a new column: the part so far is published
    writer.close()
    assert len(writer.parts) == 2 and writer.rows_written == 11
    first = pq.ParquetFile(writer.parts[0]).metadata
    assert (first.num_rows, first.num_row_groups) == (8, 2)  # 2 groups of 4, then 3 rows
    table = readers.read_scores(folder).set_index("path")
    assert len(table) == 11 and table.loc["late.mp4", "sharpness"] == 1.5
    assert pd.isna(table.loc["c0.mp4", "sharpness"])


# --- reading -----------------------------------------------------------------------------


def test_the_latest_row_of_a_clip_wins_and_legacy_rows_are_oldest(tmp_path):
    legacy = tmp_path / "legacy.parquet"
    write_table(schema.rows_to_frame([make_row("a.mp4", "ok"), make_row("b.mp4", "ok")]), legacy)
    writer, done = open_output(legacy, META)  # migrates; its rows have no scored_at
    assert done == {("/clips", "a.mp4"), ("/clips", "b.mp4")}
    writer.add(make_row("a.mp4", "decode_error"))
    writer.close()
    late = PartsWriter(legacy, metadata=META, run_id="0-late")  # sorts first by name
    early = PartsWriter(legacy, metadata=META, run_id="9-early")
    early.add(make_row("c.mp4", "no_face"))
    late.add(make_row("c.mp4", "ok"))
    early.close()  # published first, but its row is the older one
    late.close()
    assert scores_of(legacy) == {"a.mp4": "decode_error", "b.mp4": "ok", "c.mp4": "ok"}
    keys = readers.read_keys(legacy)
    assert list(keys.columns) == ["root", "path", "status", "scored_at", "model"]
    assert len(readers.read_keys(legacy, latest=False)) == 5
    assert readers.done_keys(legacy, retry_failed=True) == {
        ("/clips", "b.mp4"),
        ("/clips", "c.mp4"),
    }


def test_read_scores_keeps_dtypes_and_extra_columns(tmp_path):
    folder = tmp_path / "scores.parquet"
    with PartsWriter(folder, metadata=META, rows_per_part=3) as writer:
        for i in range(3):  # the first part has no list values at all
            writer.add(make_row(f"bad{i}.mp4", "no_face"))
        writer.add(make_row("a.mp4", my_offset=3, sharpness=1.5))
        writer.add(make_row("b.mp4", my_offset=None))
    table = readers.read_scores(folder)
    assert table.dtypes["offset_frames"] == "Int64" and table.dtypes["status"] == "string"
    assert table.dtypes["scored_at"] == "datetime64[us, UTC]"
    assert set(table["run_id"]) == {writer.run_id}
    ok = table.set_index("path").loc["a.mp4"]
    assert len(ok["p_t"]) == 26 and ok["my_offset"] == 3 and ok["sharpness"] == 1.5
    plain = pd.read_parquet(folder)  # without our reader too: the list columns survive
    assert plain.dtypes["offset_frames"] == "Int64"
    assert len(plain.set_index("path").loc["a.mp4", "p_t"]) == 26
    subset = readers.read_scores(folder, columns=["path", "status"])
    assert list(subset.columns) == ["path", "status"] and len(subset) == 5
    with pytest.raises(ValueError, match="no column nope"):
        readers.read_scores(folder, columns=["nope"])


def test_a_legacy_single_file_is_read_as_before(tmp_path):
    legacy = tmp_path / "scores.parquet"
    old = schema.rows_to_frame([make_row("a.mp4"), make_row("b.mp4", "no_face")])
    write_table(old.drop(columns=["scored_at", "run_id"]), legacy)
    table = readers.read_scores(legacy)
    assert list(table["path"]) == ["a.mp4", "b.mp4"]
    assert "scored_at" not in table.columns  # nothing is invented for a legacy table
    assert table.dtypes["offset_frames"] == "Int64"
    assert readers.done_keys(legacy) == {("/clips", "a.mp4"), ("/clips", "b.mp4")}


def test_compact_keeps_the_latest_rows_in_one_part(tmp_path, monkeypatch):
    folder = tmp_path / "scores.parquet"
    for status in ("decode_error", "ok"):
        with PartsWriter(folder, metadata=META, rows_per_part=2) as writer:
            for i in range(5):
                writer.add(make_row(f"c{i}.mp4", status if i < 3 else "no_face"))
    before = readers.read_scores(folder)
    parts, rows, target = readers.compact(folder)
    assert (parts, rows) == (6, 5) and readers.list_parts(folder) == [target]
    after = readers.read_scores(folder)
    pd.testing.assert_frame_equal(before, after)
    assert scores_of(folder)["c0.mp4"] == "ok"
    # a crash after publishing, before the old parts are gone: duplicates, resolved
    with PartsWriter(folder, metadata=META) as writer:
        writer.add(make_row("c0.mp4", "error"))
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: None)
    readers.compact(folder)
    assert len(readers.list_parts(folder)) == 3
    assert scores_of(folder)["c0.mp4"] == "error" and len(scores_of(folder)) == 5
    monkeypatch.undo()  # a compaction that fails to publish removes nothing
    temps = sorted(folder.glob(".*.tmp"))  # (left by the unlinks that did nothing above)
    monkeypatch.setattr(readers, "publish", lambda temp, final: (_ for _ in ()).throw(OSError(28)))
    with pytest.raises(OSError):
        readers.compact(folder)
    assert len(readers.list_parts(folder)) == 3 and len(scores_of(folder)) == 5
    assert sorted(folder.glob(".*.tmp")) == temps


# --- opening an output ------------------------------------------------------------------------


def test_another_model_or_max_offset_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "scores.parquet"
    open_output(folder, META)[0].close()
    for asked, held in (({"model": "big@ffff0000"}, "tiny@0123abcd"), ({"max_offset": 30}, "15")):
        with pytest.raises(ValueError) as error:
            open_output(folder, META | asked)
        message = str(error.value)
        assert "\n" not in message and str(folder) in message and held in message
        assert str(next(iter(asked.values()))) in message
    with pytest.raises(ValueError, match="shard_count=4"):
        open_output(tmp_path / "sharded", META, shard="0/4")[0].close()
        open_output(tmp_path / "sharded", META, shard="1/8")
    open_output(tmp_path / "sharded", META)  # a run without --shard always fits


def test_a_legacy_table_is_migrated_once_and_a_foreign_one_refused(tmp_path):
    legacy = tmp_path / "scores.parquet"
    frame = schema.rows_to_frame([make_row("a.mp4"), make_row("b.mp4", "no_face")])
    write_table(frame, legacy)
    with pytest.raises(ValueError, match="holds model=tiny@0123abcd"):
        open_output(legacy, META | {"model": "other@1"})
    assert legacy.is_file()  # refused before anything moved
    writer, done = open_output(legacy, META, retry_failed=True)
    assert legacy.is_dir() and done == {("/clips", "a.mp4")}
    assert (legacy / store.LEGACY_NAME).is_file() and store.read_metadata(legacy)["model"]
    writer.add(make_row("b.mp4"))
    writer.close()
    assert scores_of(legacy) == {"a.mp4": "ok", "b.mp4": "ok"}
    assert open_output(legacy, META)[1] == {("/clips", "a.mp4"), ("/clips", "b.mp4")}
    (tmp_path / "notes.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match="not a readable Parquet"):
        open_output(tmp_path / "notes.parquet", META)
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="not a scores folder"):
        open_output(tmp_path / "clips", META)


def test_a_migration_cut_between_its_two_renames_is_finished(tmp_path, monkeypatch):
    legacy = tmp_path / "scores.parquet"
    write_table(schema.rows_to_frame([make_row("a.mp4")]), legacy)
    real_rename = os.rename

    def crash_on_the_last_rename(source, target):
        if Path(target) == legacy:
            raise KeyboardInterrupt
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", crash_on_the_last_rename)
    with pytest.raises(KeyboardInterrupt):
        open_output(legacy, META)
    monkeypatch.undo()
    assert not legacy.exists()
    assert open_output(legacy, META)[1] == {("/clips", "a.mp4")}


# --- many writers ----------------------------------------------------------------------------


def test_two_shards_and_two_runs_into_one_folder_lose_nothing(tmp_path):
    folder = tmp_path / "scores.parquet"
    names = [f"clip{i:03d}.mp4" for i in range(60)]
    refs = [score.ClipRef("/clips", name) for name in names]
    writers = [open_output(folder, META, shard=f"{k}/2")[0] for k in range(2)]
    for writer in writers:
        writer.rows_per_part = 4
    shards = [inputs.shard(refs, k, 2) for k in range(2)]
    for pair in zip(*shards, strict=False):  # interleaved, as two jobs would run
        for writer, ref in zip(writers, pair, strict=True):
            writer.add(make_row(ref.path))
    for writer in writers:
        writer.close()
    rerun, done = open_output(folder, META, shard="0/2")  # another run of shard 0
    todo = [ref for ref in refs if (ref.root, ref.path) not in done]
    assert done == {(r.root, r.path) for r in shards[0][: len(shards[1])] + shards[1]}
    for ref in todo:
        rerun.add(make_row(ref.path))
    rerun.close()
    assert sorted(scores_of(folder)) == names


WRITER_SCRIPT = """
import sys, time
from synccurate.store import parts as store  # light: no torch, so the child starts fast

META = {META!r}
def make_row(path):
    return {{"root": "/clips", "path": path, "status": "ok", "model": META["model"],
            "p_t": [0.5] * 26, "onscreen": [True] * 26, "profile": [0.1] * 31}}

real_publish = store.publish
def slow_publish(temp, final):
    if final.name.endswith("-00002.parquet"):
        print("publishing", flush=True)
        time.sleep(60)  # killed here: the third part exists only as a temp file
    real_publish(temp, final)
store.publish = slow_publish

writer, done = store.open_output(sys.argv[1], META, shard="0/1")
writer.rows_per_part = 5
for i in range(40):
    writer.add(make_row(f"c{{i:02d}}.mp4"))
"""


def test_a_sigkilled_writer_leaves_a_readable_folder_and_the_rerun_completes_it(tmp_path):
    folder = tmp_path / "scores.parquet"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT.format(META=META), str(folder)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        assert process.stdout.readline().strip() == "publishing"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert [p for p in folder.iterdir() if p.name.endswith(".tmp")]  # the torn part
    assert len(scores_of(folder)) == 10
    writer, done = open_output(folder, META, shard="0/1")
    assert len(done) == 10
    with writer:
        for i in range(40):
            if ("/clips", f"c{i:02d}.mp4") not in done:
                writer.add(make_row(f"c{i:02d}.mp4"))
    table = readers.read_scores(folder)
    assert sorted(table["path"]) == [f"c{i:02d}.mp4" for i in range(40)]
    assert len(readers.read_keys(folder, latest=False)) == 40  # nothing scored twice


# --- discovering, manifests, shards ----------------------------------------------------------


@pytest.fixture
def odd_folder(tmp_path):
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    (folder / "good.mp4").write_bytes(b"x")
    (folder / "sub" / "locked.mp4").write_bytes(b"x")
    (folder / "sub" / "locked.mp4").chmod(0)
    (folder / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    (folder / "notes.txt").write_text("not a video")
    return folder


def test_discover_lists_dangling_symlinks_and_unreadable_files(odd_folder, monkeypatch):
    refs = inputs.discover([odd_folder])
    assert [ref.path for ref in refs] == ["gone.mp4", "good.mp4", "sub/locked.mp4"]
    direct = inputs.discover([odd_folder / "gone.mp4"])
    assert direct == [score.ClipRef(str(odd_folder), "gone.mp4")]
    gone = prepare.prepare_clip(refs[0], (48, 48), detector=object())
    assert gone.status == "decode_error" and "dangling symlink to" in gone.error
    real_access = os.access  # as root every file is readable: pretend not
    monkeypatch.setattr(os, "access", lambda p, m: "locked" not in str(p) and real_access(p, m))
    locked = prepare.prepare_clip(refs[2], (48, 48), detector=object())
    assert locked.status == "decode_error" and locked.error.endswith("permission denied")


def test_discover_lists_a_sub_folder_it_cannot_open(odd_folder, monkeypatch):
    real_scandir = os.scandir

    def refuse_sub(path):
        if Path(path).name == "sub":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_sub)
    assert [ref.path for ref in inputs.discover([odd_folder])] == ["gone.mp4", "good.mp4", "sub"]


def test_manifest_round_trip(odd_folder, tmp_path):
    out = tmp_path / "clips.parquet"
    table = write_manifest([odd_folder], out)
    assert read_manifest(out) == inputs.discover([odd_folder])
    sizes = dict(zip(table["path"], table["size"], strict=True))
    assert sizes["good.mp4"] == 1 and pd.isna(sizes["gone.mp4"])
    result = CliRunner().invoke(app, ["manifest", str(odd_folder), "-o", str(out)])
    assert result.exit_code == 0 and "3 clips" in result.output


def test_shard_status_finished_unfinished_missing(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(40):
        (clips / f"c{i:02d}.mp4").write_bytes(b"")
    manifest = tmp_path / "clips.parquet"
    write_manifest([clips], manifest)
    refs = read_manifest(manifest)
    folder = tmp_path / "scores.parquet"
    for k, share in ((0, 1.0), (1, 0.5), (3, 1.0)):  # shard 2 never ran
        with PartsWriter(folder, metadata=META, shard=f"{k}/4") as writer:
            part = inputs.shard(refs, k, 4)
            for ref in part[: round(len(part) * share)]:
                writer.add(make_row(ref.path, "no_face", root=ref.root))
    states = [s.state for s in shard_status(folder, manifest)]
    assert states == ["finished", "unfinished", "missing", "finished"]
    result = CliRunner().invoke(app, ["shards", str(folder), "--manifest", str(manifest)])
    assert result.exit_code == 0 and result.stdout.strip() == "1,2"


# --- the commands that read scores ------------------------------------------------------------


def test_filter_and_compact_commands_read_a_folder(tmp_path):
    folder = tmp_path / "scores.parquet"
    with PartsWriter(folder, metadata=META, rows_per_part=2) as writer:
        for i in range(5):
            writer.add(make_row(f"c{i}.mp4", prob_at_offset=0.9, offscreen_ratio=0.0))
        writer.add(make_row("c0.mp4", prob_at_offset=0.1, offscreen_ratio=0.0))
    runner = CliRunner()
    kept = tmp_path / "kept.parquet"
    result = runner.invoke(app, ["filter", str(folder), "-o", str(kept)])
    assert result.exit_code == 0, result.output
    assert sorted(pd.read_parquet(kept)["path"]) == ["c1.mp4", "c2.mp4", "c3.mp4", "c4.mp4"]
    inside = runner.invoke(app, ["filter", str(folder), "-o", str(folder / "kept.parquet")])
    assert inside.exit_code == 2 and "inside the scores folder" in inside.output
    result = runner.invoke(app, ["compact", str(folder)])
    assert result.exit_code == 0 and "(5 rows)" in result.output
    assert len(readers.list_parts(folder)) == 1


@pytest.mark.parametrize("name", ["p_t", "onscreen", "fconf"])
def test_list_columns_are_built_as_arrow_would_from_lists_or_arrays(name):
    """The fast list-column builder gives pa.array's result for lists, tuples, arrays,
    null rows and NaN values (null, as from_pandas makes them), in any mix."""
    rng = np.random.default_rng(3)
    kind = schema.ARROW_TYPES[name]
    draw = (lambda n: rng.random(n) > 0.5) if name == "onscreen" else (lambda n: rng.random(n))
    values = [draw(5).tolist(), None, draw(3), tuple(draw(2).tolist()), [], None, draw(4)]
    if name != "onscreen":
        values[0][1] = float("nan")
        values[2][0] = np.nan
    expected = pa.array(
        [None if v is None else list(v) for v in values], type=kind, from_pandas=True
    )
    built = schema.column_array(name, values)
    assert built.type == kind
    assert built.equals(expected), (built, expected)
