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
wins (`synccurate.readers`). `_synccurate.json` pins the model, the max offset, the
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

import json
import os
import secrets
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from synccurate.tables import default_file_mode

SCHEMA_VERSION = 1  # raise when a column changes meaning or type; adding columns is fine
METADATA_NAME = "_synccurate.json"
PINNED = ("model", "max_offset")  # a run must ask for what the folder holds
ROWS_PER_BATCH = 250  # Python rows held before they become Arrow columns (~3 MB)
ROWS_PER_GROUP = 2_000  # a Parquet row group (~5 MB as Arrow); smaller ones slow reading
ROWS_PER_PART = 50_000  # a fast run makes 20 parts per million clips
SECONDS_PER_PART = 60.0  # a crash loses at most this much; 1,200 rows a part at 20 clips/s
COMPRESSION = "zstd"  # smaller and faster than snappy here; every reader named above has it

COLUMNS = {
    "root": "string",
    "path": "string",
    "status": "string",
    "error": "string",
    "duration_s": "float64",
    "n_frames": "Int64",
    "source_fps": "float64",
    "offset_frames": "Int64",
    "offset_seconds": "float64",
    "prob_at_offset": "float64",
    "offscreen_ratio": "float64",
    "confidence": "float64",
    "lse_d": "float64",  # distance models (SyncNet v2): LSE-D and LSE-C
    "lse_c": "float64",
    "face_ratio": "float64",
    "silence_ratio": "float64",
    "at_search_edge": "boolean",
    "n_faces": "Int64",  # face tracks long enough to score; the speaker's describes the row
    "face_track": "Int64",
    "face_tracks": "string",  # JSON: offset and strength of every track, when there are several
    "vote_offset": "Int64",
    "vote_share": "float64",
    "offset_method": "string",
    "model": "string",
    "weights_trained_on": "string",  # synthetic / real / unknown (provenance)
    "synthetic_weights_on_real": "boolean",  # synthetic-only weights on a non-synth clip
    "face_detector": "string",
    "p_t": "object",
    "onscreen": "object",
    "profile": "object",
    "fconf": "object",
    "scored_at": "datetime64[us, UTC]",
    "run_id": "string",
}
KEY_COLUMNS = ("root", "path", "status", "scored_at", "model")

_ARROW_TYPES = {
    "string": pa.string(),
    "float64": pa.float64(),
    "Int64": pa.int64(),
    "boolean": pa.bool_(),
    "datetime64[us, UTC]": pa.timestamp("us", tz="UTC"),
}
_LIST_TYPES = {
    "p_t": pa.list_(pa.float64()),
    "onscreen": pa.list_(pa.bool_()),
    "profile": pa.list_(pa.float64()),
    "fconf": pa.list_(pa.float64()),
}
ARROW_TYPES = {name: _LIST_TYPES.get(name) or _ARROW_TYPES[kind] for name, kind in COLUMNS.items()}


def rows_to_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows as a DataFrame: COLUMNS first with their dtypes, then any extra columns."""
    extras = list(dict.fromkeys(key for row in rows for key in row if key not in COLUMNS))
    frame = pd.DataFrame(rows, columns=[*COLUMNS, *extras])
    frame["scored_at"] = pd.to_datetime(frame["scored_at"], utc=True)  # None or NaT alone too
    return frame.astype({k: v for k, v in COLUMNS.items() if v != "object"})


def _pandas_metadata() -> dict[bytes, bytes]:
    """The schema metadata pandas writes, so `pd.read_parquet` restores COLUMNS' dtypes."""
    template = rows_to_frame([])
    return pa.Schema.from_pandas(template, preserve_index=False).metadata


_PANDAS_METADATA = _pandas_metadata()


def arrow_schema(extra: Iterable[pa.Field] = ()) -> pa.Schema:
    """COLUMNS as an Arrow schema (with pandas' dtype metadata), then `extra` fields."""
    fields = [pa.field(name, kind) for name, kind in ARROW_TYPES.items()]
    return pa.schema([*fields, *extra], metadata=_PANDAS_METADATA)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema`'s columns: cast, missing ones all null."""
    columns = [
        _cast(table.column(field.name), field.type)
        if field.name in table.column_names
        else pa.nulls(len(table), field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _cast(column: pa.ChunkedArray, kind: pa.DataType) -> pa.ChunkedArray:
    """A column as `kind`; one with no values at all (e.g. NaN where a list column of a
    newer schema is missing from an older table) becomes nulls of that type."""
    try:
        return column.cast(kind)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        if column.null_count == len(column) or pa.types.is_floating(column.type):
            values = column.to_pandas()
            if values.isna().all():
                return pa.chunked_array([pa.nulls(len(column), kind)])
        raise


def now_us() -> int:
    """The current UTC time in microseconds since the epoch (the unit of `scored_at`)."""
    return time.time_ns() // 1000


def new_run_id() -> str:
    """A run id that sorts by start time and is unique across machines: 20260509T013000Z-9f2c1a."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """'K/N' (as given to --shard) as (K, N); None for a run over every clip."""
    if shard is None:
        return None
    index, _, count = str(shard).partition("/")
    if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise ValueError(f"--shard {shard}: expected K/N with 0 <= K < N, e.g. 3/16")
    return int(index), int(count)


# --- publishing files ---------------------------------------------------------------


def is_part(path: Path) -> bool:
    """A published part: *.parquet, not hidden (`.`) and not metadata (`_`) — what readers read."""
    return path.suffix == ".parquet" and not path.name.startswith((".", "_"))


def temp_name(folder: Path, name: str) -> Path:
    """Where `name` is written before it is published: hidden, and not ending in .parquet."""
    return folder / f".{name}.{secrets.token_hex(4)}.tmp"


def _sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def publish(temp: Path, final: Path) -> None:
    """Give the finished file `temp` the name `final`; never replaces an existing file.

    A hard link is atomic and fails when the name is taken (a rename would replace it);
    file systems without hard links fall back to an existence check and a rename. Raises
    FileExistsError, leaving `temp` in place, when `final` exists.
    """
    _sync(temp)  # the data is on disk before the name is
    os.chmod(temp, default_file_mode())
    try:
        os.link(temp, final)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (some network or FAT file systems)
        if final.exists():
            raise FileExistsError(f"{final}: already exists") from None
        os.rename(temp, final)
        return
    temp.unlink()


# --- the pinned settings ----------------------------------------------------------------


def read_metadata(folder: str | Path) -> dict | None:
    """The folder's `_synccurate.json`, or None when it has none."""
    try:
        return json.loads((Path(folder) / METADATA_NAME).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise ValueError(f"{Path(folder) / METADATA_NAME}: unreadable ({error})") from error


def _write_metadata(folder: Path, data: dict, *, replace: bool) -> None:
    temp = temp_name(folder, METADATA_NAME)
    try:
        temp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        if replace:
            _sync(temp)
            os.replace(temp, folder / METADATA_NAME)
        else:
            try:
                publish(temp, folder / METADATA_NAME)
            except FileExistsError:
                pass  # another job created it first; the caller checks it agrees
    finally:
        temp.unlink(missing_ok=True)


def _describe(data: dict, keys: Iterable[str]) -> str:
    return " ".join(f"{key}={data.get(key)}" for key in keys)


def pin_metadata(folder: str | Path, asked: dict, shard_count: int | None = None) -> dict:
    """Create the folder's pinned settings, or check that `asked` agrees with them.

    `asked` must hold "model" and "max_offset"; other keys are recorded, not compared.
    The shard count is pinned by the first sharded run; runs without --shard always fit.
    Raises ValueError (one line: folder, what it holds, what was asked) on a mismatch.
    """
    folder = Path(folder)
    missing = [key for key in PINNED if asked.get(key) is None]
    if missing:
        raise ValueError(f"scores metadata needs {', '.join(missing)}")
    wanted = {
        **asked,
        "format": "synccurate-scores",
        "schema_version": SCHEMA_VERSION,
        "shard_count": shard_count,
        "columns": {name: str(kind) for name, kind in ARROW_TYPES.items()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    held = read_metadata(folder)
    if held is None:
        _write_metadata(folder, wanted, replace=False)
        held = read_metadata(folder)
    keys = [key for key in (*PINNED, "schema_version") if held.get(key) != wanted[key]]
    if keys:
        raise ValueError(
            f"{folder}: holds {_describe(held, keys)}, this run asks for {_describe(wanted, keys)};"
            " write to another output so results are not mixed"
        )
    if shard_count is not None and held.get("shard_count") is None:
        _write_metadata(folder, {**held, "shard_count": shard_count}, replace=True)
        held = read_metadata(folder)
    if shard_count is not None and held.get("shard_count") != shard_count:
        raise ValueError(
            f"{folder}: holds shard_count={held.get('shard_count')}, this run asks for "
            f"shard_count={shard_count}; use the same N in --shard K/N for every job"
        )
    return held


# --- the writer ---------------------------------------------------------------------------


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
    ):
        self.folder = Path(folder)
        parsed = parse_shard(shard)
        self.metadata = pin_metadata(self.folder, metadata, parsed[1] if parsed else None)
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
        extras = list(dict.fromkeys(key for row in rows for key in row if key not in COLUMNS))
        arrays = [_column(name, [row.get(name) for row in rows]) for name in COLUMNS]
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
        return pa.Table.from_arrays(arrays, schema=arrow_schema(extra_fields))


def _column(name: str, values: list) -> pa.Array:
    """One known column as its pinned Arrow type (NaN and pd.NA become null)."""
    kind = ARROW_TYPES[name]
    if pa.types.is_list(kind) and all(v is None or isinstance(v, LIST_VALUES) for v in values):
        return _list_column(values, kind)
    try:
        return pa.array(values, type=kind, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # e.g. 3.0 for an Int64 column
        try:
            return pa.array(pd.Series(values, dtype=object).astype(COLUMNS[name]), type=kind)
        except (ValueError, TypeError, pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise ValueError(f"column {name}: values are not {COLUMNS[name]} ({error})") from None


LIST_VALUES = (list, tuple, np.ndarray)  # what a list cell may hold besides None


def _list_column(values: list, kind: pa.ListType) -> pa.Array:
    """A list column from Python lists or NumPy arrays (None = a null list).

    pa.array converts nested Python lists one float at a time (~40 µs for a row's 250
    p_t values); flattening through NumPy and setting the offsets is several times
    faster and gives the same array. NaN values become null, as with from_pandas.
    """
    lengths = np.fromiter((0 if v is None else len(v) for v in values), np.int64, len(values))
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    dtype = kind.value_type.to_pandas_dtype()
    present = [np.asarray(v, dtype=dtype) for v in values if v is not None]
    flat = np.concatenate(present) if present else np.empty(0, dtype=dtype)
    missing = pa.array(np.fromiter((v is None for v in values), bool, len(values)))
    return pa.ListArray.from_arrays(
        pa.array(offsets),
        pa.array(flat, type=kind.value_type, from_pandas=True),
        type=kind,
        mask=missing if missing.true_count else None,
    )


# --- opening an output -----------------------------------------------------------------


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
) -> tuple[PartsWriter, set[tuple[str, str]]]:
    """The writer for output `path` and the (root, path) keys already done there.

    `path` is a scores folder: created when missing; an existing legacy single-file table
    is migrated into a folder of the same name first (`migrate_legacy`). Anything else (a
    folder without `_synccurate.json` that is not empty, a file that is not a scores
    table) is refused with ValueError, as is a folder pinned to another model or max offset.
    Done keys: every clip with a row, except, with `retry_failed`, those whose latest row
    is not `ok`.
    """
    from synccurate import readers

    path = Path(path)
    _finish_migration(path)
    if path.is_file():
        migrate_legacy(path, metadata)
    elif path.exists() and not path.is_dir():
        raise ValueError(f"{path}: exists and is neither a scores folder nor a scores table")
    elif path.is_dir() and read_metadata(path) is None:
        if any(not entry.name.startswith(".") for entry in path.iterdir()):
            raise ValueError(
                f"{path}: is a folder but not a scores folder (no {METADATA_NAME}); "
                "choose a new or empty output"
            )
    writer = PartsWriter(path, metadata=metadata, shard=shard, seconds_per_part=seconds_per_part)
    return writer, readers.done_keys(path, retry_failed=retry_failed)
