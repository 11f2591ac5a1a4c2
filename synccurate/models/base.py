"""The interface every sync model kind implements, in two halves.

- `InputRecipe`: light, picklable, weight-free. Worker processes run it to turn a
  decoded clip into what the model reads: per-frame crops (region, size), audio
  features, and the windows cut from both. Nothing here touches weights.
- `SyncModel`: the network half, in the model process: two encoders, the
  similarity S[t, k] (always "higher = more in sync", column i = offset i - K) and
  the metrics read off S.

Decode, faces, batching across clips, the table and SPEC §7 stay shared: a new
kind is one module in this package, not a branch in the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import torch

from synccurate.io.audio import SAMPLES_PER_FRAME, WINDOW_FRAMES


@dataclass(frozen=True)
class InputRecipe:
    """What a model reads, as data. Subclasses override the methods that differ."""

    kind: ClassVar[str] = ""
    crop_hw: tuple[int, int] = (32, 64)  # stored per-frame crop, height × width (RGB uint8)

    @property
    def crop_width_per_face(self) -> float:
        """Crop width / face-box side: how much detail the crop pass must decode."""
        return 1.0

    def crop(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The model's region of one RGB frame, given the (smoothed) face box."""
        raise NotImplementedError

    def whole_frame(self, frame: np.ndarray) -> np.ndarray:
        """The crop when the whole frame is the face (`--face-detector none`)."""
        import cv2  # lazily: crops are cut in the worker processes, the model process needs no cv2

        return cv2.resize(frame, (self.crop_hw[1], self.crop_hw[0]), interpolation=cv2.INTER_LINEAR)

    def smooth_track(self, boxes: np.ndarray, has_face: np.ndarray) -> np.ndarray:
        """Extra smoothing of a face track's boxes [n, 4] that this model was trained with."""
        return boxes

    def audio_features(self, samples: np.ndarray) -> np.ndarray:
        """Features of 16 kHz mono float samples in [-1, 1] (the whole clip)."""
        raise NotImplementedError

    def n_windows(self, n_frames: int, n_samples: int) -> int:
        """Visual windows of a clip: one per start frame whose five frames exist."""
        return max(0, n_frames - WINDOW_FRAMES + 1)

    def visual_windows(self, crops: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Model input for visual windows start … stop-1 from uint8 crops [n, H, W, 3]."""
        raise NotImplementedError

    def audio_windows(self, features: np.ndarray, first: int, count: int) -> torch.Tensor:
        """Model input for the audio windows paired with visual windows first … first+count-1.

        `first` may be negative and the last windows may lie past the clip: every
        visual window has an audio window at every searched offset.
        """
        raise NotImplementedError


def samples_to_windows(n_samples: int) -> int:
    """Whole video frames of audio in n_samples (640 samples per frame at 16 kHz)."""
    return n_samples // SAMPLES_PER_FRAME


class SyncModel(Protocol):
    """The network half. `model_id` (kind@sha256-prefix) goes into every row."""

    kind: str
    model_id: str
    recipe: InputRecipe
    #: "probability" models give prob_at_offset / offscreen_ratio; "distance" models
    #: (SyncNet v2) give lse_d / lse_c instead (docs/models.md says why).
    score_kind: str
    batch_size: int  # default windows per model batch on a GPU
    cpu_batch_size: int  # … and on CPU, where larger batches only cost memory
    #: what the weights saw in training: {"data": "synthetic" | "real" | "unknown",
    #: "description": …} (synccurate.models.provenance); read with provenance.of_model
    trained_on: dict
    # Optional: `audio_batch_size`, a larger batch for audio windows when they are much
    # smaller than the visual ones (batching.similarity_matrices uses the larger of the two);
    # `zero_audio_outside_clip`, True when S compares with zero vectors, not with silence,
    # where the clip's audio windows end (SyncNet v2, as upstream pads); `window_reach`,
    # how many windows on each side a window's per-window numbers read (default
    # `models.sync.SMOOTH_RADIUS`): S rows farther than that from every face window are
    # not computed.

    def to(self, device: torch.device) -> SyncModel: ...

    def embed_visual(self, windows: torch.Tensor) -> torch.Tensor: ...

    def embed_audio(self, windows: torch.Tensor) -> torch.Tensor: ...

    def similarity(
        self, visual: torch.Tensor, audio: torch.Tensor, max_offset: int
    ) -> torch.Tensor:
        """S [T, 2K+1] from visual embeddings [T, D] and audio embeddings [T+2K, D]."""
        ...

    def metrics(
        self, similarity: torch.Tensor, valid: np.ndarray, offset_method: str = "mean"
    ) -> dict:
        """The table's metric columns for one clip (names as in store.COLUMNS).

        offset_method: "mean" (SPEC §6 profile argmax) or "vote" (sync.vote_offset).
        """
        ...


class NetworkModel:
    """The plumbing every network half shares: its torch module, its id, device moves, and
    S as the cosine of unit embeddings (a distance model overrides `similarity`)."""

    kind: ClassVar[str] = ""
    score_kind: ClassVar[str] = "probability"
    batch_size: ClassVar[int] = 64  # windows per model batch by default on a GPU
    cpu_batch_size: ClassVar[int] = 64  # … on CPU (memory-bound there)

    def __init__(
        self, network: torch.nn.Module, model_id: str, recipe: InputRecipe, trained_on: dict
    ):
        self.network = network
        self.model_id = model_id
        self.recipe = recipe
        #: what the weights saw in training ({"data": synthetic | real | unknown, …})
        self.trained_on = trained_on

    def to(self, device: torch.device) -> NetworkModel:
        self.network.to(device).eval()
        return self

    def similarity(
        self, visual: torch.Tensor, audio: torch.Tensor, max_offset: int
    ) -> torch.Tensor:
        from synccurate.models.sync import similarity_matrix

        return similarity_matrix(visual, audio, max_offset)
