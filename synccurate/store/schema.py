"""The tables synccurate writes (scores, timeline): their columns and Arrow types, and
rows → Arrow columns.

Every part of a folder is written with its table's schema, so that a part in which a
column is all empty still has that column's type. Columns a caller adds beyond a table's
columns are written too, their type inferred from the values. A new output table is a new
`TableSchema` here; the writer, the readers and the folder rules take it as a value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

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
    "n_shots": "Int64",  # shots between the cuts found (faces.shots); null: not looked for
    # what curators filter on besides sync (faces.quality, io.audio.frame_voicing): the
    # speaker's face size, track steadiness, frozen frames and yaw, and the voiced share
    "face_px": "float64",
    "track_jitter": "float64",
    "frozen_ratio": "float64",
    "yaw_deg": "float64",
    "speech_ratio": "float64",
    "vote_offset": "Int64",
    "vote_share": "float64",
    "offset_method": "string",
    "offset_min": "Int64",  # the offset over time (pipeline.timeline): its range,
    "offset_max": "Int64",
    "drift_ms_per_min": "float64",  # a robust line through the stretch offsets,
    "offset_start_ms": "float64",  # its offset at the clip's start,
    "drift_residual_ms": "float64",  # the median distance of the offsets from it,
    "offset_steps": "Int64",  # and the jumps between confident stretches
    "offset_step_at_s": "object",
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
    "offset_step_at_s": pa.list_(pa.float64()),
}


@dataclass(frozen=True)
class TableSchema:
    """One output table: its name (the folder's format is "synccurate-NAME"), its columns
    with their pandas dtypes, and the Arrow types of its list columns."""

    name: str
    columns: dict[str, str]
    list_types: dict[str, pa.ListType] = field(default_factory=dict)
    pinned: tuple[str, ...] = ()  # settings a folder pins beyond the model and max offset

    @cached_property
    def arrow_types(self) -> dict[str, pa.DataType]:
        return {
            name: self.list_types.get(name) or _ARROW_TYPES[kind]
            for name, kind in self.columns.items()
        }

    def rows_to_frame(self, rows: list[dict]) -> pd.DataFrame:
        """Rows as a DataFrame: the columns first with their dtypes, then any extra ones."""
        extras = list(dict.fromkeys(key for row in rows for key in row if key not in self.columns))
        frame = pd.DataFrame(rows, columns=[*self.columns, *extras])
        frame["scored_at"] = pd.to_datetime(frame["scored_at"], utc=True)  # None or NaT alone too
        return frame.astype({k: v for k, v in self.columns.items() if v != "object"})

    @cached_property
    def _pandas_metadata(self) -> dict[bytes, bytes]:
        """The schema metadata pandas writes, so `pd.read_parquet` restores the dtypes."""
        template = self.rows_to_frame([])
        return pa.Schema.from_pandas(template, preserve_index=False).metadata

    def arrow_schema(self, extra: Iterable[pa.Field] = ()) -> pa.Schema:
        """The columns as an Arrow schema (with pandas' dtype metadata), then `extra` fields."""
        fields = [pa.field(name, kind) for name, kind in self.arrow_types.items()]
        return pa.schema([*fields, *extra], metadata=self._pandas_metadata)

    def column_array(self, name: str, values: list) -> pa.Array:
        """One known column as its pinned Arrow type (NaN and pd.NA become null)."""
        kind = self.arrow_types[name]
        if pa.types.is_list(kind) and all(v is None or isinstance(v, LIST_VALUES) for v in values):
            return _list_column(values, kind)
        try:
            return pa.array(values, type=kind, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # e.g. 3.0 for an Int64 column
            dtype = self.columns[name]
            try:
                return pa.array(pd.Series(values, dtype=object).astype(dtype), type=kind)
            except (ValueError, TypeError, pa.ArrowInvalid, pa.ArrowTypeError) as error:
                raise ValueError(f"column {name}: values are not {dtype} ({error})") from None


# The key columns every table starts with and every row is stamped with.
_KEYS = {"root": "string", "path": "string", "status": "string"}
_STAMPS = {"scored_at": "datetime64[us, UTC]", "run_id": "string"}

SCORES = TableSchema("scores", COLUMNS, _LIST_TYPES)
# The scores columns of the offset over time (pipeline.timeline); older tables lack them.
OFFSET_OVER_TIME_COLUMNS = (
    "drift_ms_per_min",
    "offset_start_ms",
    "drift_residual_ms",
    "offset_min",
    "offset_max",
    "offset_steps",
    "offset_step_at_s",
)
# The offset over time (pipeline.timeline): one row per clip × stretch; a clip that could
# not be scored gets one row with its status and no stretch.
TIMELINE = TableSchema(
    "timeline",
    {
        **_KEYS,
        "stretch": "Int64",  # 0, 1, … in time order
        "start_s": "float64",
        "end_s": "float64",
        "face_share": "float64",  # of the stretch's windows whose frames show the face
        "offset_frames": "Int64",
        "offset_fine": "float64",  # to a fraction of a frame: what the drift is fitted to
        "vote_share": "float64",
        "prob_at_offset": "float64",  # probability models
        "lse_c": "float64",  # distance models
        "offscreen_ratio": "float64",
        "model": "string",
        **_STAMPS,
    },
    pinned=("segment_seconds",),
)
# Speaker segments (pipeline.segments): one row per clip × segment, a stretch of one shot
# where one face track is on screen and speaks in sync; a clip that could not be scored
# gets one row with its status and no segment. (root, path, segment) is a segment's key.
SEGMENTS = TableSchema(
    "segments",
    {
        **_KEYS,
        "segment": "Int64",  # 0, 1, … in time order within the clip
        "shot": "Int64",  # 0, 1, … between the clip's shot cuts
        "face_track": "Int64",
        "start_s": "float64",
        "end_s": "float64",
        "offset_frames": "Int64",  # the model's metrics on the segment's windows alone
        "offset_fine": "float64",
        "vote_share": "float64",
        "prob_at_offset": "float64",  # probability models
        "lse_c": "float64",  # distance models
        "offscreen_ratio": "float64",
        "face_px": "float64",  # median face box height, source px
        "speech_ratio": "float64",  # voiced share of the segment's frames
        "end_reason": "string",  # pipeline.segments.END_REASONS
        "model": "string",
        **_STAMPS,
    },
    pinned=("max_gap_seconds", "min_segment_seconds", "max_segment_seconds", "segment_threshold"),
)
# The scores table's names, as most of the code reads the scores table.
ARROW_TYPES = SCORES.arrow_types
rows_to_frame = SCORES.rows_to_frame
arrow_schema = SCORES.arrow_schema
column_array = SCORES.column_array


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
