"""Sync model kinds behind one interface (models.base): `load_model` picks and loads one.

| kind | module | what it scores |
|---|---|---|
| icsyncnet | models.icsyncnet | mouth crops, P(sync) = sigmoid(cos / τ) |
| syncnet-v2 | models.syncnet_v2 | 224² face crops, L2 distance (LSE-D / LSE-C) |
| wav2lip-expert | models.wav2lip | 96² face, lower half, P(sync) = cos |
"""

from __future__ import annotations

from pathlib import Path

from synccurate.model import WeightsError, find_weights
from synccurate.models.base import InputRecipe, SyncModel

MODEL_KINDS = ("icsyncnet", "syncnet-v2", "wav2lip-expert")

__all__ = ["MODEL_KINDS", "InputRecipe", "SyncModel", "WeightsError", "load_model"]


def load_model(kind: str | None = None, weights: str | Path | None = None) -> SyncModel:
    """A model of `kind` from `weights`; with no kind, the kind is read off the file.

    IC-SyncNet falls back to $SYNCCURATE_WEIGHTS and the bundled weights; the other
    kinds need their file: synccurate never downloads weights.
    """
    if kind is not None and kind not in MODEL_KINDS:
        raise WeightsError(f"unknown model {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    if kind in (None, "icsyncnet") and (weights is None or Path(weights).suffix != ".model"):
        from synccurate.models.icsyncnet import ICSyncNetModel

        return ICSyncNetModel.load(find_weights(weights))
    raise WeightsError(f"{weights}: model kind {kind} is not available in this build")
