"""IC-SyncNet (SPEC §3): mouth crops, log-mel windows, cosine S.

The network (two convolutional encoders, cosine similarity, learnable temperature) comes
first; one code path serves every size: the architecture is a `ModelConfig`, saved inside
every checkpoint next to the safetensors weights. Then the recipe (what the network reads)
and the model (what the scoring pipeline calls).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from synccurate.faces.crops import MOUTH_MARGIN, crop_mouth, lower_half_filter
from synccurate.io import audio
from synccurate.io.files import default_file_mode
from synccurate.models import provenance
from synccurate.models.base import InputRecipe, NetworkModel
from synccurate.models.sync import clip_metrics
from synccurate.models.weights import WeightsError, count_parameters, sha256


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; stored in the checkpoint's JSON."""

    name: str = "small"
    crop_height: int = 32  # pixels; the mouth crop is twice as wide as high
    crop_width: int = 64
    visual_widths: tuple[int, ...] = (16, 32, 64, 96)  # channels per stage (each halves H, W)
    visual_depths: tuple[int, ...] = (1, 1, 1, 1)  # residual blocks per stage
    audio_widths: tuple[int, ...] = (16, 32, 64, 96)
    audio_depths: tuple[int, ...] = (1, 1, 1, 1)
    embed_dim: int = 128
    dropblock_rate: float = 0.1  # SPEC §4, our default
    dropblock_size: int = 3
    init_tau: float = 0.2
    # Input description, so a checkpoint says what it expects (SPEC §1).
    window_frames: int = audio.WINDOW_FRAMES
    n_mels: int = audio.N_MELS
    audio_window_mels: int = audio.AUDIO_WINDOW_MELS
    sample_rate: int = audio.SAMPLE_RATE
    hop_length: int = audio.HOP_LENGTH
    n_fft: int = audio.N_FFT
    video_fps: int = audio.VIDEO_FPS
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**values)


CONFIGS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(
        name="tiny",
        visual_widths=(8, 16, 24),
        visual_depths=(0, 0, 1),
        audio_widths=(8, 16, 24),
        audio_depths=(0, 0, 1),
        embed_dim=32,
    ),
    "small": ModelConfig(),
    # Close to the paper's 40.6 M parameters; 128 x 256 mouth crops (lower half of a 256² face).
    "paper": ModelConfig(
        name="paper",
        crop_height=128,
        crop_width=256,
        visual_widths=(64, 128, 256, 512, 512),
        visual_depths=(1, 2, 3, 3, 2),
        audio_widths=(64, 128, 256, 512),
        audio_depths=(1, 2, 3, 3),
        embed_dim=512,
    ),
}


class ConvBlock(nn.Module):
    """Conv → BatchNorm → PReLU, with a residual skip when the shapes match."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int | tuple = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False)
        self.norm = nn.BatchNorm2d(c_out)
        self.act = nn.PReLU(c_out)
        self.residual = c_in == c_out and stride in (1, (1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.conv(x))
        return self.act(y + x if self.residual else y)


class BlurPool(nn.Module):
    """Anti-aliased downsampling: a fixed [1 2 1]² low-pass filter applied with stride 2."""

    def __init__(self, channels: int):
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(taps, taps)
        kernel = kernel / kernel.sum()
        self.register_buffer(
            "kernel", kernel.expand(channels, 1, 3, 3).contiguous(), persistent=False
        )
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(x, self.kernel.to(x.dtype), stride=2, groups=self.channels)


class DropBlock(nn.Module):
    """DropBlock (Ghiasi et al. 2018); `volumetric` drops blocks across channels too (3-D)."""

    def __init__(self, rate: float, block_size: int, volumetric: bool):
        super().__init__()
        self.rate = rate
        self.block_size = block_size
        self.volumetric = volumetric

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate <= 0:
            return x
        size = self.block_size
        shape = x.shape[1:] if self.volumetric else x.shape[2:]
        valid = math.prod(max(1, s - size + 1) for s in shape)
        gamma = self.rate / size ** len(shape) * math.prod(shape) / valid
        if self.volumetric:
            seeds = (torch.rand(x.shape[0], 1, *shape, device=x.device) < gamma).to(x.dtype)
            blocks = F.max_pool3d(seeds, size, stride=1, padding=size // 2)[:, 0]
        else:
            seeds = (torch.rand(x.shape[0], x.shape[1], *shape, device=x.device) < gamma).to(
                x.dtype
            )
            blocks = F.max_pool2d(seeds, size, stride=1, padding=size // 2)
        keep = 1 - blocks[..., : x.shape[-2], : x.shape[-1]]
        if self.volumetric:
            keep = keep[:, : x.shape[1]]
        return x * keep * (keep.numel() / keep.sum().clamp(min=1.0))


def _stage_sizes(size: int, n_stages: int) -> int:
    for _ in range(n_stages):
        size = (size + 1) // 2
    return size


class Encoder(nn.Module):
    """Stacked ConvBlocks; each stage widens, downsamples by 2, then adds residual blocks.

    The last feature map is flattened by a conv whose kernel covers it whole, so the
    embedding keeps spatial layout instead of pooling it away.
    """

    def __init__(
        self,
        c_in: int,
        height: int,
        width: int,
        widths: tuple[int, ...],
        depths: tuple[int, ...],
        embed_dim: int,
        drop_rate: float,
        drop_size: int,
        blur: bool,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        channels = c_in
        for stage, (c_out, depth) in enumerate(zip(widths, depths, strict=True)):
            if blur:
                layers += [ConvBlock(channels, c_out), BlurPool(c_out)]
            else:
                layers.append(ConvBlock(channels, c_out, stride=2))
            layers += [ConvBlock(c_out, c_out) for _ in range(depth)]
            if stage >= len(widths) - 2:  # two DropBlock layers, on the deepest stages
                layers.append(DropBlock(drop_rate, drop_size, volumetric=blur))
            channels = c_out
        self.features = nn.Sequential(*layers)
        out_h, out_w = _stage_sizes(height, len(widths)), _stage_sizes(width, len(widths))
        self.head = nn.Conv2d(channels, embed_dim, (out_h, out_w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.features(x)).flatten(1), dim=1)


class ICSyncNet(nn.Module):
    """Visual and audio encoders plus a learnable temperature (stored as log τ)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.visual = Encoder(
            3 * config.window_frames,
            config.crop_height,
            config.crop_width,
            config.visual_widths,
            config.visual_depths,
            config.embed_dim,
            config.dropblock_rate,
            config.dropblock_size,
            blur=True,
        )
        self.audio = Encoder(
            1,
            config.n_mels,
            config.audio_window_mels,
            config.audio_widths,
            config.audio_depths,
            config.embed_dim,
            config.dropblock_rate,
            config.dropblock_size,
            blur=False,
        )
        self.log_tau = nn.Parameter(torch.tensor(math.log(config.init_tau)))

    @property
    def tau(self) -> float:
        return float(self.log_tau.detach().exp())

    def embed_visual(self, windows: torch.Tensor) -> torch.Tensor:
        """[N, 15, H, W] floats in [0, 1] (5 RGB frames stacked on channels) → [N, D]."""
        return self.visual(windows - 0.5)

    def embed_audio(self, mels: torch.Tensor) -> torch.Tensor:
        """[N, 1, 80, 32] normalised log-mel → [N, D]."""
        return self.audio(mels / audio.MAX_ABS_VALUE)

    def logits(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """cos(v, a) / τ for unit embeddings; sigmoid of this is the sync probability."""
        return (v * a).sum(-1) / self.log_tau.exp()

    def set_drop_rate(self, rate: float) -> None:
        for module in self.modules():
            if isinstance(module, DropBlock):
                module.rate = rate

    def bn_only_parameters(self) -> list[nn.Parameter]:
        """The BatchNorm affine parameters: all that drop-and-tune trains (SPEC §4)."""
        return [p for m in self.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()]


# --- checkpoints: <name>.safetensors + <name>.json (config, sha256, training notes) ---


def save_checkpoint(model: ICSyncNet, path: str | Path, metadata: dict | None = None) -> Path:
    """Write `path` (.safetensors) and its .json sidecar atomically; return the weights path."""
    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    sidecar = {
        "architecture": "IC-SyncNet",
        "config": asdict(model.config),
        "tau": model.tau,
        "parameters": count_parameters(model),
        "sha256": sha256(tmp),
        **(metadata or {}),
    }
    json_tmp = path.with_suffix(".json.tmp")
    json_tmp.write_text(json.dumps(sidecar, indent=2) + "\n")
    for written in (tmp, json_tmp):
        os.chmod(written, default_file_mode())
    os.replace(tmp, path)
    os.replace(json_tmp, path.with_suffix(".json"))
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[ICSyncNet, dict]:
    """Load weights without executing code (safetensors) after checking their sha256."""
    path = Path(path).with_suffix(".safetensors")
    sidecar_path = path.with_suffix(".json")
    if not sidecar_path.is_file():
        raise WeightsError(f"{path}: missing config file {sidecar_path.name}")
    sidecar = json.loads(sidecar_path.read_text())
    actual = sha256(path)
    if actual != sidecar.get("sha256"):
        raise WeightsError(f"{path}: sha256 {actual[:12]} does not match its config's checksum")
    model = ICSyncNet(ModelConfig.from_dict(sidecar["config"]))
    model.load_state_dict(load_file(str(path)))
    model.to(device).eval()
    sidecar["model_id"] = f"{path.stem}@{actual[:8]}"
    return model, sidecar


def stack_windows(crops: torch.Tensor) -> torch.Tensor:
    """Visual windows [T, 15, H, W] in [0, 1] from uint8 crops [n, H, W, 3], T = n - 4.

    Channels are frame-major (frame t RGB, frame t+1 RGB, …), the conventional stacking.
    """
    frames = crops.permute(0, 3, 1, 2).float() / 255.0
    T = frames.shape[0] - audio.WINDOW_FRAMES + 1
    return torch.cat([frames[i : i + T] for i in range(audio.WINDOW_FRAMES)], dim=1)


# --- the model behind the scoring interface ---


@dataclass(frozen=True)
class MouthRecipe(InputRecipe):
    """Lower half of the widened face box, RGB; 5 frames stacked on channels; 0.4 s mels."""

    kind: ClassVar[str] = "icsyncnet"
    margin: float = MOUTH_MARGIN

    @property
    def crop_width_per_face(self) -> float:  # type: ignore[override]
        return 1 + self.margin

    def crop(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        return crop_mouth(frame, box, self.crop_hw, self.margin)

    def whole_frame_filter(self, width: int, height: int) -> str:
        """ffmpeg pads/crops the frame's lower half: far cheaper than numpy per frame."""
        return lower_half_filter(width, height)

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
    # On CPU 16 windows a batch are as fast as 64 and 256 or faster (8 clips, paper config:
    # 44 s against 72 s at 64; small config 3.5 s against 3.3 s, within noise) and hold
    # less: the paper config's `score` peaks at 974 MB against 2,099, the small one's at
    # 408 MB against 442 (benchmarks/batch_memory.py).
    cpu_batch_size = 16

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
