"""SyncNet v2 (joonson/syncnet_python): network, MFCC features, windows and upstream scoring.

Layer indices, input conventions and the scoring quirks follow SYNCNET-FAMILY.md §A so that
the public `syncnet_v2.model` loads key for key and its offsets, minimum distances and
confidences (LSE-D / LSE-C) come out as upstream computes them.
"""

from __future__ import annotations

import numpy as np
import python_speech_features
import scipy.signal
import torch
from torch import nn

from synccurate.audio import SAMPLE_RATE, SAMPLES_PER_FRAME, VIDEO_FPS, WINDOW_FRAMES

FACE_SIZE = 224  # pixels; the first Linear only fits a 224² crop
N_MFCC = 13  # cepstral coefficients (python_speech_features' default numcep)
MFCC_HOP = 160  # samples = 10 ms, python_speech_features' default winstep
MFCC_FPS = SAMPLE_RATE // MFCC_HOP  # 100 MFCC columns per second
MFCC_PER_FRAME = MFCC_FPS // VIDEO_FPS  # 4 MFCC columns per 25 fps frame
MFCC_WINDOW = WINDOW_FRAMES * MFCC_PER_FRAME  # 20 columns = 0.2 s, one 5-frame window
EMBED_DIM = 1024  # width of the public checkpoint's embeddings
MAX_OFFSET = 15  # frames searched on each side (±0.6 s), upstream's vshift
PAIRWISE_EPS = 1e-6  # added to every difference, as torch's pairwise_distance does
FCONF_KERNEL = 9  # frames, upstream's median filter of the frame-wise confidence

PREPROCESSING = {
    "video": f"{VIDEO_FPS} fps full-face crop {FACE_SIZE}x{FACE_SIZE}, BGR, raw 0-255",
    "window_frames": WINDOW_FRAMES,
    "audio": f"python_speech_features MFCC of {SAMPLE_RATE} Hz int16-scale samples",
    "audio_window": [N_MFCC, MFCC_WINDOW],
    "similarity": "euclidean distance of raw embeddings (lower = in sync)",
}


def _audio_block(c_in: int, c_out: int, kernel=3, padding=1) -> list[nn.Module]:
    """Conv2d (stride 1) → BatchNorm → ReLU: three Sequential indices, as upstream."""
    return [nn.Conv2d(c_in, c_out, kernel, 1, padding), nn.BatchNorm2d(c_out), nn.ReLU(True)]


def _lip_block(c_in: int, c_out: int, kernel, stride=1, padding=(0, 1, 1)) -> list[nn.Module]:
    """Conv3d → BatchNorm → ReLU over (time, height, width)."""
    return [nn.Conv3d(c_in, c_out, kernel, stride, padding), nn.BatchNorm3d(c_out), nn.ReLU(True)]


class SyncNetV2Net(nn.Module):
    """syncnet_python's class `S`: an audio and a lip CNN, each with a two-layer head."""

    def __init__(self, embed_dim: int = EMBED_DIM):
        super().__init__()
        self.netcnnaud = nn.Sequential(  # [N, 1, 13, 20] → [N, 512, 1, 1]
            *_audio_block(1, 64),
            nn.MaxPool2d(1, 1),
            *_audio_block(64, 192),
            nn.MaxPool2d(3, (1, 2)),
            *_audio_block(192, 384),
            *_audio_block(384, 256),
            *_audio_block(256, 256),
            nn.MaxPool2d(3, 2),
            *_audio_block(256, 512, kernel=(5, 4), padding=0),
        )
        self.netfcaud = self._head(embed_dim)
        self.netfclip = self._head(embed_dim)
        self.netcnnlip = nn.Sequential(  # [N, 3, 5, 224, 224] → [N, 512, 1, 1, 1]
            *_lip_block(3, 96, (5, 7, 7), (1, 2, 2), 0),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_lip_block(96, 256, (1, 5, 5), (1, 2, 2)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            *_lip_block(256, 256, (1, 3, 3)),
            *_lip_block(256, 256, (1, 3, 3)),
            *_lip_block(256, 256, (1, 3, 3)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_lip_block(256, 512, (1, 6, 6), padding=0),
        )

    @staticmethod
    def _head(embed_dim: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Linear(512, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(inplace=True),
            nn.Linear(512, embed_dim),
        )

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> SyncNetV2Net:
        """Build at the checkpoint's embedding width and load it strictly, in eval mode.

        Files without the 14 `num_batches_tracked` counters (88 keys instead of 102) are
        accepted, as upstream's loader does; the counters play no part in eval mode.
        """
        net = cls(embed_dim=state["netfcaud.3.weight"].shape[0])
        counters = {k: v for k, v in net.state_dict().items() if k.endswith("num_batches_tracked")}
        net.load_state_dict({**counters, **state})
        return net.eval()

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        """MFCC windows [N, 1, 13, 20] → raw embeddings [N, D]."""
        _check_shape(x, (1, N_MFCC, MFCC_WINDOW), "audio")
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        """Lip windows [N, 3, 5, 224, 224] (BGR, 0–255) → raw embeddings [N, D]."""
        return self.netfclip(self.forward_lipfeat(x))

    def forward_lipfeat(self, x: torch.Tensor) -> torch.Tensor:
        """Lip windows → the 512-d lip CNN features before the head."""
        _check_shape(x, (3, WINDOW_FRAMES, FACE_SIZE, FACE_SIZE), "lip")
        return self.netcnnlip(x).flatten(1)


def _check_shape(x: torch.Tensor, per_item: tuple[int, ...], what: str) -> None:
    """Upstream fails deep inside a Linear on a wrong size; say what was expected instead."""
    if x.ndim != len(per_item) + 1 or tuple(x.shape[1:]) != per_item:
        expected = "N×" + "×".join(map(str, per_item))
        raise ValueError(f"SyncNet v2 {what} input must be {expected}, got {tuple(x.shape)}")


def mfcc(samples_int16_scale: np.ndarray) -> np.ndarray:
    """MFCC [13, M] float64 of 16 kHz mono audio, as upstream computes it.

    The samples must be on the int16 scale (±32768), as scipy's wavfile reader gives them
    upstream: coefficient 0 is the log frame energy and the spectra are floored at a fixed
    epsilon, so [-1, 1] floats shift c0 by 2·ln(32768) ≈ 20.8 and change the features the
    network was trained on.
    """
    return python_speech_features.mfcc(np.asarray(samples_int16_scale), SAMPLE_RATE).T


def n_windows(n_frames: int, n_samples: int) -> int:
    """Windows upstream scores: min(frames, whole 640-sample frames of audio) − 5, at least 0.

    One fewer than would fit; kept so that means and medians match upstream's.
    """
    return max(0, min(n_frames, n_samples // SAMPLES_PER_FRAME) - WINDOW_FRAMES)


def audio_windows(mfcc_columns: np.ndarray, first: int, n: int) -> np.ndarray:
    """MFCC windows [n, 1, 13, 20] float32 for windows first … first+n−1.

    Window i is columns [4i, 4i+20). Windows not wholly inside the MFCC are zeros: the
    scorer replaces their embeddings by zero vectors anyway (upstream's padding).
    """
    windows = np.zeros((n, 1, N_MFCC, MFCC_WINDOW), dtype=np.float32)
    for j, i in enumerate(range(first, first + n)):
        start = i * MFCC_PER_FRAME
        if i >= 0 and start + MFCC_WINDOW <= mfcc_columns.shape[1]:
            windows[j, 0] = mfcc_columns[:, start : start + MFCC_WINDOW]
    return windows


def lip_windows(frames_bgr_uint8: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Lip windows [stop−start, 3, 5, 224, 224] float32, raw 0–255 BGR, from [F, 224, 224, 3].

    Window i stacks frames i … i+4 along time (Conv3d input), unscaled as upstream feeds them.
    """
    frames = np.asarray(frames_bgr_uint8)
    if frames.ndim != 4 or frames.shape[1:] != (FACE_SIZE, FACE_SIZE, 3):
        raise ValueError(f"expected frames [F, {FACE_SIZE}, {FACE_SIZE}, 3], got {frames.shape}")
    if not 0 <= start <= stop or stop + WINDOW_FRAMES - 1 > len(frames):
        raise ValueError(f"windows {start}…{stop - 1} need frames beyond the {len(frames)} given")
    index = np.arange(start, stop)[:, None] + np.arange(WINDOW_FRAMES)  # [n, 5] frame numbers
    return frames[index].transpose(0, 4, 1, 2, 3).astype(np.float32)  # [n, 3, 5, H, W]


def distance_matrix(V: torch.Tensor, A: torch.Tensor, max_offset: int = MAX_OFFSET) -> torch.Tensor:
    """d [N, 2K+1]: d[i, k] = ‖V_i − A_{i+k−K} + 1e-6‖₂, with A_j the zero vector outside [0, N).

    Upstream's calc_pdist: the zero rows are distances too and count in every mean.
    """
    n = V.shape[0]
    padded = torch.cat(
        [A.new_zeros(max_offset, A.shape[1]), A, A.new_zeros(max_offset, A.shape[1])]
    )
    columns = [
        torch.linalg.vector_norm(V - padded[k : k + n] + PAIRWISE_EPS, dim=1)
        for k in range(2 * max_offset + 1)
    ]
    return torch.stack(columns, dim=1)


def v2_summary(dists: torch.Tensor | np.ndarray) -> dict:
    """Upstream's evaluate() tail: offset (+ = audio leads), min_dist (LSE-D), conf (LSE-C).

    mdist[k] is the mean over windows; the first minimum wins ties; conf = median − min over
    the 2K+1 offsets; fconf is the frame-wise confidence at the best offset, median-filtered
    over 9 windows with zero padding (scipy.signal.medfilt).
    """
    dists = torch.as_tensor(dists).detach().cpu()  # torch's float32 mean, as upstream's
    max_offset = (dists.shape[1] - 1) // 2
    mdist = dists.mean(dim=0).numpy()
    best = int(np.argmin(mdist))
    median = np.median(mdist)
    fdist = dists[:, best].numpy()
    return {
        "offset": max_offset - best,
        "min_dist": float(mdist[best]),
        "conf": float(median - mdist[best]),
        "mdist": mdist,
        "fdist": fdist,
        "fconf": scipy.signal.medfilt(median - fdist, kernel_size=FCONF_KERNEL),
    }
