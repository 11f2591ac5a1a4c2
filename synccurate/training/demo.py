"""The bundled example: synthetic clips with known shifts, scored, shown beside the truth."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from synccurate.io import media
from synccurate.training import synth

# (file name, true offset in frames, off-screen fraction); SPEC §6 sign: + = audio leads
EXAMPLE_CLIPS = (
    ("delayed_10.mp4", -10, 0.0),
    ("delayed_4.mp4", -4, 0.0),
    ("in_sync.mp4", 0, 0.0),
    ("advanced_3.mp4", 3, 0.0),
    ("advanced_8.mp4", 8, 0.0),
    ("offscreen_40pct.mp4", 0, 0.4),
)
EXAMPLE_SECONDS = 6.0
EXAMPLE_SEED = 2024


def make_example_clips(folder: Path) -> pd.DataFrame:
    """Write the example clips (once) and return their ground truth."""
    clips = folder / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    truth = []
    for index, (name, offset, offscreen) in enumerate(EXAMPLE_CLIPS):
        target = clips / name
        if not target.exists() or media.is_synth_file(target) is not True:  # untagged: older
            synth.synth_clip(
                target,
                seconds=EXAMPLE_SECONDS,
                seed=EXAMPLE_SEED + index,
                offset_frames=offset,
                offscreen_fraction=offscreen,
            )
        truth.append({"path": name, "true_offset": offset, "true_offscreen": offscreen})
    return pd.DataFrame(truth)


def compare(scores: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """The scores next to the ground truth, one row per example clip."""
    merged = truth.merge(scores, on="path", how="left")
    columns = {
        "path": "clip",
        "true_offset": "true offset",
        "offset_frames": "found offset",
        "prob_at_offset": "prob at offset",
        "true_offscreen": "true off-screen",
        "offscreen_ratio": "off-screen ratio",
        "status": "status",
    }
    return merged[list(columns)].rename(columns=columns)
