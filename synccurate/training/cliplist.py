"""Clip lists for `train` and `eval`: what the other commands produce, read as a list of clips.

An argument may be

- a folder of videos (searched recursively) or one video file: every video, no offset known;
- a folder written by `fix` (it holds `fixes.parquet`): exactly the clips its log records as
  written (fixed, copied or linked), which are in sync (offset 0) once fixed — not whatever
  else lies in the folder (outputs of earlier runs that a later selection dropped);
- a Parquet table: a `fix` log (its `output` column), or a scores table from `score` or a
  kept table from `filter` (its `root` + `path` columns; rows with status ok), each clip with
  the offset the table measured (`offset_frames`).

Tables are read through `filtering.load_scores`, like `filter` and `fix` read them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from synccurate.io.inputs import ClipRef, discover

FIX_LOG = "fixes.parquet"  # fix.LOG_NAME; fix imports av, which this module need not
FIX_DONE = ("fixed", "copied", "linked")  # fix.DONE_STATUSES


@dataclass(frozen=True)
class ListedClip:
    ref: ClipRef
    offset: int | None  # the offset a table measured (None: a folder, nothing known)
    source: str  # the argument it came from


@dataclass
class ClipList:
    clips: list[ListedClip]
    tables: list[tuple[Path, pd.DataFrame]]  # the scores / kept tables read (for checks)

    @property
    def refs(self) -> list[ClipRef]:
        return [c.ref for c in self.clips]


def _is_fix_log(table: pd.DataFrame) -> bool:
    return {"input", "output", "status", "applied_shift_samples"} <= set(table.columns)


def _from_fix_log(log: pd.DataFrame, folder: Path, source: str) -> list[ListedClip]:
    """The outputs a fix log records as written, relative to the fix folder when inside it."""
    clips = []
    done = log[log["status"].astype("string").isin(FIX_DONE).fillna(False)]
    for output in done["output"].dropna().astype(str):
        file = Path(output)
        try:
            ref = ClipRef(str(folder), file.relative_to(folder).as_posix())
        except ValueError:
            ref = ClipRef(str(file.parent), file.name)
        if not ref.file.exists():
            raise FileNotFoundError(f"{source}: lists {file}, which is gone")
        clips.append(ListedClip(ref, 0, source))
    return clips


def _from_scores(table: pd.DataFrame, source: str) -> list[ListedClip]:
    from synccurate.curate.filtering import clip_path

    ok = table[table["status"].astype("string") == "ok"]
    roots = ok["root"] if "root" in ok.columns else [None] * len(ok)
    clips = []
    for root, path, offset in zip(roots, ok["path"], ok["offset_frames"], strict=True):
        if root is not None and not pd.isna(root) and str(root) and not Path(path).is_absolute():
            ref = ClipRef(str(root), str(path))
        else:
            file = clip_path(None, str(path))
            ref = ClipRef(str(file.parent), file.name)
        clips.append(ListedClip(ref, None if pd.isna(offset) else int(offset), source))
    return clips


def resolve(paths: list[str | Path]) -> ClipList:
    """Every clip the arguments name, in order, each once (the first mention wins)."""
    from synccurate.curate.filtering import load_scores
    from synccurate.store.folder import read_metadata

    found: list[ListedClip] = []
    tables: list[tuple[Path, pd.DataFrame]] = []
    for given in paths:
        path = Path(given)
        if path.is_dir() and (path / FIX_LOG).is_file():
            folder = Path(os.path.abspath(path))
            found += _from_fix_log(pd.read_parquet(path / FIX_LOG), folder, str(given))
        elif path.is_dir() and read_metadata(path) is not None:  # a scores folder of parts
            table = load_scores(path)
            tables.append((path, table))
            found += _from_scores(table, str(given))
        elif path.is_file() and path.suffix.lower() == ".parquet":
            raw = pd.read_parquet(path)
            if _is_fix_log(raw):
                folder = Path(os.path.abspath(path.parent))
                found += _from_fix_log(raw, folder, str(given))
            else:
                table = load_scores(path)
                tables.append((path, table))
                found += _from_scores(table, str(given))
        else:
            found += [ListedClip(ref, None, str(given)) for ref in discover([path])]
    unique: dict[tuple[str, str], ListedClip] = {}
    for clip in found:
        unique.setdefault((clip.ref.root, clip.ref.path), clip)
    return ClipList(list(unique.values()), tables)


__all__ = ["ClipList", "ListedClip", "resolve"]
