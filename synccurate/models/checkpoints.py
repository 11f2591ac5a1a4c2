"""Loading checkpoints of every model kind without ever executing code from them.

Public checkpoints are pickles (`torch.save`). They are read only with PyTorch's
weights-only unpickler, which rebuilds tensors and plain containers and refuses anything
else before running it. `import_checkpoint` converts one once to safetensors plus a JSON
sidecar whose sha256 every later load checks, so routine loads never touch pickle.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from synccurate.io.files import default_file_mode
from synccurate.models import provenance, syncnet_v2, wav2lip
from synccurate.models.weights import WeightsError, count_parameters, sha256

SYNCNET_V2 = "syncnet-v2"
WAV2LIP_EXPERT = "wav2lip-expert"
ICSYNCNET = "icsyncnet"  # this project's own; its sidecars predate the "kind" field

# kind -> (a key only that layout has, the key counts its checkpoints may have; None = any)
LAYOUTS: dict[str, tuple[str, tuple[int, ...] | None]] = {
    SYNCNET_V2: ("netcnnaud.0.weight", (88, 102)),  # 102 with BatchNorm counters, 88 without
    WAV2LIP_EXPERT: ("face_encoder.0.conv_block.0.weight", (217,)),
    ICSYNCNET: ("log_tau", None),
}
NETWORKS: dict[str, tuple[Callable[[dict], nn.Module], dict]] = {
    SYNCNET_V2: (syncnet_v2.SyncNetV2Net.from_state_dict, syncnet_v2.PREPROCESSING),
    WAV2LIP_EXPERT: (wav2lip.Wav2LipExpertNet.from_state_dict, wav2lip.PREPROCESSING),
}
MODULE_PREFIX = "module."  # left by nn.DataParallel around a saved model


def _kind_of(path: Path, state: dict) -> str:
    for kind, (telltale, counts) in LAYOUTS.items():
        if telltale in state:
            if counts is not None and len(state) not in counts:
                raise WeightsError(
                    f"{path}: looks like {kind} but has {len(state)} weights, expected "
                    + " or ".join(map(str, counts))
                )
            return kind
    expected = ", ".join(f"{kind} (key {telltale!r})" for kind, (telltale, _) in LAYOUTS.items())
    raise WeightsError(f"{path}: unknown weights layout; expected one of {expected}")


def _refusal(path: Path, error: pickle.UnpicklingError) -> str:
    """One line: PyTorch's own message spans a paragraph and suggests weights_only=False."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    needs = f" (it calls {found.group(1)})" if found else ""
    return (
        f"{path}: refused: loading this checkpoint would execute code{needs}; nothing in it was run"
    )


def _read_pickle(path: Path) -> dict:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise WeightsError(_refusal(path, error)) from None
    except (RuntimeError, EOFError, KeyError, ValueError) as error:
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({error!r:.200})") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(torch.is_tensor(v) for v in loaded.values()):
        raise WeightsError(f"{path}: holds no state_dict (a mapping of names to tensors)")
    return {k.removeprefix(MODULE_PREFIX): v for k, v in loaded.items()}


def _read(path: str | Path) -> tuple[str, dict[str, torch.Tensor], str, dict]:
    """(kind, state_dict, sha256 of the file, sidecar or {} for a pickle)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    digest = sha256(path)
    if path.suffix != ".safetensors":
        state = _read_pickle(path)
        return _kind_of(path, state), state, digest, {}
    sidecar_path = path.with_suffix(".json")
    if not sidecar_path.is_file():
        raise WeightsError(f"{path}: missing its sidecar {sidecar_path.name}")
    sidecar = json.loads(sidecar_path.read_text())
    if digest != sidecar.get("sha256"):
        raise WeightsError(f"{path}: sha256 {digest[:12]} does not match {sidecar_path.name}")
    kind = sidecar.get("kind", ICSYNCNET)
    state = load_file(str(path))
    if _kind_of(path, state) != kind:
        raise WeightsError(f"{path}: weights are not the {kind} that {sidecar_path.name} says")
    return kind, state, digest, sidecar


def read_state_dict(path: str | Path) -> tuple[str, dict[str, torch.Tensor], str]:
    """(kind, state_dict, sha256 of the file) of a pickle checkpoint or a safetensors file.

    Pickles go through the weights-only unpickler only; a `{"state_dict": …}` wrapper and a
    `module.` prefix are removed. A .safetensors file needs its JSON sidecar, whose sha256
    must match and whose `kind` names the model (none = this project's IC-SyncNet).
    """
    kind, state, digest, _ = _read(path)
    return kind, state, digest


def _build(kind: str, state: dict, path: Path) -> nn.Module:
    if kind not in NETWORKS:
        raise WeightsError(f"{path}: {kind} weights; this loader builds {', '.join(NETWORKS)}")
    try:
        return NETWORKS[kind][0](state)
    except (RuntimeError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise WeightsError(f"{path}: does not fit the {kind} network: {first_line}") from None


def _trained_on(kind: str, sidecar: dict) -> dict:
    """The sidecar's `trained_on` when it has one, else what is known of the kind's release."""
    if "trained_on" in sidecar:
        return provenance.normalise(sidecar["trained_on"])
    return dict(provenance.KNOWN_TRAINING[kind])


def load_network(path: str | Path) -> tuple[str, nn.Module, dict]:
    """(kind, network in eval mode, info) from an original pickle or its imported safetensors.

    model_id is `<kind>@<first 8 hex of the original checkpoint's sha256>`, the same for a
    pickle and its import, since both hold the same weights.
    """
    path = Path(path)
    kind, state, digest, sidecar = _read(path)
    net = _build(kind, state, path)
    source_sha256 = sidecar.get("source_sha256", digest)
    info = {
        "kind": kind,
        "model_id": f"{kind}@{source_sha256[:8]}",
        "sha256": digest,
        "source_sha256": source_sha256,
        "parameters": count_parameters(net),
        "preprocessing": dict(NETWORKS[kind][1]),
        "path": str(path),
        "trained_on": _trained_on(kind, sidecar),
    }
    return kind, net, info


def import_checkpoint(src: str | Path, out_dir: str | Path) -> Path:
    """Convert a SyncNet v2 or Wav2Lip expert pickle to `<kind>-<sha8>.safetensors` + `.json`.

    The weights pass through the network first, so a file that would not load is not
    imported. Both files appear atomically (temp file, then os.replace).
    """
    src = Path(src)
    if src.suffix == ".safetensors":
        raise WeightsError(f"{src}: already safetensors; import converts pickle checkpoints")
    kind, state, digest, _ = _read(src)
    net = _build(kind, state, src)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{kind}-{digest[:8]}.safetensors"
    weights_tmp = path.with_name(path.name + ".tmp")
    sidecar_tmp = path.with_suffix(".json.tmp")
    try:
        tensors = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
        save_file(tensors, str(weights_tmp), metadata={"format": "pt", "kind": kind})
        sidecar = {
            "kind": kind,
            "sha256": sha256(weights_tmp),
            "source_sha256": digest,
            "source": src.name,
            "parameters": count_parameters(net),
            "preprocessing": NETWORKS[kind][1],
            "trained_on": provenance.KNOWN_TRAINING[kind],
        }
        sidecar_tmp.write_text(json.dumps(sidecar, indent=2) + "\n")
        for written in (weights_tmp, sidecar_tmp):
            os.chmod(written, default_file_mode())
        os.replace(weights_tmp, path)
        os.replace(sidecar_tmp, path.with_suffix(".json"))
    finally:
        weights_tmp.unlink(missing_ok=True)
        sidecar_tmp.unlink(missing_ok=True)
    return path
