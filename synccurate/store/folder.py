"""A scores folder on disk: part names, publishing a part, and the pinned settings.

Parts are never rewritten: each is written under a temporary name (leading `.`, which
every Parquet dataset reader skips) and then published under its final name with a hard
link, which fails instead of replacing. `_synccurate.json` pins the model, the max offset,
the shard count and the schema version; a run asking for another model or max offset is
refused rather than mixed in.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from synccurate.io.files import default_file_mode
from synccurate.store.schema import SCHEMA_VERSION, SCORES, TableSchema

METADATA_NAME = "_synccurate.json"
PINNED = ("model", "max_offset")  # a run must ask for what the folder holds


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


def pin_metadata(
    folder: str | Path, asked: dict, shard_count: int | None = None, table: TableSchema = SCORES
) -> dict:
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
        "format": f"synccurate-{table.name}",
        "schema_version": SCHEMA_VERSION,
        "shard_count": shard_count,
        "columns": {name: str(kind) for name, kind in table.arrow_types.items()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    held = read_metadata(folder)
    if held is None:
        _write_metadata(folder, wanted, replace=False)
        held = read_metadata(folder)
    if held.get("format", "synccurate-scores") != wanted["format"]:  # older folders: scores
        raise ValueError(
            f"{folder}: holds a {held.get('format', 'synccurate-scores')} table, not "
            f"{wanted['format']}; write to another output"
        )
    pinned = (*PINNED, *table.pinned, "schema_version")
    keys = [key for key in pinned if held.get(key) != wanted.get(key)]
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
