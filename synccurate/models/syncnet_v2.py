"""SyncNet v2 (joonson/syncnet_python): network, MFCC features, windows and upstream scoring.

Layer indices, input conventions and the scoring quirks follow SYNCNET-FAMILY.md §A so that
the public `syncnet_v2.model` loads key for key and its offsets, minimum distances and
confidences (LSE-D / LSE-C) come out as upstream computes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn

# cv2 and python_speech_features are imported inside the functions of the recipe, which run
# in the worker processes, so the process that holds the model does not load them.
from synccurate.faces import crops as faces
from synccurate.faces.tracks import runs
from synccurate.io.audio import SAMPLE_RATE, SAMPLES_PER_FRAME, VIDEO_FPS, WINDOW_FRAMES
from synccurate.models import provenance
from synccurate.models.base import InputRecipe, NetworkModel
from synccurate.models.sync import vote_offset

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
# syncnet_python's face crop (run_pipeline.py): a square of 2·(1 + CROP_SCALE) box
# half-sizes, reaching CROP_SCALE·2 half-sizes below the box centre less above it.
CROP_SCALE = 0.4
PAD_VALUE = 110  # grey where the crop leaves the frame
TRACK_MEDIAN = 13  # frames: median filter over the track's centre and half-size
INT16_SCALE = 32768  # float samples in [-1, 1] → the int16 values upstream reads from a wav

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
        with torch.device("meta"):  # no random init: the file's tensors become the weights
            net = cls(embed_dim=state["netfcaud.3.weight"].shape[0])
        counters = {
            k: torch.tensor(0) for k in net.state_dict() if k.endswith("num_batches_tracked")
        }
        weights = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        net.load_state_dict({**counters, **weights}, assign=True)
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


class FastSyncNetV2(nn.Module):
    """SyncNetV2Net for inference only: the same function, faster on CPU.

    Per window on one CPU thread: lip CNN 35 ms instead of 42 (60 in upstream's contiguous
    layout), audio CNN 5 ms instead of 6.5.

    - The lip CNN mixes time only in its first layer, whose kernel spans all 5 frames, so it
      is exactly a 2-D CNN over the 15 stacked (time, colour) channels.
    - Each eval-mode BatchNorm is folded into the convolution before it.
    - Activations are channels_last, the layout oneDNN's convolutions run fastest in; the
      windows `lip_windows` builds already are, so they are not copied.

    Outputs equal SyncNetV2Net's up to float round-off (≈1e-6 relative). The two heads are
    the network's own modules. SyncNetV2Net stays the public layout that checkpoints load
    into and the parity tests check.
    """

    def __init__(self, net: SyncNetV2Net):
        super().__init__()
        self.cnnaud = _inference_cnn(net.netcnnaud)
        self.cnnlip = _inference_cnn(net.netcnnlip)
        self.netfcaud, self.netfclip = net.netfcaud, net.netfclip

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        _check_shape(x, (1, N_MFCC, MFCC_WINDOW), "audio")
        return self.netfcaud(
            self.cnnaud(x.contiguous(memory_format=torch.channels_last)).flatten(1)
        )

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        _check_shape(x, (3, WINDOW_FRAMES, FACE_SIZE, FACE_SIZE), "lip")
        stacked = x.permute(0, 3, 4, 2, 1).contiguous()  # [n, H, W, t, c]: as lip_windows makes it
        stacked = stacked.view(len(x), FACE_SIZE, FACE_SIZE, -1).permute(0, 3, 1, 2)  # 3·t + c
        return self.netfclip(self.cnnlip(stacked).flatten(1))


def _inference_cnn(layers: nn.Sequential) -> nn.Sequential:
    """A Conv → BatchNorm → ReLU (→ MaxPool) stack as 2-D layers with the BatchNorms folded in.

    3-D layers must see inputs whose time axis their kernel covers whole (no time padding):
    their outputs then have one time step, and the next layer's kernel is 1 in time.
    """
    out: list[nn.Module] = []
    modules = list(layers)
    for i, layer in enumerate(modules):
        if isinstance(layer, nn.Conv2d | nn.Conv3d):
            out.append(_fold_batchnorm(layer, modules[i + 1]))
        elif isinstance(layer, nn.MaxPool3d):
            if _in_time(layer.kernel_size) != 1 or _in_time(layer.padding) != 0:
                raise ValueError(f"{layer}: pools over time")
            out.append(
                nn.MaxPool2d(
                    _in_space(layer.kernel_size), _in_space(layer.stride), _in_space(layer.padding)
                )
            )
        elif isinstance(layer, nn.ReLU):
            out.append(nn.ReLU(inplace=True))
        elif isinstance(layer, nn.MaxPool2d):
            out.append(layer)
        elif not isinstance(layer, nn.BatchNorm2d | nn.BatchNorm3d):  # folded above
            raise TypeError(f"no inference form for {layer}")
    return nn.Sequential(*out).to(memory_format=torch.channels_last).eval()


def _in_time(size) -> int:
    return size[0] if isinstance(size, tuple) else size


def _in_space(size):
    return size[1:] if isinstance(size, tuple) else size


@torch.no_grad()
def _fold_batchnorm(conv: nn.Conv2d | nn.Conv3d, norm: nn.Module) -> nn.Conv2d:
    """conv then eval-mode norm as one Conv2d: weight·s, (bias − mean)·s + β, s = γ / √(var + ε).

    A Conv3d weight [o, c, t, kh, kw] becomes [o, t·c, kh, kw]: input channel 3·t + c for
    the lip CNN's 5 frames of 3 colours.
    """
    if not isinstance(norm, nn.BatchNorm2d | nn.BatchNorm3d):
        raise TypeError(f"{conv} is followed by {norm}, not a BatchNorm")
    weight = conv.weight
    if weight.ndim == 5:
        if conv.padding[0] != 0:
            raise ValueError(f"{conv}: pads in time")
        weight = weight.transpose(1, 2).flatten(1, 2)
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    with torch.device("meta"):
        folded = nn.Conv2d(
            weight.shape[1],
            weight.shape[0],
            weight.shape[2:],
            _in_space(conv.stride),
            _in_space(conv.padding),
        )
    folded.weight = nn.Parameter(weight * scale[:, None, None, None], requires_grad=False)
    folded.bias = nn.Parameter(
        (conv.bias - norm.running_mean) * scale + norm.bias, requires_grad=False
    )
    return folded


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
    import python_speech_features

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
    In memory the windows are [n, 224, 224, 5, 3]: time and colour innermost, which is the
    channels_last layout of the 15 stacked channels `FastSyncNetV2` reads, without a copy.
    """
    frames = np.asarray(frames_bgr_uint8)
    if frames.ndim != 4 or frames.shape[1:] != (FACE_SIZE, FACE_SIZE, 3):
        raise ValueError(f"expected frames [F, {FACE_SIZE}, {FACE_SIZE}, 3], got {frames.shape}")
    if not 0 <= start <= stop or stop + WINDOW_FRAMES - 1 > len(frames):
        raise ValueError(f"windows {start}…{stop - 1} need frames beyond the {len(frames)} given")
    if start == stop:
        return np.zeros((0, 3, WINDOW_FRAMES, FACE_SIZE, FACE_SIZE), dtype=np.float32)
    used = frames[start : stop + WINDOW_FRAMES - 1]
    stacked = sliding_window_view(used, WINDOW_FRAMES, axis=0)  # view [n, H, W, 3, 5]
    windows = np.ascontiguousarray(stacked.swapaxes(3, 4), dtype=np.float32)  # [n, H, W, 5, 3]
    return windows.transpose(0, 4, 3, 1, 2)  # [n, 3, 5, H, W]


def distance_matrix(V: torch.Tensor, A: torch.Tensor, max_offset: int = MAX_OFFSET) -> torch.Tensor:
    """d [N, 2K+1]: d[i, k] = ‖V_i − A_{i+k−K} + 1e-6‖₂, with A_j the zero vector outside [0, N).

    Upstream's calc_pdist: the zero rows are distances too and count in every mean.
    """
    zeros = A.new_zeros(max_offset, A.shape[1])
    return padded_distances(V, torch.cat([zeros, A, zeros]), max_offset)


def padded_distances(V: torch.Tensor, padded: torch.Tensor, max_offset: int) -> torch.Tensor:
    """d [N, 2K+1] as `distance_matrix`, given the audio embeddings of windows −K … N+K−1."""
    n = V.shape[0]
    columns = [
        torch.linalg.vector_norm(V - padded[k : k + n] + PAIRWISE_EPS, dim=1)
        for k in range(2 * max_offset + 1)
    ]
    return torch.stack(columns, dim=1)


def v2_summary(dists: torch.Tensor | np.ndarray, valid: np.ndarray | None = None) -> dict:
    """Upstream's evaluate() tail: offset (+ = audio leads), min_dist (LSE-D), conf (LSE-C).

    mdist[k] is the mean over windows; the first minimum wins ties; conf = median − min over
    the 2K+1 offsets; fconf is the frame-wise confidence at the best offset, median-filtered
    over 9 windows with zero padding (upstream's scipy.signal.medfilt, here `medfilt`).
    `valid` (default: all) keeps windows without a face out of the means; fdist and fconf
    still cover every window.
    """
    dists = torch.as_tensor(dists).detach().cpu()  # torch's float32 mean, as upstream's
    max_offset = (dists.shape[1] - 1) // 2
    rows = dists if valid is None else dists[torch.as_tensor(np.asarray(valid, dtype=bool))]
    mdist = rows.mean(dim=0).numpy()
    best = int(np.argmin(mdist))
    median = np.median(mdist)
    fdist = dists[:, best].numpy()
    return {
        "offset": max_offset - best,
        "min_dist": float(mdist[best]),
        "conf": float(median - mdist[best]),
        "mdist": mdist,
        "fdist": fdist,
        "fconf": medfilt(median - fdist, FCONF_KERNEL),
    }


def medfilt(values: np.ndarray, kernel: int) -> np.ndarray:
    """scipy.signal.medfilt of a 1-D array (odd kernel, zeros past both ends), in numpy.

    The same numbers without scipy.signal, whose import alone costs the model process ~65 MB.
    """
    if len(values) == 0:
        return np.array(values, copy=True)
    padded = np.pad(np.asarray(values), kernel // 2)
    return np.median(sliding_window_view(padded, kernel), axis=1)


# --- the two halves of the model interface (models.base) ----------------------------


def crop_face(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """syncnet_python's face crop of one frame: 224² BGR-agnostic, grey where past the frame.

    bs = half the box's longer side; rows [y − bs, y + (1 + 2·0.4)·bs), columns
    [x − 1.4·bs, x + 1.4·bs) around the box centre (x, y), floored as upstream's int() of
    positive padded coordinates, then resized bilinearly.
    """
    import cv2

    half = max(box[2] - box[0], box[3] - box[1]) / 2
    x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0, x1 = int(np.floor(x - half * (1 + CROP_SCALE))), int(np.floor(x + half * (1 + CROP_SCALE)))
    y0, y1 = int(np.floor(y - half)), int(np.floor(y + half * (1 + 2 * CROP_SCALE)))
    region = faces.cut_region(frame, x0, y0, max(x1, x0 + 1), max(y1, y0 + 1), fill=PAD_VALUE)
    return cv2.resize(region, (FACE_SIZE, FACE_SIZE))


def median_track(boxes: np.ndarray, has_face: np.ndarray) -> np.ndarray:
    """Each face run's centre and half-size through upstream's 13-frame median (zero-padded)."""
    out = np.full_like(boxes, np.nan)
    for start, stop in runs(has_face):
        run = boxes[start:stop]
        half = np.maximum(run[:, 2] - run[:, 0], run[:, 3] - run[:, 1]) / 2
        x, y = (run[:, 0] + run[:, 2]) / 2, (run[:, 1] + run[:, 3]) / 2
        x, y, half = (medfilt(v, TRACK_MEDIAN) for v in (x, y, half))
        out[start:stop] = np.stack([x - half, y - half, x + half, y + half], axis=1)
    return out


@dataclass(frozen=True)
class FaceCropRecipe(InputRecipe):
    """224² full-face crops, raw BGR 0–255, 5 frames in time; MFCC windows of int16 audio."""

    kind: ClassVar[str] = "syncnet-v2"
    crop_hw: tuple[int, int] = (FACE_SIZE, FACE_SIZE)

    @property
    def crop_width_per_face(self) -> float:
        return 1 + CROP_SCALE

    def crop(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        return crop_face(frame, box)

    def smooth_track(self, boxes: np.ndarray, has_face: np.ndarray) -> np.ndarray:
        return median_track(boxes, has_face)

    def audio_features(self, samples: np.ndarray) -> np.ndarray:
        int16 = np.clip(np.round(samples * INT16_SCALE), -INT16_SCALE, INT16_SCALE - 1)
        return mfcc(int16).astype(np.float32)

    def n_windows(self, n_frames: int, n_samples: int) -> int:
        return n_windows(n_frames, n_samples)

    def visual_windows(self, crops: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return torch.from_numpy(lip_windows(crops.numpy()[..., ::-1], start, stop))

    def audio_windows(self, features: np.ndarray, first: int, count: int) -> torch.Tensor:
        return torch.from_numpy(audio_windows(features, first, count))


class SyncNetV2Model(NetworkModel):
    """SyncNet v2 as a distance model: S = −distance, so "higher = in sync" holds for all kinds.

    No probability: v2 was trained with a contrastive distance loss, not as P(sync), so
    prob_at_offset, offscreen_ratio and p_t are null; lse_d / lse_c and the frame-wise
    confidence are its numbers (docs/models.md).
    """

    kind = "syncnet-v2"
    score_kind = "distance"
    batch_size = 16  # windows per model batch on a GPU (~10 MB of activations each)
    # On CPU 4 is as fast per window as 8 and faster than 16 or 32 (lip CNN on one thread:
    # 34, 34, 36, 38 ms), and `score` peaks ~130 MB lower than at 16.
    cpu_batch_size = 4
    # MFCC windows are 1 KB: at 4 per batch two threads run the audio CNN at 3.7 ms per
    # window, at 64 at 2.5 ms.
    audio_batch_size = 64
    # Upstream compares the lips with zero vectors where the clip's audio windows end, not
    # with the embedding of silence: the batching code zeroes those embeddings.
    zero_audio_outside_clip = True
    window_reach = FCONF_KERNEL // 2  # fconf's median filter reads 4 windows each side

    def __init__(self, network: SyncNetV2Net, model_id: str, trained_on: dict | None = None):
        trained_on = trained_on or dict(provenance.KNOWN_TRAINING[self.kind])
        # The fast inference copy replaces the network (a stand-in network is used as is), so
        # the 3-D weights are not held twice once the caller lets go of them.
        fast = FastSyncNetV2(network) if isinstance(network, SyncNetV2Net) else network
        super().__init__(fast, model_id, FaceCropRecipe(), trained_on)

    def embed_visual(self, windows: torch.Tensor) -> torch.Tensor:
        return self.network.forward_lip(windows)

    def embed_audio(self, windows: torch.Tensor) -> torch.Tensor:
        return self.network.forward_aud(windows)

    def similarity(
        self, visual: torch.Tensor, audio: torch.Tensor, max_offset: int
    ) -> torch.Tensor:
        """−d with columns in offset order; audio windows outside the clip arrive as zero
        vectors (`zero_audio_outside_clip`), as upstream pads them."""
        return -padded_distances(visual.float(), audio.float(), max_offset).flip(1)

    def metrics(self, similarity: torch.Tensor, valid: np.ndarray, offset_method="mean") -> dict:
        """Upstream's numbers; with offset_method "vote", LSE-D / LSE-C are read at the vote."""
        dists = -torch.as_tensor(similarity).float().cpu().flip(1)  # upstream's column order
        summary = v2_summary(dists, valid)
        K = (dists.shape[1] - 1) // 2
        voted, share, _ = vote_offset(similarity, valid)
        offset = voted if offset_method == "vote" else summary["offset"]
        lse_d = float(summary["mdist"][K - offset])
        lse_c = float(np.median(summary["mdist"]) - lse_d)
        return {
            "offset_frames": offset,
            "offset_seconds": offset / VIDEO_FPS,
            "lse_d": lse_d,
            "lse_c": lse_c,
            "confidence": lse_c,
            "at_search_edge": abs(offset) == K,
            "vote_offset": voted,
            "vote_share": share,
            "offset_method": offset_method,
            "profile": (-summary["mdist"][::-1]).round(4),
            "fconf": np.asarray(summary["fconf"]).round(4),
        }
