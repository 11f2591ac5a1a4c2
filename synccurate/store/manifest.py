"""Many jobs, one folder: a clip manifest walked once, and which shards are finished.

- `write_manifest(paths, output)`: walk the input folders once (`score.discover`) and
  write root / path / size / mtime of every clip found (`synccurate manifest`), so that
  hundreds of array jobs read one table instead of each walking a million files.
- `read_manifest(path)`: the clips of a manifest as `ClipRef`s, in manifest order, for
  `score --manifest` (then `score.shard` picks a job's share as usual).
- `shard_status(folder, manifest)`: per shard K of the folder's pinned shard count,
  whether every manifest clip of shard K has a row (`synccurate shards`), to resubmit
  only the unfinished array tasks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from synccurate.io.files import write_table
from synccurate.io.inputs import ClipRef, discover, shard_of
from synccurate.store import parts as store
from synccurate.store import readers

MANIFEST_COLUMNS = {"root": "string", "path": "string", "size": "Int64", "mtime": "float64"}


def write_manifest(paths: Iterable[str | Path], output: str | Path) -> pd.DataFrame:
    """Walk `paths` once and write (atomically) one row per clip: root, path, size, mtime.

    size (bytes) and mtime (seconds since the epoch) are empty for a clip that cannot be
    stat'ed (a dangling symlink); the clip is listed all the same so it gets a score row.
    """
    rows = []
    for ref in discover(paths):
        try:
            info = os.stat(ref.file)
            size, mtime = info.st_size, info.st_mtime
        except OSError:
            size, mtime = None, None
        rows.append({"root": ref.root, "path": ref.path, "size": size, "mtime": mtime})
    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).astype(MANIFEST_COLUMNS)
    write_table(frame, output)
    return frame


def read_manifest(path: str | Path) -> list[ClipRef]:
    """The clips listed in a manifest written by `write_manifest`, in its order."""
    try:
        table = pq.read_table(path, columns=["root", "path"])
    except Exception as error:
        raise ValueError(f"{path}: not a clip manifest (needs root and path: {error})") from None
    roots, paths = table["root"].to_pylist(), table["path"].to_pylist()
    return [ClipRef(root, relative) for root, relative in zip(roots, paths, strict=True)]


@dataclass
class ShardStatus:
    index: int
    clips: int  # manifest clips in this shard
    done: int  # of them, those with a row in the folder

    @property
    def state(self) -> str:
        if self.done == self.clips:
            return "finished"
        return "missing" if self.done == 0 else "unfinished"


def shard_status(
    folder: str | Path, manifest: str | Path, count: int | None = None
) -> list[ShardStatus]:
    """Progress of each shard: finished (every manifest clip of it has a row, whatever its
    status), unfinished (some have), missing (none has). `count` defaults to the shard
    count pinned in the folder's metadata."""
    if count is None:
        metadata = store.read_metadata(folder) or {}
        count = metadata.get("shard_count")
        if not count:
            raise ValueError(f"{folder}: no shard count recorded; give it (--count N)")
    refs = read_manifest(manifest)
    done = readers.done_keys(folder) if Path(folder).exists() else set()
    clips, finished = [0] * count, [0] * count
    for ref in refs:
        index = shard_of(ref.path, count)
        clips[index] += 1
        finished[index] += (ref.root, ref.path) in done
    return [ShardStatus(k, clips[k], finished[k]) for k in range(count)]
