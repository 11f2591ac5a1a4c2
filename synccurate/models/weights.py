"""Where weights files are found, and the checks every loader runs before trusting one.

Lookup order: --weights, then $SYNCCURATE_WEIGHTS, then the repository's weights/ folder.
A file is never downloaded; a checksum that does not match is refused.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from torch import nn

WEIGHTS_ENV = "SYNCCURATE_WEIGHTS"
DEFAULT_WEIGHTS_NAME = "icsyncnet-small"
REPO_WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"


class WeightsError(Exception):
    """Weights that cannot be found or do not match their checksum."""


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_weights(explicit: str | Path | None = None) -> Path:
    """--weights, then $SYNCCURATE_WEIGHTS, then the repository's weights/ folder."""
    candidates = [explicit, os.environ.get(WEIGHTS_ENV), REPO_WEIGHTS_DIR / DEFAULT_WEIGHTS_NAME]
    for candidate in candidates:
        if not candidate:
            continue
        path = Path(candidate)
        if path.is_dir():
            found = sorted(path.glob("*.safetensors"))
            if not found:
                raise WeightsError(f"{path}: no .safetensors weights in this folder")
            path = found[0]
        path = path.with_suffix(".safetensors")
        if path.is_file():
            return path
        if candidate is not candidates[-1]:
            raise WeightsError(f"{path}: weights file not found")
    raise WeightsError(
        "no IC-SyncNet weights found: pass --weights FILE.safetensors, set "
        f"{WEIGHTS_ENV}, or train some with `synccurate train` (see docs/weights.md)"
    )
