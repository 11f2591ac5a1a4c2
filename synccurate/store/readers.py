"""Reading scores: one reader for a scores folder of parts or a legacy single-file table.

- `read_scores(path, columns=None)`: the table that `filter`, `fix` and users read, one
  row per clip. When a clip (root, path) has several rows (a rerun, `--retry-failed`,
  two jobs, a crash between publishing a compacted part and removing the old ones), the
  row with the latest `scored_at` wins; rows without one (legacy tables) are the oldest,
  and among equal times the later part in name order wins.
- `read_keys(path)`: only `KEY_COLUMNS` (never the list columns), for resuming;
  `done_keys(path, retry_failed)`: the set of (root, path) a rerun skips.
- `compact(folder)`: rewrite a folder as one part with duplicates resolved; the new part
  is published before the old ones are removed, so a crash leaves only duplicates.

Parts are found by name (`folder.is_part`): files being written (leading `.`) and the
metadata (leading `_`) are skipped, as pandas/pyarrow dataset readers skip them too.
Parts are read one by one in name order, so positions are stable across reads.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synccurate.store.folder import (
    METADATA_NAME,
    is_part,
    new_run_id,
    publish,
    read_metadata,
    temp_name,
)
from synccurate.store.schema import (
    ARROW_TYPES,
    COLUMNS,
    COMPRESSION,
    KEY_COLUMNS,
    ROWS_PER_GROUP,
    SCORES,
    SEGMENTS,
    TIMELINE,
    TableSchema,
    conform,
    rows_to_frame,
)

STALE_TEMP_SECONDS = 24 * 3600  # `compact` removes temporary files untouched this long
READ_THREADS = min(8, os.cpu_count() or 1)


def list_parts(path: str | Path) -> list[Path]:
    """The Parquet files that make up a scores table: the file itself, or a folder's parts."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(entry for entry in path.iterdir() if is_part(entry))
    raise FileNotFoundError(f"{path}: no such scores table or folder")


def _schema(files: list[Path], table: TableSchema = SCORES) -> pa.Schema:
    """One schema for all parts: the table's columns keep their pinned types, extras are
    unified."""
    schemas = []
    for file in files:
        try:
            schemas.append(pq.read_schema(file))
        except (OSError, pa.ArrowInvalid) as error:
            raise ValueError(f"{file}: unreadable part ({error}); move it away") from None
    present = list(dict.fromkeys(name for schema in schemas for name in schema.names))
    extras = []
    for name in present:
        if name in table.columns:
            continue
        seen = [pa.schema([s.field(name)]) for s in schemas if name in s.names]
        try:
            extras.append(pa.unify_schemas(seen, promote_options="permissive").field(name))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise ValueError(f"column {name} has clashing types across parts ({error})") from None
    fields = [pa.field(name, kind) for name, kind in table.arrow_types.items() if name in present]
    return pa.schema([*fields, *extras], metadata=table.arrow_schema().metadata)


def _read(file: Path, schema: pa.Schema) -> pa.Table:
    """`schema`'s columns of one part (cast; all null where the part lacks one)."""
    handle = pq.ParquetFile(file)
    wanted = [name for name in schema.names if name in handle.schema_arrow.names]
    return conform(handle.read(columns=wanted, use_threads=False), schema)


def _read_each(files: list[Path], schema: pa.Schema) -> list[pa.Table]:
    """`_read` of every file, in order (a few files at a time: pyarrow releases the GIL)."""
    with ThreadPoolExecutor(READ_THREADS) as pool:
        return list(pool.map(lambda file: _read(file, schema), files))


def _keys(files: list[Path], names: Sequence[str] = KEY_COLUMNS) -> pa.Table:
    """The columns `names` (KEY_COLUMNS) of all parts, in order."""
    schema = pa.schema([pa.field(name, ARROW_TYPES[name]) for name in names])
    return pa.concat_tables(_read_each(files, schema) or [schema.empty_table()])


def _codes(column: pa.ChunkedArray) -> np.ndarray:
    """An integer per value, equal for equal values (nulls: -1)."""
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column.combine_chunks())
    indices = [chunk.indices for chunk in getattr(column, "chunks", [column])]
    return np.concatenate(
        [pc.fill_null(i, -1).to_numpy(zero_copy_only=False) for i in indices] or [np.zeros(0)]
    ).astype(np.int64)


def latest_rows(root, path, scored_at) -> np.ndarray:
    """Positions (ascending) of the row that wins for each (root, path): latest scored_at.

    Null scored_at counts as the oldest; among equal times the later position wins.
    """
    if len(path) == 0:
        return np.zeros(0, dtype=np.int64)
    paths = _codes(path)
    key = _codes(root) * (paths.max() + 2) + paths
    times = pc.fill_null(pc.cast(scored_at, pa.int64()), np.iinfo(np.int64).min)
    order = np.lexsort((np.arange(len(key)), times.to_numpy(), key))  # key, time, position
    last = np.ones(len(order), dtype=bool)
    last[:-1] = key[order[1:]] != key[order[:-1]]
    return np.sort(order[last])


def _latest(table: pa.Table) -> pa.Table:
    scored_at = table["scored_at"] if "scored_at" in table.column_names else pa.nulls(len(table))
    winners = latest_rows(table["root"], table["path"], scored_at)
    return table if len(winners) == len(table) else table.take(winners)


def read_keys(path: str | Path, *, latest: bool = True) -> pd.DataFrame:
    """The key columns (root, path, status, scored_at, model) of a scores table or folder.

    `latest` (default) keeps one row per clip, the one `read_scores` would return.
    """
    table = _keys(list_parts(path))
    return _to_frame(_latest(table) if latest else table)


def _python_strings(column: pa.ChunkedArray) -> list:
    """A column of few distinct strings (root) as a list sharing one str per value."""
    encoded = pc.dictionary_encode(column.combine_chunks())
    names = encoded.dictionary.to_pylist() + [None]
    return [names[i] for i in pc.fill_null(encoded.indices, -1).to_numpy()]


def done_keys(path: str | Path, retry_failed: bool = False) -> set[tuple[str, str]]:
    """(root, path) of every clip with a row; with `retry_failed`, only those whose latest
    row is `ok`. An empty set when `path` does not exist yet or holds no parts."""
    if not Path(path).exists():
        return set()
    files = list_parts(path)
    if retry_failed:
        table = _latest(_keys(files, ("root", "path", "status", "scored_at")))
        table = table.filter(pc.equal(table["status"], "ok"))
    else:  # any row will do: no need to find the latest
        table = _keys(files, ("root", "path"))
    return set(zip(_python_strings(table["root"]), table["path"].to_pylist(), strict=True))


def read_scores(path: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The scores table at `path` (a folder of parts or one Parquet file), one row per clip.

    Duplicate rows of a clip are resolved (latest `scored_at` wins); COLUMNS get their
    usual dtypes; `columns` reads only those (e.g. leave out p_t/onscreen/profile).
    """
    files = list_parts(path)
    if not files:
        frame = rows_to_frame([])
        return frame[list(columns)] if columns is not None else frame
    schema = _schema(files)
    wanted = list(columns) if columns is not None else schema.names
    unknown = [name for name in wanted if name not in schema.names]
    if unknown:
        raise ValueError(f"{path}: no column {', '.join(unknown)}")
    table = pa.concat_tables(_read_each(files, _subset(schema, wanted)))
    if {"root", "path"} <= set(schema.names):
        keys = _keys(files, [n for n in ("root", "path", "scored_at") if n in schema.names])
        winners = _latest(keys.append_column("position", pa.array(np.arange(len(keys)))))
        if len(winners) < len(table):
            table = table.take(winners["position"])
    return _to_frame(table)


def _subset(schema: pa.Schema, names: Sequence[str]) -> pa.Schema:
    return pa.schema([schema.field(name) for name in names], metadata=schema.metadata)


def _to_frame(table: pa.Table, columns: dict[str, str] = COLUMNS) -> pd.DataFrame:
    frame = table.to_pandas()
    dtypes = {k: v for k, v in columns.items() if k in frame.columns and v != "object"}
    return frame.astype(dtypes)


def read_timeline(path: str | Path) -> pd.DataFrame:
    """A timeline folder (`score --timeline`), one row per clip × stretch, in time order.

    A clip scored again has new rows: only those of its latest scoring are kept (the run
    of its latest row: a run scores a clip once).
    """
    return _read_latest_run(path, TIMELINE, "stretch")


def read_segments(path: str | Path) -> pd.DataFrame:
    """A segments folder (`pipeline.segments`), one row per clip × speaker segment, in time
    order; as with the timeline, only the rows of a clip's latest scoring are kept."""
    return _read_latest_run(path, SEGMENTS, "segment")


def holds_segments(path: str | Path) -> bool:
    """Is the table at `path` (a folder of parts or one file) a segments table? Its rows are
    keyed by (root, path, segment), so a reader must not keep one row per clip."""
    files = list_parts(path)
    return bool(files) and "segment" in pq.read_schema(files[0]).names


def _read_latest_run(path: str | Path, table_schema: TableSchema, order: str) -> pd.DataFrame:
    """The rows of a per-clip table written by the clip's latest run (all rows when the
    table has no run stamps), sorted by clip and `order`."""
    files = list_parts(path)
    if not files:
        return table_schema.rows_to_frame([])
    table = pa.concat_tables(_read_each(files, _schema(files, table_schema)))
    frame = _to_frame(table, table_schema.columns)
    kept = frame
    if {"scored_at", "run_id"} <= set(frame.columns):  # a table written by hand has neither
        latest = frame.loc[latest_rows(table["root"], table["path"], table["scored_at"])]
        runs = latest.set_index(["root", "path"])["run_id"]
        clip_runs = runs.reindex(pd.MultiIndex.from_frame(frame[["root", "path"]])).to_numpy()
        kept = frame[frame["run_id"].to_numpy() == clip_runs]
    return kept.sort_values(["root", "path", order], na_position="first").reset_index(drop=True)


def compact(folder: str | Path) -> tuple[int, int, Path | None]:
    """Rewrite a scores folder as one part, duplicates resolved; (parts read, rows, new part).

    The new part is published before the parts it replaces are removed; parts published
    meanwhile by running jobs are left alone. A crash in between leaves duplicates, which
    every reader resolves anyway. One part is read at a time, so memory stays bounded by
    the largest part. Temporary files of crashed writers (a day old) are removed.
    """
    folder = Path(folder)
    if read_metadata(folder) is None:
        raise ValueError(f"{folder}: not a scores folder (no {METADATA_NAME})")
    for temp in folder.glob(".part-*.tmp"):
        if time.time() - temp.stat().st_mtime > STALE_TEMP_SECONDS:
            temp.unlink(missing_ok=True)
    files = list_parts(folder)
    if not files:
        return 0, 0, None
    schema = _schema(files)
    counts = [pq.ParquetFile(file).metadata.num_rows for file in files]
    keys = _keys(files, ("root", "path", "scored_at"))
    winners = latest_rows(keys["root"], keys["path"], keys["scored_at"])
    if len(files) == 1 and len(winners) == len(keys):
        return 1, len(winners), files[0]  # already one part without duplicates
    starts = np.cumsum([0, *counts])
    target = folder / f"part-compact-{new_run_id()}-00000.parquet"
    temp = temp_name(folder, target.name)
    try:
        with pq.ParquetWriter(temp, schema, compression=COMPRESSION) as out:
            group: list[pa.Table] = []
            for file, start, stop in zip(files, starts[:-1], starts[1:], strict=True):
                keep = winners[(winners >= start) & (winners < stop)] - start
                group.append(_read(file, schema).take(keep))
                if sum(len(t) for t in group) >= ROWS_PER_GROUP or file == files[-1]:
                    rows = pa.concat_tables(group)  # small parts become full row groups
                    out.write_table(rows, row_group_size=max(1, len(rows)))
                    group = []
        publish(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    for file in files:
        file.unlink()
    return len(files), len(winners), target
