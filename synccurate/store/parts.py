"""Scores storage: a folder of immutable Parquet parts that many jobs append to.

A scores output is a folder (`-o scores.parquet` names it; pandas, pyarrow, duckdb and
polars read such a folder as one table):

    scores.parquet/
        _synccurate.json                                    pinned settings (below)
        part-s00003of00016-20260509T013000Z-9f2c1a-00000.parquet
        part-all-20260509T021200Z-77ab03-00000.parquet      (a run without --shard)
        .part-s00003of00016-….tmp                           being written: readers skip it

Parts are never rewritten: each is written under a temporary name (leading `.`, which
every Parquet dataset reader skips) and then published under its final name with a
hard link, which fails instead of replacing. A name holds the shard, the run id and a
sequence number, so two jobs never publish the same name. Each row is stamped with
`scored_at` (UTC) and `run_id`; when a clip has several rows, the latest `scored_at`
wins (`synccurate.store.readers`). `_synccurate.json` pins the model, the max offset, the
shard count and the schema version; a run asking for another model or max offset is
refused rather than mixed in.

How the scoring driver uses it (`open_output` also migrates a legacy single-file table
and refuses a path that is not a scores table):

    writer, done = store.open_output(output, {"model": model_id, "max_offset": 15},
                                     shard="3/16", retry_failed=False)
    with writer:                       # close() (also on Ctrl-C) publishes the last rows
        for ref in refs:
            if (ref.root, ref.path) in done:
                continue
            writer.add(row)            # a dict: COLUMNS plus any extra columns

Memory stays bounded: at most `rows_per_group` rows (2,000, ~5 MB as Arrow columns)
are held before they are written as a row group into the part being written. A part is
published every `rows_per_part` rows (50,000) or when its oldest row is
`seconds_per_part` old (60 s), whichever comes first, so a crash (or a SIGKILL) loses at
most that much work; the interrupted part stays a hidden `.tmp` file (`compact` removes
old ones). List columns may be Python lists or NumPy arrays. Columns the caller adds
beyond COLUMNS are written too; their type is inferred from the values (add them to
COLUMNS to pin it, so that a part where they are all empty still gets that type).
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from synccurate.store.folder import (
    METADATA_NAME,
    new_run_id,
    now_us,
    parse_shard,
    pin_metadata,
    publish,
    read_metadata,
    temp_name,
)
from synccurate.store.readers import done_keys
from synccurate.store.schema import (
    COLUMNS,
    COMPRESSION,
    ROWS_PER_GROUP,
    SCORES,
    TableSchema,
    arrow_schema,
    conform,
)

ROWS_PER_BATCH = 250  # Python rows held before they become Arrow columns (~3 MB)
ROWS_PER_PART = 50_000  # a fast run makes 20 parts per million clips
SECONDS_PER_PART = 60.0  # a crash loses at most this much; 1,200 rows a part at 20 clips/s


class PartsWriter:
    """Appends rows to a scores folder as immutable parts (see the module docstring).

    `add(row)` buffers a row, stamped with `scored_at` and `run_id`. Every
    `ROWS_PER_BATCH` rows the buffer becomes Arrow columns (~2.3 kB a row instead of
    ~11 kB of Python lists), and every `rows_per_group` rows those are written as a row
    group into the part being written (under its temporary name), so memory stays
    bounded. The part is published when it has `rows_per_part` rows or its oldest row
    is `seconds_per_part` old; `flush()` publishes it now; `close()` flushes and ends.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        metadata: dict,
        shard: str | None = None,
        run_id: str | None = None,
        rows_per_part: int = ROWS_PER_PART,
        seconds_per_part: float = SECONDS_PER_PART,
        rows_per_group: int = ROWS_PER_GROUP,
        table: TableSchema = SCORES,
    ):
        self.folder = Path(folder)
        self.table = table
        parsed = parse_shard(shard)
        self.metadata = pin_metadata(self.folder, metadata, parsed[1] if parsed else None, table)
        self.shard_tag = f"s{parsed[0]:05d}of{parsed[1]:05d}" if parsed else "all"
        self.run_id = run_id or new_run_id()
        self.rows_per_part = rows_per_part
        self.seconds_per_part = seconds_per_part
        self.rows_per_group = rows_per_group
        self.parts: list[Path] = []  # published by this writer, in order
        self.rows_written = 0  # rows in those parts
        self._rows: list[dict] = []  # Python rows, at most ROWS_PER_BATCH
        self._batches: list[pa.Table] = []  # converted rows of the next row group
        self._batched = 0  # rows in self._batches
        self._out: pq.ParquetWriter | None = None  # the part being written
        self._temp: Path | None = None
        self._in_part = 0  # rows already written into self._out
        self._oldest = 0.0  # time.monotonic() of the oldest row not yet published
        self._sequence = 0
        self._extra_types: dict[str, pa.DataType] = {}  # first non-null type of each extra
        self._closed = False

    @property
    def pending(self) -> int:
        """Rows added but not yet published."""
        return self._in_part + self._batched + len(self._rows)

    def add(self, row: dict) -> None:
        if self._closed:
            raise ValueError(f"{self.folder}: the writer is closed")
        now = time.monotonic()
        if self.pending == 0:
            self._oldest = now
        self._rows.append({**row, "scored_at": now_us(), "run_id": self.run_id})
        if self.pending >= self.rows_per_part or now - self._oldest >= self.seconds_per_part:
            self.flush()
        elif len(self._rows) >= min(ROWS_PER_BATCH, self.rows_per_group):
            self._convert()

    def flush(self) -> Path | None:
        """Publish the rows added so far as one part; its path (None when there were none)."""
        self._convert()
        self._write_group()
        return self._publish()

    def close(self) -> None:
        if not self._closed:
            self.flush()
            self._closed = True

    def __enter__(self) -> PartsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # also on an exception: rows already scored are kept

    def _convert(self) -> None:
        if not self._rows:
            return
        table = self._table(self._rows)
        if self._batches and not table.schema.equals(self._batches[0].schema):
            self._write_group()  # new extra columns: they start a new row group
        self._batches.append(table)
        self._batched += len(table)
        self._rows = []
        if self._batched >= self.rows_per_group:
            self._write_group()

    def _write_group(self) -> None:
        if not self._batches:
            return
        table = pa.concat_tables(self._batches)
        if self._out is not None and not table.schema.equals(self._out.schema):
            self._publish()  # a part has one schema: new extra columns start a new part
        if self._out is None:
            self._temp = temp_name(self.folder, f"part-{self.shard_tag}-{self.run_id}")
            self._out = pq.ParquetWriter(self._temp, table.schema, compression=COMPRESSION)
        self._out.write_table(table, row_group_size=len(table))
        self._in_part += len(table)
        self._batches, self._batched = [], 0

    def _publish(self) -> Path | None:
        if self._out is None:
            return None
        self._out.close()
        temp, self._out, self._temp = self._temp, None, None
        try:
            while True:
                final = self.folder / (
                    f"part-{self.shard_tag}-{self.run_id}-{self._sequence:05d}.parquet"
                )
                self._sequence += 1
                try:
                    publish(temp, final)
                    break
                except FileExistsError:
                    continue  # a part of an earlier run with this id: take the next number
        finally:
            temp.unlink(missing_ok=True)
        self.parts.append(final)
        self.rows_written += self._in_part
        self._in_part = 0
        return final

    def _table(self, rows: list[dict]) -> pa.Table:
        columns = self.table.columns
        extras = list(dict.fromkeys(key for row in rows for key in row if key not in columns))
        arrays = [
            self.table.column_array(name, [row.get(name) for row in rows]) for name in columns
        ]
        extra_fields = []
        for name in extras:
            array = pa.array([row.get(name) for row in rows], from_pandas=True)
            known = self._extra_types.get(name)
            if known is not None and array.type != known:
                try:
                    array = array.cast(known)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    pass  # keep what it is; readers unify the parts' types
            elif known is None and not pa.types.is_null(array.type):
                self._extra_types[name] = array.type
            arrays.append(array)
            extra_fields.append(pa.field(name, array.type))
        return pa.Table.from_arrays(arrays, schema=self.table.arrow_schema(extra_fields))


LEGACY_NAME = "_legacy.parquet"  # the migrated single-file table, kept inside the folder
LEGACY_RUN_ID = "legacy"


def _check_legacy(path: Path, asked: dict) -> pq.ParquetFile:
    try:
        legacy = pq.ParquetFile(path)
    except Exception as error:
        raise ValueError(f"{path}: exists and is not a readable Parquet table ({error})") from None
    missing = {"root", "path", "status"} - set(legacy.schema_arrow.names)
    if missing:
        raise ValueError(f"{path}: exists but is not a scores table (no {sorted(missing)} column)")
    if "model" in legacy.schema_arrow.names:
        keys = pq.read_table(path, columns=["status", "model"]).to_pandas()
        others = set(keys.loc[keys["status"] == "ok", "model"].dropna()) - {asked["model"]}
        if others:
            raise ValueError(
                f"{path}: holds model={','.join(sorted(others))}, this run asks for "
                f"model={asked['model']}; write to another output so results are not mixed"
            )
    return legacy


def migrate_legacy(path: str | Path, metadata: dict) -> Path:
    """Turn a single-file scores table into a scores folder of the same name, once.

    Its rows become one part (run_id "legacy", no scored_at: older than any new row); the
    original file is kept as `_legacy.parquet` inside the folder, which readers skip. The
    file is replaced by the folder with two renames; a crash between them leaves a
    `.NAME.migrating-*` folder that the next `open_output` finishes moving into place.
    """
    path = Path(path)
    legacy = _check_legacy(path, metadata)
    temp = path.parent / f".{path.name}.migrating-{secrets.token_hex(4)}"
    temp.mkdir()
    try:
        pin_metadata(temp, metadata)
        extras = [f for f in legacy.schema_arrow if f.name not in COLUMNS]
        schema = arrow_schema(extras)
        part = temp / f"part-all-{LEGACY_RUN_ID}-00000.parquet"
        staging = temp_name(temp, part.name)
        with pq.ParquetWriter(staging, schema, compression=COMPRESSION) as out:
            for batch in legacy.iter_batches(batch_size=ROWS_PER_GROUP):
                table = pa.Table.from_batches([batch])
                if "run_id" in table.column_names:
                    table = table.drop_columns(["run_id"])
                run_ids = pa.array([LEGACY_RUN_ID] * len(table), pa.string())
                table = table.append_column("run_id", run_ids)
                out.write_table(conform(table, schema))
        publish(staging, part)
        os.rename(path, temp / LEGACY_NAME)  # the commit point: the file is in the folder
    except BaseException:
        for leftover in temp.iterdir():
            leftover.unlink()
        temp.rmdir()
        raise
    os.rename(temp, path)
    return path


def _finish_migration(path: Path) -> None:
    """Move a migrated folder into place when a crash left it beside a missing `path`."""
    if path.exists() or path.is_symlink():
        return
    for temp in sorted(path.parent.glob(f".{path.name}.migrating-*")):
        if (temp / LEGACY_NAME).exists():
            try:
                os.rename(temp, path)
            except OSError:
                continue  # another job moved one first
            return


def open_output(
    path: str | Path,
    metadata: dict,
    shard: str | None = None,
    retry_failed: bool = False,
    seconds_per_part: float = SECONDS_PER_PART,
    table: TableSchema = SCORES,
) -> tuple[PartsWriter, set[tuple[str, str]]]:
    """The writer for output `path` and the (root, path) keys already done there.

    `path` is a scores folder: created when missing; an existing legacy single-file table
    is migrated into a folder of the same name first (`migrate_legacy`). Anything else (a
    folder without `_synccurate.json` that is not empty, a file that is not a scores
    table) is refused with ValueError, as is a folder pinned to another model or max offset.
    Done keys: every clip with a row, except, with `retry_failed`, those whose latest row
    is not `ok`. `table`: which table the folder holds (the scores; a timeline).
    """

    path = Path(path)
    _finish_migration(path)
    if path.is_file() and table is SCORES:
        migrate_legacy(path, metadata)
    elif path.exists() and not path.is_dir():
        raise ValueError(f"{path}: exists and is neither a scores folder nor a scores table")
    elif path.is_dir() and read_metadata(path) is None:
        if any(not entry.name.startswith(".") for entry in path.iterdir()):
            raise ValueError(
                f"{path}: is a folder but not a scores folder (no {METADATA_NAME}); "
                "choose a new or empty output"
            )
    writer = PartsWriter(
        path, metadata=metadata, shard=shard, seconds_per_part=seconds_per_part, table=table
    )
    return writer, done_keys(path, retry_failed=retry_failed)
