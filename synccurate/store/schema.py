"""The scores table's columns and their Arrow types, and rows → Arrow columns.

Every part of a scores folder is written with this schema, so that a part in which a
column is all empty still has that column's type. Columns a caller adds beyond COLUMNS
are written too, their type inferred from the values.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa

SCHEMA_VERSION = 1  # raise when a column changes meaning or type; adding columns is fine
ROWS_PER_GROUP = 2_000  # a Parquet row group (~5 MB as Arrow); smaller ones slow reading
COMPRESSION = "zstd"  # smaller and faster than snappy; pandas, pyarrow, duckdb, polars read it

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


def column_array(name: str, values: list) -> pa.Array:
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
