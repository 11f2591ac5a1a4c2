"""Atomic table files: readers see the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is loaded by whoever has a table; the model code needs none
    import pandas as pd


def same_file(a: Path, b: Path) -> bool:
    """True when two paths name one file (also through symlinks or other spellings)."""
    if Path(os.path.abspath(a)) == Path(os.path.abspath(b)):
        return True
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


@lru_cache(maxsize=1)
def default_file_mode() -> int:
    """Permissions of a newly created file under the process umask (mkstemp makes 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_table(
    table: pd.DataFrame, path: str | Path, *, protect: Iterable[str | Path] = ()
) -> Path:
    """Write `table` to Parquet atomically (temp file in the same folder, then os.replace).

    Refuses (ValueError) when `path` is one of the `protect`ed files, e.g. the input table.
    """
    path = Path(path)
    for other in protect:
        if same_file(path, Path(other)):
            raise ValueError(f"refusing to write over the input table {other}")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        table.to_parquet(temp, index=False)
        os.chmod(temp, default_file_mode())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path
