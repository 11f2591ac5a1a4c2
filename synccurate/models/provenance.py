"""What weights were trained on, and whether their numbers mean anything on a given clip.

Every checkpoint's JSON sidecar may say what its weights saw in training:

    "trained_on": {"data": "synthetic" | "real" | "unknown", "description": "…", …}

- IC-SyncNet checkpoints written by `synccurate train` get it from the clips in the cache:
  `synthetic` when every training clip is a `synccurate synth` clip (and the --init weights,
  if any, were synthetic too), else `real`, with clip counts; the bundled
  `weights/icsyncnet-small.json` says `synthetic`.
- SyncNet v2 / Wav2Lip expert files are taken to be the public releases of their authors
  (real footage; `KNOWN_TRAINING`), judged by their layout alone.
- A sidecar without the field (or a legacy string) is `unknown`.

A clip is synthetic when its container carries `media.SYNTH_TAG` (written by `synth`).
Synthetic-only weights on any other clip give numbers that mean nothing: `score`, `plot` and
`eval` say so in one warning line (and the scores table in the columns `weights_trained_on` and
`synthetic_weights_on_real`); `filter`, `fix` and `train` refuse such a table unless told
`--allow-synthetic-weights`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

SYNTHETIC = "synthetic"
REAL = "real"
UNKNOWN = "unknown"
DATA_VALUES = (SYNTHETIC, REAL, UNKNOWN)

TRAINED_ON_COLUMN = "weights_trained_on"
SYNTHETIC_ON_REAL_COLUMN = "synthetic_weights_on_real"
ALLOW_FLAG = "--allow-synthetic-weights"

# What is known of the public checkpoints, by kind. Any file of that layout is assumed to be
# the public release: a file with other weights in the same layout is not detected.
KNOWN_TRAINING = {
    "syncnet-v2": {
        "data": REAL,
        "description": "syncnet_python's public syncnet_v2.model (VGG, Chung & Zisserman): "
        "real talking-face video (the SyncNet paper trained on BBC television; the v2 "
        "release does not name its training set)",
        "basis": "assumed from the file's layout (syncnet-v2); not checked against a checksum",
    },
    "wav2lip-expert": {
        "data": REAL,
        "description": "Wav2Lip's lip-sync expert (lipsync_expert.pth): trained on LRS2 "
        "(BBC television) per the Wav2Lip paper",
        "basis": "assumed from the file's layout (wav2lip-expert); not checked against a checksum",
    },
}


def normalise(value) -> dict:
    """A sidecar's `trained_on` as a dict with a valid `data`; missing or legacy → unknown."""
    if isinstance(value, dict) and value.get("data") in DATA_VALUES:
        return dict(value)
    description = value if isinstance(value, str) else "the weights' file does not say"
    return {"data": UNKNOWN, "description": description}


def of_model(model) -> dict:
    """`model.trained_on` (normalised); a model object without it is unknown."""
    return normalise(getattr(model, "trained_on", None))


def synthetic_only(model) -> bool:
    return of_model(model)["data"] == SYNTHETIC


def mismatch(trained_on: str | None, clip_is_synth: bool | None) -> bool | None:
    """True when synthetic-only weights meet a clip that is not a synth clip; None when the
    clip could not be opened (its origin is unknown)."""
    if clip_is_synth is None:
        return None
    return trained_on == SYNTHETIC and not clip_is_synth


def warning_line(model_id: str, n_real: int, n_checked: int, what: str = "clips") -> str:
    """The one warning line of score / plot / eval."""
    return (
        f"WARNING: {model_id} was trained on synthetic clips only; {n_real} of {n_checked} "
        f"{what} are not `synccurate synth` clips and their numbers mean nothing. Score real "
        "footage with real weights (--model syncnet-v2, or IC-SyncNet trained as in "
        "docs/train-real.md)."
    )


def synthetic_on_real_rows(table: pd.DataFrame) -> np.ndarray:
    """Rows a scores table marks as scored by synthetic-only weights on a non-synth clip."""
    if SYNTHETIC_ON_REAL_COLUMN not in table.columns:
        return np.zeros(len(table), dtype=bool)
    flags = table[SYNTHETIC_ON_REAL_COLUMN].astype("boolean").fillna(False)
    return flags.to_numpy(dtype=bool)


def refusal(table: pd.DataFrame, name: str) -> str | None:
    """The one-line refusal of filter / fix / train for such a table, or None when it is fine."""
    flagged = synthetic_on_real_rows(table)
    if not flagged.any():
        return None
    models = sorted(set(table.loc[flagged, "model"].dropna().astype(str)))
    return (
        f"{name}: {int(flagged.sum())} of {len(table)} clips were scored with weights trained "
        f"on synthetic clips only ({', '.join(models) or 'unknown model'}) and are not synth "
        f"clips, so their offsets and probabilities mean nothing; score them with real weights "
        f"(e.g. --model syncnet-v2), or pass {ALLOW_FLAG} to go on anyway"
    )


def training_record(
    clip_flags: list[bool | None], init: dict | None = None, n_held_out: int = 0
) -> dict:
    """The `trained_on` of weights trained on clips with these synth flags (None = unknown,
    e.g. a cache written before the flag existed), optionally from --init weights."""
    n = len(clip_flags)
    n_synth = sum(flag is True for flag in clip_flags)
    n_real = sum(flag is False for flag in clip_flags)
    n_unknown = n - n_synth - n_real
    init_data = normalise(init.get("trained_on")).get("data") if init else None
    if n_real or init_data == REAL:
        data = REAL
    elif n_unknown or init_data == UNKNOWN:
        data = UNKNOWN
    else:
        data = SYNTHETIC
    parts = [f"{n_real} real"] + [f"{n_synth} synthetic (synccurate synth)"] * bool(n_synth)
    if n_unknown:
        parts.append(f"{n_unknown} of unknown origin (cache written before synth tags)")
    description = f"{n} training clips: {', '.join(parts)}"
    if n_held_out:
        description += f"; {n_held_out} more held out"
    if init:
        description += f"; started from {init.get('model_id', 'unknown weights')} ({init_data})"
    record = {
        "data": data,
        "description": description,
        "clips": n,
        "real_clips": n_real,
        "synthetic_clips": n_synth,
    }
    if n_unknown:
        record["unknown_clips"] = n_unknown
    if init:
        record["init"] = {"model_id": init.get("model_id"), "data": init_data}
    return record


__all__ = [
    "ALLOW_FLAG",
    "KNOWN_TRAINING",
    "REAL",
    "SYNTHETIC",
    "SYNTHETIC_ON_REAL_COLUMN",
    "TRAINED_ON_COLUMN",
    "UNKNOWN",
    "mismatch",
    "normalise",
    "of_model",
    "refusal",
    "synthetic_on_real_rows",
    "synthetic_only",
    "training_record",
    "warning_line",
]
