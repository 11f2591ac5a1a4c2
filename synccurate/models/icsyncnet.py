"""IC-SyncNet (SPEC §3) behind the model interface: mouth crops, log-mel windows, cosine S."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from synccurate import audio, faces, provenance
from synccurate.model import ICSyncNet, load_checkpoint, stack_windows
from synccurate.models.base import InputRecipe, NetworkModel
from synccurate.sync import clip_metrics


@dataclass(frozen=True)
class MouthRecipe(InputRecipe):
    """Lower half of the widened face box, RGB; 5 frames stacked on channels; 0.4 s mels."""

    kind: ClassVar[str] = "icsyncnet"
    margin: float = faces.MOUTH_MARGIN

    @property
    def crop_width_per_face(self) -> float:  # type: ignore[override]
        return 1 + self.margin

    def crop(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        return faces.crop_mouth(frame, box, self.crop_hw, self.margin)

    def whole_frame_filter(self, width: int, height: int) -> str:
        """ffmpeg pads/crops the frame's lower half: far cheaper than numpy per frame."""
        return faces.lower_half_filter(width, height)

    def audio_features(self, samples: np.ndarray) -> np.ndarray:
        return audio.log_mel(samples)

    def visual_windows(self, crops: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return stack_windows(crops[start : stop + audio.WINDOW_FRAMES - 1])

    def audio_windows(self, features: np.ndarray, first: int, count: int) -> torch.Tensor:
        return torch.from_numpy(audio.audio_windows(features, first, count))


class ICSyncNetModel(NetworkModel):
    """A loaded IC-SyncNet checkpoint; S = cosine, P(sync) = sigmoid(S / τ)."""

    kind = "icsyncnet"
    batch_size = 256
    # On CPU 64 windows a batch are as fast as 256 (9 clips: model 1.4 s vs 1.6 s) and the
    # small config's `score` peaks at 444 MB instead of 703 (benchmarks/batch_memory.py).
    cpu_batch_size = 64

    def __init__(self, network: ICSyncNet, model_id: str, sidecar: dict | None = None):
        config = network.config
        self.sidecar = sidecar or {}
        recipe = MouthRecipe(crop_hw=(config.crop_height, config.crop_width))
        trained_on = provenance.normalise(self.sidecar.get("trained_on"))
        super().__init__(network, model_id, recipe, trained_on)

    @classmethod
    def load(cls, path: str | Path) -> ICSyncNetModel:
        network, sidecar = load_checkpoint(path)
        return cls(network, sidecar["model_id"], sidecar)

    def embed_visual(self, windows: torch.Tensor) -> torch.Tensor:
        return self.network.embed_visual(windows)

    def embed_audio(self, windows: torch.Tensor) -> torch.Tensor:
        return self.network.embed_audio(windows)

    def metrics(self, similarity: torch.Tensor, valid: np.ndarray, offset_method="mean") -> dict:
        found = clip_metrics(similarity, self.network.tau, valid=valid, offset_method=offset_method)
        return metrics_columns(found)


def metrics_columns(metrics) -> dict:
    """The table columns of a probability model's ClipMetrics."""
    return {
        "offset_frames": metrics.offset_frames,
        "offset_seconds": metrics.offset_seconds,
        "prob_at_offset": metrics.prob_at_offset,
        "offscreen_ratio": metrics.offscreen_ratio,
        "confidence": metrics.confidence,
        "at_search_edge": metrics.at_search_edge,
        "vote_offset": metrics.vote_offset,
        "vote_share": metrics.vote_share,
        "offset_method": metrics.offset_method,
        # NumPy arrays, not lists: the writer takes them at ~1 µs a row, lists at ~12.
        "p_t": metrics.p_t.round(4),
        "onscreen": np.asarray(metrics.onscreen, dtype=bool),
        "profile": metrics.profile.round(4),
    }
