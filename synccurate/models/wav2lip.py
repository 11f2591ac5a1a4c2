"""Wav2Lip's lip-sync expert (Rudrabha/Wav2Lip `SyncNet_color`): network and input windows.

Layer order and key names follow SYNCNET-FAMILY.md §B so that the public
`lipsync_expert.pth` loads strictly. The mel is `synccurate.io.audio.log_mel`, which is
upstream's recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synccurate.io import audio
from synccurate.io.audio import (
    MEL_SILENCE,
    N_MELS,
    VIDEO_FPS,
    WINDOW_FRAMES,
    WINDOW_MELS,
    mel_index,
)
from synccurate.models import provenance
from synccurate.models.base import InputRecipe, NetworkModel
from synccurate.models.sync import clip_metrics

FACE_SIZE = 96  # pixels; every frame is resized to 96² before the lower half is kept
MOUTH_ROWS = FACE_SIZE // 2  # 48: only rows 48…95 (the lower half of the face) are seen
FACE_CHANNELS = 3 * WINDOW_FRAMES  # 15: five BGR frames concatenated on channels
EMBED_DIM = 512

PREPROCESSING = {
    "video": f"{VIDEO_FPS} fps face crop resized to {FACE_SIZE}x{FACE_SIZE}, lower half, BGR, /255",
    "window_frames": WINDOW_FRAMES,
    "audio": "log-mel, synccurate.io.audio.log_mel (Wav2Lip's recipe, [-4, 4])",
    "audio_window": [N_MELS, WINDOW_MELS],
    "similarity": "cosine of unit embeddings (higher = in sync)",
}

# (c_in, c_out, kernel, stride, padding, residual) per block, in registration order.
FACE_BLOCKS = [
    (FACE_CHANNELS, 32, 7, 1, 3, False),
    (32, 64, 5, (1, 2), 1, False),
    (64, 64, 3, 1, 1, True),
    (64, 64, 3, 1, 1, True),
    (64, 128, 3, 2, 1, False),
    (128, 128, 3, 1, 1, True),
    (128, 128, 3, 1, 1, True),
    (128, 128, 3, 1, 1, True),
    (128, 256, 3, 2, 1, False),
    (256, 256, 3, 1, 1, True),
    (256, 256, 3, 1, 1, True),
    (256, 512, 3, 2, 1, False),
    (512, 512, 3, 1, 1, True),
    (512, 512, 3, 1, 1, True),
    (512, 512, 3, 2, 1, False),
    (512, 512, 3, 1, 0, False),
    (512, EMBED_DIM, 1, 1, 0, False),
]
AUDIO_BLOCKS = [
    (1, 32, 3, 1, 1, False),
    (32, 32, 3, 1, 1, True),
    (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False),
    (64, 64, 3, 1, 1, True),
    (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False),
    (128, 128, 3, 1, 1, True),
    (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False),
    (256, 256, 3, 1, 1, True),
    (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False),
    (512, EMBED_DIM, 1, 1, 0, False),
]


class Conv2dBlock(nn.Module):
    """Wav2Lip's `Conv2d`: conv → BatchNorm (+ input when residual) → ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride, padding: int, residual: bool):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(c_in, c_out, kernel, stride, padding), nn.BatchNorm2d(c_out)
        )
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        return F.relu(out + x if self.residual else out)


class Wav2LipExpertNet(nn.Module):
    """Face and audio encoders whose unit embeddings' cosine is read as P(in sync)."""

    def __init__(self):
        super().__init__()
        self.face_encoder = nn.Sequential(*(Conv2dBlock(*block) for block in FACE_BLOCKS))
        self.audio_encoder = nn.Sequential(*(Conv2dBlock(*block) for block in AUDIO_BLOCKS))

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> Wav2LipExpertNet:
        """Load strictly (all 217 keys), in eval mode, as Wav2Lip's own loader does."""
        net = cls()
        net.load_state_dict(state)
        return net.eval()

    def embed_face(self, x: torch.Tensor) -> torch.Tensor:
        """Face windows [N, 15, 48, 96] (BGR / 255) → unit embeddings [N, 512]."""
        _check_shape(x, (FACE_CHANNELS, MOUTH_ROWS, FACE_SIZE), "face")
        return F.normalize(self.face_encoder(x).flatten(1), p=2, dim=1)

    def embed_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """Mel windows [N, 1, 80, 16] → unit embeddings [N, 512]."""
        _check_shape(mel, (1, N_MELS, WINDOW_MELS), "audio")
        return F.normalize(self.audio_encoder(mel).flatten(1), p=2, dim=1)

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Upstream's call order: audio first, and (audio_emb, face_emb) back."""
        return self.embed_audio(audio), self.embed_face(face)


def _check_shape(x: torch.Tensor, per_item: tuple[int, ...], what: str) -> None:
    if x.ndim != len(per_item) + 1 or tuple(x.shape[1:]) != per_item:
        expected = "N×" + "×".join(map(str, per_item))
        raise ValueError(f"Wav2Lip expert {what} input must be {expected}, got {tuple(x.shape)}")


def face_windows(frames_bgr_96: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Face windows [stop−start, 15, 48, 96] float32 from BGR uint8 frames [F, 96, 96, 3].

    Window i concatenates frames i … i+4 on channels ([f0.B, f0.G, f0.R, f1.B, …]), ÷255,
    and keeps rows 48…95: the expert only ever sees the lower half of the face.
    """
    frames = np.asarray(frames_bgr_96)
    if frames.ndim != 4 or frames.shape[1:] != (FACE_SIZE, FACE_SIZE, 3):
        raise ValueError(f"expected frames [F, {FACE_SIZE}, {FACE_SIZE}, 3], got {frames.shape}")
    if not 0 <= start <= stop or stop + WINDOW_FRAMES - 1 > len(frames):
        raise ValueError(f"windows {start}…{stop - 1} need frames beyond the {len(frames)} given")
    index = np.arange(start, stop)[:, None] + np.arange(WINDOW_FRAMES)  # [n, 5] frame numbers
    lower = frames[index][:, :, MOUTH_ROWS:]  # [n, 5, 48, 96, 3]
    stacked = lower.transpose(0, 1, 4, 2, 3).reshape(-1, FACE_CHANNELS, MOUTH_ROWS, FACE_SIZE)
    return (stacked / 255.0).astype(np.float32)


def mel_windows(mel: np.ndarray, first: int, n: int) -> np.ndarray:
    """Mel windows [n, 1, 80, 16] for the face windows starting at frames first … first+n−1.

    Window f starts at mel column floor(16f/5) (int(80·f/25) upstream) and spans 0.2 s;
    columns outside the mel are silence (−4).
    """
    starts = mel_index(np.arange(first, first + n))
    pad_left = max(0, -int(starts.min())) if n else 0
    pad_right = max(0, int(starts.max()) + WINDOW_MELS - mel.shape[1]) if n else 0
    padded = np.pad(mel, ((0, 0), (pad_left, pad_right)), constant_values=MEL_SILENCE)
    index = starts[:, None] + pad_left + np.arange(WINDOW_MELS)  # [n, 16] mel columns
    return np.ascontiguousarray(padded[:, index].transpose(1, 0, 2)[:, None], dtype=np.float32)


# --- the two halves of the model interface (models.base) ----------------------------


@dataclass(frozen=True)
class FaceBoxRecipe(InputRecipe):
    """The detector's face box, clipped to the frame, no margin, resized to 96² (bilinear)."""

    kind: ClassVar[str] = "wav2lip-expert"
    crop_hw: tuple[int, int] = (FACE_SIZE, FACE_SIZE)

    def crop(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        import cv2  # lazily, as in models.base: cropping runs in the worker processes

        height, width = frame.shape[:2]
        x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
        x1, y1 = min(width, max(x0 + 1, int(box[2]))), min(height, max(y0 + 1, int(box[3])))
        return cv2.resize(frame[y0:y1, x0:x1], (FACE_SIZE, FACE_SIZE))

    def audio_features(self, samples: np.ndarray) -> np.ndarray:
        return audio.log_mel(samples)

    def visual_windows(self, crops: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return torch.from_numpy(face_windows(crops.numpy()[..., ::-1], start, stop))

    def audio_windows(self, features: np.ndarray, first: int, count: int) -> torch.Tensor:
        return torch.from_numpy(mel_windows(features, first, count))


def _cosine_is_probability(similarity: np.ndarray) -> np.ndarray:
    """The expert was trained with BCE on the cosine itself (post-ReLU: in [0, 1])."""
    return np.clip(similarity, 0.0, 1.0)


class Wav2LipExpertModel(NetworkModel):
    """Wav2Lip's expert: S = cosine, P(sync) = the cosine (its training target)."""

    kind = "wav2lip-expert"

    def __init__(self, network: Wav2LipExpertNet, model_id: str, trained_on: dict | None = None):
        trained_on = trained_on or dict(provenance.KNOWN_TRAINING[self.kind])
        super().__init__(network, model_id, FaceBoxRecipe(), trained_on)

    def embed_visual(self, windows: torch.Tensor) -> torch.Tensor:
        return self.network.embed_face(windows)

    def embed_audio(self, windows: torch.Tensor) -> torch.Tensor:
        return self.network.embed_audio(windows)

    def metrics(self, similarity: torch.Tensor, valid: np.ndarray, offset_method="mean") -> dict:
        from synccurate.models.icsyncnet import metrics_columns

        found = clip_metrics(
            similarity,
            1.0,
            valid=valid,
            probability=_cosine_is_probability,
            offset_method=offset_method,
        )
        return metrics_columns(found)
