"""Where clips come from: video files found under folders, and stable shards of them.

The reader stage of `score` (a manifest, `synccurate.store.manifest`, is the other one).
Every name found is kept, even one that cannot be opened, so that it gets a status row.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# what `discover` picks up in a folder
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".mpg", ".mpeg", ".m4v", ".flv", ".ts")


@dataclass(frozen=True)
class ClipRef:
    """A clip as found: the root it was found under and its path relative to that root."""

    root: str
    path: str

    @property
    def file(self) -> Path:
        return Path(self.root) / self.path


def discover(paths: Iterable[str | Path]) -> list[ClipRef]:
    """Video files under the given folders (recursively) plus files named directly.

    Every name found is returned, also a dangling symlink or an unreadable file, so that
    each gets a row saying why it was not scored (`unreadable`); a sub-folder that cannot
    be listed is returned itself for the same reason.
    """
    refs: list[ClipRef] = []
    for given in paths:
        path = Path(given).resolve()
        if path.is_dir():
            refs += [ClipRef(str(path), relative) for relative in _video_files(path)]
        elif path.exists():
            refs.append(ClipRef(str(path.parent), path.name))
        elif Path(given).is_symlink():
            link = Path(os.path.abspath(given))
            refs.append(ClipRef(str(link.parent), link.name))
        else:
            raise FileNotFoundError(f"{given}: no such file or folder")
    return list(dict.fromkeys(refs))


def _video_files(folder: Path) -> list[str]:
    """Paths relative to `folder` of its video files, sorted like Path objects."""
    found: list[str] = []

    def unlisted(error: OSError) -> None:
        if error.filename and Path(error.filename) != folder:
            found.append(Path(error.filename).relative_to(folder).as_posix())
        elif error.filename:
            raise error

    for directory, _, names in os.walk(folder, onerror=unlisted):
        for name in names:  # also symlinks whose target is missing
            if Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                found.append((Path(directory) / name).relative_to(folder).as_posix())
    return sorted(found, key=lambda relative: relative.split("/"))


def unreadable(file: Path) -> str | None:
    """Why `file` cannot be opened ('dangling symlink to …', 'permission denied'), or None."""
    if file.is_symlink() and not file.exists():
        return f"dangling symlink to {os.readlink(file)}"
    if file.exists() and not os.access(file, os.R_OK):
        return "permission denied"
    if file.is_dir():
        return "a folder that could not be listed"
    return None


def shard_of(path: str, count: int) -> int:
    """The shard (0 … count-1) of a clip: a stable hash of its path relative to its root."""
    return zlib.crc32(path.encode()) % count


def shard(refs: list[ClipRef], index: int, count: int) -> list[ClipRef]:
    """The clips of shard `index` of `count`, by a stable hash of the relative path.

    Independent jobs (a Slurm array, several machines) each take one shard and write
    into the same output folder; the same clip always lands in the same shard.
    """
    if not 0 <= index < count:
        raise ValueError(f"--shard {index}/{count}: the index must be in 0 … {count - 1}")
    return [ref for ref in refs if shard_of(ref.path, count) == index]
