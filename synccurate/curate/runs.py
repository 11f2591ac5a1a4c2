"""`filter`, `fix` and `cut` runs as the commands ask for them: read and check the table,
choose the offset taken as in sync, then filter or fix.

Everything that can refuse a run (an output inside the scores folder, meaningless scores,
no offset to take as in sync) happens before a file is written, so the caller can report
it as one error line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from synccurate.curate import cut, filtering, fix
from synccurate.curate.synthetic_scores import refuse_synthetic_scores
from synccurate.io.files import write_table

# Row statuses that need no word while fixing: done, or left out on purpose.
QUIET_STATUSES = (*fix.DONE_STATUSES, "skipped_not_ok", "skipped_not_kept")


@dataclass
class TableFix:
    """A scores table ready to be fixed, with the offset taken as in sync."""

    scores: pd.DataFrame
    out_dir: Path
    kept: pd.DataFrame | None  # fix only these clips (a `filter` output)
    reference: int  # the offset taken as in sync: a clip is shifted by offset − reference
    how: str  # how the reference was chosen

    def other_references(self) -> list[int]:
        """The offsets `kept` was filtered relative to, when any differs from `reference`."""
        if self.kept is None or filtering.REFERENCE_COLUMN not in self.kept.columns:
            return []
        used = set(self.kept[filtering.REFERENCE_COLUMN].dropna().astype(int))
        return sorted(used) if used - {self.reference} else []

    def run(
        self,
        *,
        min_abs_offset: int = fix.MIN_ABS_OFFSET,
        link_unshifted: bool = False,
        jobs: int = fix.JOBS,
        progress: Callable[[int, int, dict], None] | None = None,
    ) -> pd.DataFrame:
        """Fix the clips into `out_dir` (`fix.fix_table`); the log, one row per clip."""
        return fix.fix_table(
            self.scores,
            self.out_dir,
            min_abs_offset=min_abs_offset,
            reference_offset=self.reference,
            only_kept=self.kept,
            link_unshifted=link_unshifted,
            jobs=jobs,
            progress=progress,
        )


def open_fix(
    source: Path,
    out_dir: Path,
    *,
    only_kept: Path | None = None,
    relative_to: str = "zero",
    reference_offset: int | None = None,
    allow_synthetic_weights: bool = False,
    warn: Callable[[str], None] = print,
) -> TableFix:
    """Read the scores (and the kept table) and choose the reference; nothing is written.

    Raises ValueError or OSError for a table that cannot be fixed.
    """
    if source.is_dir() and out_dir.resolve().is_relative_to(source.resolve()):
        raise ValueError(f"{out_dir}: inside the scores folder {source}; write elsewhere")
    scores = filtering.load_scores(source)
    refuse_synthetic_scores(scores, source, allow_synthetic_weights, warn)
    kept = filtering.load_scores(only_kept) if only_kept else None
    reference, how = filtering.resolve_reference(scores, relative_to, reference_offset)
    return TableFix(scores, out_dir, kept, reference, how)


@dataclass
class FilterResult:
    """What `filter_scores` kept and rejected, and the rules it applied."""

    table: pd.DataFrame
    kept: pd.DataFrame
    rejected: pd.DataFrame
    rules: filtering.FilterRules
    how: str  # how the offset taken as in sync (rules.reference_offset) was chosen


def filter_scores(
    source: Path,
    output: Path,
    rules: filtering.FilterRules,
    *,
    rejected: Path | None = None,
    relative_to: str = "zero",
    reference_offset: int | None = None,
    allow_synthetic_weights: bool = False,
    warn: Callable[[str], None] = print,
) -> FilterResult:
    """Filter the scores at `source` by `rules` (their reference offset chosen here) and
    write the kept rows to `output` (and the rejected ones, with reasons, to `rejected`).

    Raises ValueError or OSError for a table that cannot be filtered; nothing is written then.
    """
    table = filtering.load_scores(source)
    refuse_synthetic_scores(table, source, allow_synthetic_weights, warn)
    reference, how = filtering.resolve_reference(table, relative_to, reference_offset)
    rules = replace(rules, reference_offset=reference)
    for written in (output, rejected):
        if written and source.is_dir() and written.resolve().is_relative_to(source.resolve()):
            raise ValueError(f"{written}: inside the scores folder {source}; write elsewhere")
    kept, dropped = filtering.apply_filter(table, rules)
    write_table(kept, output, protect=[source])
    if rejected:
        write_table(dropped, rejected, protect=[source, output])
    return FilterResult(table, kept, dropped, rules, how)


def cut_segments(
    source: Path,
    out_dir: Path,
    *,
    only_kept: Path | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
) -> pd.DataFrame:
    """Cut each speaker segment of the segments table at `source` into `out_dir`
    (`cut.cut_table`), only those of `only_kept` (a `filter` output of it) when given; the log.

    Raises ValueError or OSError for a table that cannot be cut; nothing is written then.
    """
    if source.is_dir() and out_dir.resolve().is_relative_to(source.resolve()):
        raise ValueError(f"{out_dir}: inside the segments folder {source}; write elsewhere")
    segments = filtering.load_scores(source)
    if "segment" not in segments.columns:
        raise ValueError(f"{source}: not a segments table (no segment column)")
    kept = filtering.load_scores(only_kept) if only_kept else None
    if kept is not None and "segment" not in kept.columns:
        raise ValueError(f"{only_kept}: not a filter output of a segments table")
    return cut.cut_table(segments, out_dir, only_kept=kept, progress=progress)
