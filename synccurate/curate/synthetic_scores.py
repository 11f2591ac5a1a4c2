"""Scores that mean nothing are refused before `filter`, `fix` or `train` use them.

Weights trained on synthetic clips only give meaningless offsets and probabilities on real
clips; the rows of such a table say so (`provenance.synthetic_on_real_rows`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from synccurate.models import provenance


def refuse_synthetic_scores(
    table: pd.DataFrame, name: str | Path, allow: bool, warn: Callable[[str], None]
) -> None:
    """Raise ValueError (one line) for a table of meaningless scores; with `allow`, warn."""
    refusal = provenance.refusal(table, str(name))
    if refusal and not allow:
        raise ValueError(refusal)
    if refusal:
        warn(f"WARNING ({provenance.ALLOW_FLAG}): {refusal.split(', so ')[0]}")
