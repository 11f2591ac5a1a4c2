"""Training IC-SyncNet (SPEC §4): a cache of mouth crops + mel, BBCE loss, drop-and-tune, DDP.

Data flow: videos → `build_cache` (decode + faces once, sharded, resumable) →
`WindowData` (random positive windows with hard and easy negatives) → `train`.
Multi-GPU / multi-node runs use torch's DistributedDataParallel under torchrun.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from synccurate.io import audio
from synccurate.io.inputs import ClipRef, discover
from synccurate.models import provenance
from synccurate.models.icsyncnet import (
    CONFIGS,
    ICSyncNet,
    ModelConfig,
    MouthRecipe,
    load_checkpoint,
    save_checkpoint,
    stack_windows,
)
from synccurate.models.sync import MAX_OFFSET, n_windows
from synccurate.models.weights import find_weights
from synccurate.pipeline.prepare import prepare_clips
from synccurate.training.evaluate import accuracy_at

HARD_SHIFT_MIN = 2  # frames; hard negatives are shifted by 2 ≤ |s| ≤ 15 (our choice, SPEC §4)
HARD_SHIFT_MAX = MAX_OFFSET
SHARD_CLIPS = 256  # clips per cache shard


# --- the cache ------------------------------------------------------------------


def _write_shard(cache: Path, number: int, clips: list) -> None:
    """One shard folder: crops.npy [sum n, H, W, 3], mel.npy [80, sum M], index.json."""
    tmp = cache / f".shard_{number:05d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "crops.npy", np.concatenate([c.crops for c in clips]))
    mel = np.concatenate([c.features for c in clips], axis=1)
    np.save(tmp / "mel.npy", mel.astype(np.float16))
    index, frame, mel = [], 0, 0
    for c in clips:
        index.append(
            {
                "root": c.ref.root,
                "path": c.ref.path,
                "frame": frame,
                "n_frames": c.n_frames,
                "mel": mel,
                "n_mel": c.features.shape[1],
                "synthetic": c.synthetic,  # a `synccurate synth` clip (None: unknown)
            }
        )
        frame, mel = frame + c.n_frames, mel + c.features.shape[1]
    (tmp / "index.json").write_text(json.dumps(index))
    os.replace(tmp, cache / f"shard_{number:05d}")


def _cached_refs(cache: Path) -> set[tuple[str, str]]:
    done = set()
    for index in cache.glob("shard_*/index.json"):
        done |= {(e["root"], e["path"]) for e in json.loads(index.read_text())}
    for skipped in cache.glob("skipped_*.json"):
        done |= {tuple(e) for e in json.loads(skipped.read_text())}
    return done


def build_cache(
    paths: list[Path] | list[ClipRef],
    cache: Path,
    config: ModelConfig,
    *,
    detector: str = "none",
    workers: int = 0,
    log=print,
) -> int:
    """Decode and crop every clip once into shards; rerunning adds only the missing clips.

    `paths`: folders / files (searched like `score` does) or the clips themselves (ClipRef).
    """
    cache.mkdir(parents=True, exist_ok=True)
    refs = [p for p in paths if isinstance(p, ClipRef)]
    others = [p for p in paths if not isinstance(p, ClipRef)]
    if others:
        refs += discover(others)
    done = _cached_refs(cache)
    todo = [r for r in refs if (r.root, r.path) not in done]
    recipe = MouthRecipe(crop_hw=(config.crop_height, config.crop_width))
    number = len(list(cache.glob("shard_*")))
    prepared = prepare_clips(todo, recipe, detector, "cpu", workers)
    batch, skipped = [], []
    for clip in tqdm(prepared, total=len(todo), desc="caching", disable=not todo):
        if clip.status != "ok":
            log(f"skipped {clip.error}")
            skipped.append([clip.ref.root, clip.ref.path])
            continue
        batch.append(clip)
        if len(batch) == SHARD_CLIPS:
            _write_shard(cache, number, batch)
            number, batch = number + 1, []
    if batch:
        _write_shard(cache, number, batch)
    if skipped:
        (cache / f"skipped_{number:05d}.json").write_text(json.dumps(skipped))
    return len(todo)


@dataclass
class CachedClip:
    crops: np.ndarray  # uint8 [n, H, W, 3] (memory-mapped)
    mel: np.ndarray  # float16 [80, M]
    path: str  # relative to the folder it was found under
    root: str = ""  # that folder
    synthetic: bool | None = None  # a `synccurate synth` clip; None: cached before the tag


def load_cache(cache: Path, only: set[tuple[str, str]] | None = None) -> list[CachedClip]:
    """The cached clips; with `only` ((root, path) pairs) exactly those of them, in cache order.

    A cache may hold more clips than one run wants (it is shared and only ever grows), so a
    run on a clip list (a kept table, a fix folder) passes the list here.
    """
    clips = []
    for shard in sorted(cache.glob("shard_*")):
        crops = np.load(shard / "crops.npy", mmap_mode="r")
        mel = np.load(shard / "mel.npy", mmap_mode="r")
        for e in json.loads((shard / "index.json").read_text()):
            if only is not None and (e["root"], e["path"]) not in only:
                continue
            clips.append(
                CachedClip(
                    crops[e["frame"] : e["frame"] + e["n_frames"]],
                    mel[:, e["mel"] : e["mel"] + e["n_mel"]],
                    e["path"],
                    e["root"],
                    e.get("synthetic"),
                )
            )
    return clips


def split_clips(clips: list[CachedClip], val_fraction: float) -> tuple[list, list]:
    """Deterministic held-out split by a hash of the clip's relative path.

    The folder the data lives in does not enter the hash, so the same data copied
    elsewhere gives the same split and the same trained weights.
    """

    def held_out(clip: CachedClip) -> bool:
        return zlib.crc32(clip.path.encode()) % 1000 < val_fraction * 1000

    train = [c for c in clips if not held_out(c)]
    val = [c for c in clips if held_out(c)]
    return train, val


# --- samples, augmentation, loss ------------------------------------------------


def augment(
    windows: torch.Tensor, generator: torch.Generator, jitter: float = 0.05
) -> torch.Tensor:
    """Per-frame random translation and scale (±jitter) and a flip of the whole window."""
    B, C, H, W = windows.shape
    frames = windows.reshape(B * audio.WINDOW_FRAMES, 3, H, W)
    n = frames.shape[0]
    scale = 1 + (torch.rand(n, generator=generator) * 2 - 1) * jitter
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * jitter * 2  # grid units span 2
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, frames.shape, align_corners=False)
    moved = F.grid_sample(frames, grid, padding_mode="border", align_corners=False)
    moved = moved.reshape(B, C, H, W)
    flip = torch.rand(B, generator=generator) < 0.5
    moved[flip] = moved[flip].flip(-1)
    return moved


def bbce_loss(
    pos: torch.Tensor, hard: torch.Tensor, easy: torch.Tensor, lam: float
) -> torch.Tensor:
    """Balanced BCE on logits cos/τ: pos [B], hard [B, N_h], easy [B, N_e] (SPEC §4).

    −log σ(x) = softplus(−x) and −log(1 − σ(x)) = softplus(x), computed stably.
    """
    loss = F.softplus(-pos)
    if hard.shape[1]:
        loss = loss + (1 - lam) * F.softplus(hard).mean(1)
    if easy.shape[1]:
        loss = loss + lam * F.softplus(easy).mean(1)
    return 0.5 * loss.mean()


@dataclass
class Batch:
    """One training batch. Audio windows are shared: hard negatives index into `audio`."""

    visual: torch.Tensor  # [B, 15, H, W] in [0, 1]
    audio: torch.Tensor  # [n_audio, 1, 80, 32]
    positive: torch.Tensor  # [B] index into audio of each positive window
    hard: torch.Tensor  # [B, N_h] index into audio of each hard negative
    group: torch.Tensor  # [B] run id; easy negatives come from other runs


class WindowSampler:
    """Runs of consecutive windows from random clips, sharing one strip of audio windows.

    A run of R visual windows t0 … t0+R-1 needs the audio windows t0-15 … t0+R-1+15
    for its positives and all hard negatives (shifts 2 ≤ |s| ≤ 15), so each positive
    costs about (R + 30) / R audio windows instead of 1 + N_h: the extra negatives
    that SPEC §4 calls cheap really are.
    """

    def __init__(self, clips: list[CachedClip], n_hard: int, seed: int, run_length: int = 8):
        self.clips = [c for c in clips if n_windows(len(c.crops)) > 0]
        self.n_hard = n_hard
        self.run_length = run_length
        self.rng = np.random.default_rng(seed)
        lengths = np.array([n_windows(len(c.crops)) for c in self.clips])
        self.weights = lengths / lengths.sum()
        self.total_windows = int(lengths.sum())

    def _shifts(self, t: int, T: int) -> np.ndarray:
        """N_h shifts s with 2 ≤ |s| ≤ 15, inside the clip when it is long enough."""
        candidates = [
            s
            for s in range(-HARD_SHIFT_MAX, HARD_SHIFT_MAX + 1)
            if abs(s) >= HARD_SHIFT_MIN and 0 <= t + s < T
        ]
        if not candidates:  # a clip shorter than the shift range: silence-padded windows
            candidates = [HARD_SHIFT_MIN, -HARD_SHIFT_MIN]
        return self.rng.choice(candidates, self.n_hard, replace=len(candidates) < self.n_hard)

    def batch(self, size: int) -> Batch:
        visual, strips, positive, hard, group = [], [], [], [], []
        strip_start = 0
        for run in range(max(1, size // self.run_length)):
            clip = self.clips[self.rng.choice(len(self.clips), p=self.weights)]
            T = n_windows(len(clip.crops))
            length = min(self.run_length, T, size - len(visual))
            t0 = int(self.rng.integers(T - length + 1))
            crops = torch.from_numpy(
                np.array(clip.crops[t0 : t0 + length + audio.WINDOW_FRAMES - 1])
            )
            visual.append(stack_windows(crops))
            strip_len = length + 2 * HARD_SHIFT_MAX
            strips.append(
                audio.audio_windows(
                    np.asarray(clip.mel, np.float32), t0 - HARD_SHIFT_MAX, strip_len
                )
            )
            for t in range(t0, t0 + length):
                here = strip_start + HARD_SHIFT_MAX + (t - t0)  # strip index of a_t
                positive.append(here)
                hard.append(here + self._shifts(t, T))
                group.append(run)
            strip_start += strip_len
        return Batch(
            visual=torch.cat(visual),
            audio=torch.from_numpy(np.concatenate(strips)),
            positive=torch.tensor(positive),
            hard=torch.from_numpy(np.stack(hard)).long().reshape(len(positive), self.n_hard),
            group=torch.tensor(group),
        )


def easy_negatives(
    a_pos: torch.Tensor, n_easy: int, group: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """For each item, n_easy positive audio embeddings of items from *other* runs: [B, N_e, D]."""
    other = group[:, None] != group[None, :]
    n_easy = min(n_easy, int(other.sum(1).min()))
    if n_easy <= 0:
        return a_pos.new_zeros(len(a_pos), 0, a_pos.shape[1])
    scores = torch.rand(other.shape, generator=generator).masked_fill(~other, -1.0)
    index = scores.topk(n_easy, dim=1).indices
    return a_pos[index.to(a_pos.device)]


# --- evaluation on held-out clips -------------------------------------------------


def clip_similarities(model: ICSyncNet, clips: list[CachedClip], device, batch_size: int = 512):
    """S matrices of cached clips (each window embedded once), for held-out accuracy."""
    from synccurate.models.icsyncnet import ICSyncNetModel
    from synccurate.pipeline.batching import similarity_matrices
    from synccurate.pipeline.prepare import PreparedClip

    prepared = [
        PreparedClip(
            ClipRef("", c.path),
            crops=np.array(c.crops),
            features=np.asarray(c.mel, np.float32),
            n_windows=n_windows(len(c.crops)),
        )
        for c in clips
    ]
    return similarity_matrices(ICSyncNetModel(model, "training"), prepared, batch_size, device)


# --- the training loop ----------------------------------------------------------


def init_config(init: Path, config: ModelConfig | str | None = None) -> tuple[dict, ModelConfig]:
    """What --init weights are, checked before any work: (notes for the new sidecar — file,
    model_id, config name, trained_on — and their ModelConfig). A `config` naming another
    size than theirs is refused (ValueError)."""
    path = find_weights(init)
    sidecar_path = path.with_suffix(".json")
    if not sidecar_path.is_file():
        raise ValueError(f"{path}: missing its sidecar {sidecar_path.name}")
    sidecar = json.loads(sidecar_path.read_text())
    if sidecar.get("kind", "icsyncnet") != "icsyncnet" or "config" not in sidecar:
        raise ValueError(f"--init {init}: not IC-SyncNet weights (train only trains IC-SyncNet)")
    found = ModelConfig.from_dict(sidecar["config"])
    wanted = config.name if isinstance(config, ModelConfig) else config
    if wanted is not None and wanted != found.name:
        raise ValueError(
            f"--init {init} holds the {found.name} config, not --config {wanted}: the config "
            "comes from the init weights (leave --config out)"
        )
    notes = {
        "path": path.name,
        "model_id": f"{path.stem}@{sidecar.get('sha256', '')[:8]}",
        "config": found.name,
        "trained_on": provenance.normalise(sidecar.get("trained_on")),
    }
    return notes, found


@dataclass
class TrainSettings:
    epochs: int = 600  # paper: 600 epochs with DropBlock …
    tune_epochs: int = 50  # … then 50 epochs training only BatchNorm (drop-and-tune)
    batch_size: int = 256
    steps_per_epoch: int = 0  # 0 = one pass over all training windows per epoch
    lr: float = 1e-4
    tune_lr: float = 1e-4
    n_hard: int = 15
    n_easy: int = 15
    run_length: int = 8  # consecutive positives per clip sharing one strip of audio windows
    cosine: bool = False  # cosine learning-rate decay over the DropBlock phase (not in the paper)
    lam: float = 0.1  # SPEC §4 default weight of the easy negatives
    jitter: float = 0.05
    val_fraction: float = 0.05
    seed: int = 0


def _distributed() -> tuple[int, int, int]:
    if (
        "WORLD_SIZE" in os.environ
        and int(os.environ["WORLD_SIZE"]) > 1
        and not dist.is_initialized()
    ):
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


class _JointForward(torch.nn.Module):
    """Routes both encoders through one forward() so DDP can sync all their gradients."""

    def __init__(self, model: ICSyncNet):
        super().__init__()
        self.model = model

    def forward(self, visual: torch.Tensor, mels: torch.Tensor):
        return self.model.embed_visual(visual), self.model.embed_audio(mels)


def _wrap(model: ICSyncNet, device: torch.device) -> torch.nn.Module:
    joint = _JointForward(model)
    if not dist.is_initialized():
        return joint
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(joint, device_ids=ids)


def _starting_model(
    last: Path | None,
    state_file: Path,
    init: Path | None,
    config: ModelConfig | str | None,
    device: torch.device,
    log,
) -> tuple[ICSyncNet, dict | None, dict | None]:
    """(model, optimizer state to resume or None, what it was initialised from).

    A resumable run (`last` and its state exist) wins over `init`, which it started from.
    """
    init_info = init_config(init, config)[0] if init is not None else None
    if last is not None and last.exists() and state_file.exists():
        model, sidecar = load_checkpoint(last, device)
        state = torch.load(state_file, weights_only=True)
        log(f"resuming from {last} after epoch {state['epoch']}")
        return model, state, sidecar.get("init", init_info)
    if init is not None:
        model, sidecar = load_checkpoint(find_weights(init), device)
        log(f"starting from {init} ({sidecar['model_id']}, config {model.config.name})")
        return model, None, init_info
    config = config or "small"
    model = ICSyncNet(CONFIGS[config] if isinstance(config, str) else config).to(device)
    return model, None, init_info


def _phase_optimizer(
    model: ICSyncNet, tuning: bool, settings: TrainSettings, state: dict | None
) -> torch.optim.Optimizer:
    """The optimizer of a phase: every weight with DropBlock, or drop-and-tune (SPEC §4):
    DropBlock off and only the BatchNorm parameters trained."""
    model.set_drop_rate(0.0 if tuning else model.config.dropblock_rate)
    for p in model.parameters():
        p.requires_grad_(not tuning)
    params = model.bn_only_parameters() if tuning else list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=settings.tune_lr if tuning else settings.lr)
    if state is not None and state.get("tuning") == tuning:
        optimizer.load_state_dict(state["optimizer"])
    return optimizer


def _step(
    model: ICSyncNet,
    wrapped,
    batch,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    settings: TrainSettings,
    device: torch.device,
) -> tuple[float, float, float]:
    """One optimizer step on the BBCE loss; (loss, mean positive cos, mean negative cos)."""
    visual = augment(batch.visual, generator, settings.jitter).to(device)
    v, a = wrapped(visual, batch.audio.to(device))
    a_pos, a_hard = a[batch.positive], a[batch.hard]
    a_easy = easy_negatives(a_pos, settings.n_easy, batch.group, generator)
    scale = model.log_tau.exp()
    pos = (v * a_pos).sum(-1)
    hard_cos = (v[:, None] * a_hard).sum(-1)
    easy_cos = (v[:, None] * a_easy).sum(-1)
    loss = bbce_loss(pos / scale, hard_cos / scale, easy_cos / scale, settings.lam)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    negatives = torch.cat([hard_cos, easy_cos], 1).detach().mean()
    return float(loss.detach()), float(pos.detach().mean()), float(negatives)


def _validation(model: ICSyncNet, val_clips: list, device: torch.device) -> dict[str, float]:
    """Offset accuracy on the held-out clips at 5 and 15 frames (none without any)."""
    if not val_clips:
        return {}
    model.eval()
    S = clip_similarities(model, val_clips, device)
    return {
        f"val_acc{length}": accuracy_at(S, length, [0] * len(S))[0] or 0.0 for length in (5, 15)
    }


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for param_group in optimizer.param_groups:
        param_group["lr"] = lr


def _save_state(state_file: Path, epoch: int, tuning: bool, optimizer) -> None:
    """The optimizer state a resumed run needs, written atomically."""
    tmp = state_file.with_suffix(".tmp")
    torch.save({"epoch": epoch, "tuning": tuning, "optimizer": optimizer.state_dict()}, tmp)
    os.replace(tmp, state_file)


def train(
    cache: Path,
    out_dir: Path,
    config: ModelConfig | str,
    settings: TrainSettings,
    *,
    device: torch.device,
    resume: bool = True,
    log=print,
    init: Path | None = None,
    clips: list[ClipRef] | None = None,
) -> Path:
    """Train (or resume) and return the final checkpoint path in out_dir.

    init: start from these IC-SyncNet weights (fine-tune / warm start): the model, its config
    and every tensor (BatchNorm statistics and log τ included) are the checkpoint's; a
    `config` naming another size is refused (None = take the checkpoint's). A resumable run
    in out_dir wins over init (it started from init already).
    clips: train on exactly these cached clips (default: every clip in the cache).
    """
    rank, world, local_rank = _distributed()
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    torch.manual_seed(settings.seed + rank)
    out_dir.mkdir(parents=True, exist_ok=True)
    only = None if clips is None else {(c.root, c.path) for c in clips}
    cached = load_cache(cache, only)
    if only is not None and len(cached) < len(only):
        log(f"{len(only) - len(cached)} listed clips are not in the cache (failed to decode?)")
    train_clips, val_clips = split_clips(cached, settings.val_fraction)
    if not train_clips:
        raise ValueError(f"{cache}: no cached training clips (run with the video folders first)")
    last = out_dir / "last.safetensors"
    state_file = out_dir / "train_state.pt"
    model, state, init_info = _starting_model(
        last if resume else None, state_file, init, config, device, log
    )
    start_epoch = state["epoch"] if state else 0
    trained_on = provenance.training_record(
        [c.synthetic for c in train_clips], init_info, len(val_clips)
    )
    notes = {"trained_on": trained_on, **({"init": init_info} if init_info else {})}
    log(f"training on {len(train_clips)} clips ({len(val_clips)} held out): {trained_on['data']}")
    crop_hw = (model.config.crop_height, model.config.crop_width)
    if tuple(train_clips[0].crops.shape[1:3]) != crop_hw:
        raise ValueError(
            f"{cache}: holds {train_clips[0].crops.shape[1]}x{train_clips[0].crops.shape[2]} crops "
            f"but the {model.config.name} model takes {crop_hw[0]}x{crop_hw[1]}; use another cache"
        )
    sampler = WindowSampler(
        train_clips, settings.n_hard, settings.seed * 1000 + rank + start_epoch, settings.run_length
    )
    generator = torch.Generator().manual_seed(settings.seed * 7919 + rank + start_epoch)
    local_batch = max(2, settings.batch_size // world)  # the global batch is split over ranks
    per_epoch = settings.steps_per_epoch or max(1, sampler.total_windows // settings.batch_size)
    total_epochs = settings.epochs + settings.tune_epochs
    optimizer = None
    phase = None
    for epoch in range(start_epoch, total_epochs):
        tuning = epoch >= settings.epochs
        if phase != tuning:  # (re)build the optimizer when the phase starts
            phase = tuning
            optimizer = _phase_optimizer(model, tuning, settings, state)
            wrapped = _wrap(model, device)
        model.train()
        meters = {"loss": 0.0, "pos": 0.0, "neg": 0.0}
        bar = tqdm(
            range(per_epoch),
            desc=f"epoch {epoch + 1}/{total_epochs}{' tune' if tuning else ''}",
            disable=rank != 0,
            leave=False,
        )
        for step in bar:
            if settings.cosine and not tuning:
                progress = (epoch * per_epoch + step) / (settings.epochs * per_epoch)
                _set_lr(optimizer, settings.lr * 0.5 * (1 + math.cos(math.pi * progress)))
            batch = sampler.batch(local_batch)
            loss, pos, neg = _step(model, wrapped, batch, optimizer, generator, settings, device)
            meters["loss"] += loss
            meters["pos"] += pos
            meters["neg"] += neg
            n = step + 1
            bar.set_postfix(
                loss=f"{meters['loss'] / n:.3f}",
                tau=f"{model.tau:.3f}",
                pos=f"{meters['pos'] / n:.2f}",
                neg=f"{meters['neg'] / n:.2f}",
            )
        if rank == 0:
            summary = {k: v / per_epoch for k, v in meters.items()}
            summary |= _validation(model, val_clips, device)
            log(
                f"epoch {epoch + 1}/{total_epochs}{' (tune)' if tuning else ''}: "
                + ", ".join(f"{k} {v:.3f}" for k, v in summary.items())
                + f", tau {model.tau:.4f}"
            )
            save_checkpoint(model, last, {"epoch": epoch + 1, "tuning": tuning, **summary, **notes})
            _save_state(state_file, epoch + 1, tuning, optimizer)
        if dist.is_initialized():
            dist.barrier()
    final = out_dir / f"icsyncnet-{model.config.name}.safetensors"
    if rank == 0:
        save_checkpoint(
            model,
            final,
            {
                "epochs": settings.epochs,
                "tune_epochs": settings.tune_epochs,
                "settings": asdict(settings),
                "trained_clips": len(train_clips),
                "held_out_clips": len(val_clips),
                **notes,
            },
        )
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return final
