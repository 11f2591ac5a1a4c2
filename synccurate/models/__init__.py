"""Sync model kinds behind one interface (models.base): `load_model` picks and loads one.

| kind | module | what it scores |
|---|---|---|
| icsyncnet | models.icsyncnet | mouth crops, P(sync) = sigmoid(cos / τ) |
| syncnet-v2 | models.syncnet_v2 | 224² face crops, L2 distance (LSE-D / LSE-C) |
| wav2lip-expert | models.wav2lip | 96² face, lower half, P(sync) = cos |
"""

from __future__ import annotations

import json
from pathlib import Path

from synccurate.models.base import InputRecipe, SyncModel
from synccurate.models.weights import WeightsError, find_weights

MODEL_KINDS = ("icsyncnet", "syncnet-v2", "wav2lip-expert")

__all__ = ["MODEL_KINDS", "InputRecipe", "SyncModel", "WeightsError", "load_model"]


def load_model(kind: str | None = None, weights: str | Path | None = None) -> SyncModel:
    """A model of `kind` from `weights`; with no kind, the kind is read off the file.

    IC-SyncNet falls back to $SYNCCURATE_WEIGHTS and the bundled weights; the other
    kinds need their file: synccurate never downloads weights (docs/models.md says where
    people get them). Pickles are read with the weights-only unpickler only.
    """
    if kind is not None and kind not in MODEL_KINDS:
        raise WeightsError(f"unknown model {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    if weights is None and kind not in (None, "icsyncnet"):
        raise WeightsError(
            f"--model {kind} needs --weights FILE: synccurate never downloads weights "
            "(docs/models.md says where to get them)"
        )
    if weights is None or _is_icsyncnet(Path(weights)):
        from synccurate.models.icsyncnet import ICSyncNetModel

        model = ICSyncNetModel.load(find_weights(weights))
    else:
        from synccurate.models.checkpoints import load_network
        from synccurate.models.syncnet_v2 import SyncNetV2Model
        from synccurate.models.wav2lip import Wav2LipExpertModel

        found, network, info = load_network(weights)
        wrapper = {"syncnet-v2": SyncNetV2Model, "wav2lip-expert": Wav2LipExpertModel}[found]
        model = wrapper(network, info["model_id"], info["trained_on"])
    if kind is not None and model.kind != kind:
        raise WeightsError(f"{weights}: holds {model.kind} weights, not --model {kind}")
    return model


def _is_icsyncnet(path: Path) -> bool:
    """A folder of checkpoints, or a .safetensors whose sidecar names no other kind."""
    if path.is_dir():
        return True
    sidecar = path.with_suffix(".json")
    if path.suffix != ".safetensors":
        return False
    if not sidecar.is_file():
        return True  # load_checkpoint then names the missing file
    return json.loads(sidecar.read_text()).get("kind", "icsyncnet") == "icsyncnet"
