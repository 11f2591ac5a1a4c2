"""Step 2 of scoring: embed the windows of many clips in shared model batches, then S.

Each visual and audio window passes through its encoder exactly once; batches cross clip
boundaries so that a GPU stays busy with short clips. The batch size defaults to the
model's own, bounded on CPU by the memory one batch's activations take.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Protocol

import numpy as np
import torch

from synccurate.faces.tracks import runs
from synccurate.io import audio
from synccurate.models.base import SyncModel
from synccurate.models.sync import MAX_OFFSET, SMOOTH_RADIUS

CPU_BATCH_BYTES = 1 << 30  # activations a default model batch may hold on CPU: 1 GiB


def _chunks(lengths: list[int], batch_size: int) -> Iterator[list[tuple[int, int, int]]]:
    """Batches of (item, start, stop) spans filling batch_size across items."""
    batch: list[tuple[int, int, int]] = []
    room = batch_size
    for item, length in enumerate(lengths):
        start = 0
        while start < length:
            stop = min(length, start + room)
            batch.append((item, start, stop))
            room -= stop - start
            start = stop
            if room == 0:
                yield batch
                batch, room = [], batch_size
    if batch:
        yield batch


def embed_batched(
    encode: Callable[[torch.Tensor], torch.Tensor],
    make_windows: Callable[[int, int, int], torch.Tensor],
    lengths: list[int],
    batch_size: int,
    device: torch.device,
) -> list[torch.Tensor]:
    """Embed every window of several clips exactly once, in batches that span clips."""
    outputs: list[list[torch.Tensor]] = [[] for _ in lengths]
    for batch in _chunks(lengths, batch_size):
        parts = [make_windows(item, start, stop) for item, start, stop in batch]
        windows = parts[0] if len(parts) == 1 else torch.cat(parts)  # no copy for one clip
        embedded = encode(windows.to(device, non_blocking=True)).float()
        offset = 0
        for item, start, stop in batch:
            outputs[item].append(embedded[offset : offset + stop - start])
            offset += stop - start
    return [torch.cat(parts) if parts else torch.empty(0) for parts in outputs]


class WindowSource(Protocol):
    """The windows of a clip, or of one chunk of a long one, that a model batch reads.

    A whole clip (`prepare.PreparedClip`) starts at window 0 and its features at frame 0;
    a chunk (`streaming.WindowChunk`) holds the crops of its own windows and the audio
    features of a stretch around them, placed on the clip's time line by these numbers.
    """

    crops: np.ndarray | None  # uint8 [frames, H, W, 3] from `first_window` on (None: no
    # window of it is scored, `windows_to_score`)
    features: np.ndarray  # audio features from video frame `feature_start` on
    n_windows: int  # visual windows here: first_window … first_window + n_windows - 1
    first_window: int
    feature_start: int
    clip_windows: int | None  # windows of the whole clip (None: more than this chunk reaches)

    def windows_to_score(self, reach: int) -> np.ndarray | None:
        """Its windows whose S rows are needed: those within `reach` windows of one whose
        five frames show the face (`near_faces`; None: all of them)."""


def window_reach(model: SyncModel) -> int:
    """How many windows on each side a window's per-window numbers read (SPEC §7's
    smoothing; SyncNet v2's fconf median filter)."""
    return getattr(model, "window_reach", SMOOTH_RADIUS)


def scored_runs(needed: np.ndarray | None, n_windows: int) -> list[tuple[int, int]]:
    """[start, stop) runs of the windows whose S rows are computed (None: all). Every
    number of a face window reads only rows within `window_reach` of it, so a raw video's
    many short face tracks cost what their faces cover, not the whole clip each."""
    if needed is None:
        return [(0, n_windows)] if n_windows else []
    return runs(needed)


def similarity_matrices(
    model: SyncModel,
    clips: list[WindowSource],
    batch_size: int,
    device: torch.device,
    max_offset: int = MAX_OFFSET,
    precision: str = "auto",
) -> list[torch.Tensor]:
    """S for each clip; visual and audio windows of all clips share model batches.

    `precision` (PRECISIONS) is the encoders' arithmetic; S itself is always float32.
    """
    recipe = model.recipe
    reach = window_reach(model)
    # one item per run of windows to score: (clip, its first window, its windows)
    items = [
        (c, start, stop - start)
        for c, clip in enumerate(clips)
        for start, stop in scored_runs(clip.windows_to_score(reach), clip.n_windows)
    ]
    crops = {c: torch.from_numpy(clips[c].crops) for c in {c for c, *_ in items}}
    T = [length for *_, length in items]

    def visual(item: int, start: int, stop: int) -> torch.Tensor:
        c, first, _ = items[item]
        return recipe.visual_windows(crops[c], first + start, first + stop)

    def audio_(item: int, start: int, stop: int) -> torch.Tensor:
        c, first, _ = items[item]
        clip = clips[c]
        window = clip.first_window + first + start - max_offset - clip.feature_start
        return recipe.audio_windows(clip.features, window, stop - start)

    autocast = _autocast(precision, device)
    with torch.inference_mode():
        with autocast:
            v = embed_batched(model.embed_visual, visual, T, batch_size, device)
            # Audio windows may be far smaller than visual ones (SyncNet v2: 1 KB against
            # 3 MB); a model can ask for larger audio batches, which use threads better.
            audio_batch = max(batch_size, getattr(model, "audio_batch_size", 0))
            a = embed_batched(
                model.embed_audio, audio_, [t + 2 * max_offset for t in T], audio_batch, device
            )
        if getattr(model, "zero_audio_outside_clip", False):
            a = [
                _outside_zeroed(ai, clips[c], first, max_offset)
                for ai, (c, first, _) in zip(a, items, strict=True)
            ]
        runs = [model.similarity(vi, ai, max_offset) for vi, ai in zip(v, a, strict=True)]
    return _assembled(clips, items, runs, max_offset)


def _assembled(
    clips: list[WindowSource], items: list, runs: list[torch.Tensor], max_offset: int
) -> list[torch.Tensor]:
    """S [n_windows, 2K+1] of each clip from its runs; NaN in the rows not computed."""
    matrices: list[torch.Tensor | None] = [None] * len(clips)
    for (c, first, length), S in zip(items, runs, strict=True):
        n = clips[c].n_windows
        if length == n:
            matrices[c] = S  # the whole clip in one run: no copy
            continue
        if matrices[c] is None:
            matrices[c] = torch.full((n, 2 * max_offset + 1), torch.nan, device=S.device)
        matrices[c][first : first + length] = S
    return [
        torch.full((clip.n_windows, 2 * max_offset + 1), torch.nan) if S is None else S
        for clip, S in zip(clips, matrices, strict=True)
    ]


# The encoders' arithmetic: "auto" is float16 autocast on CUDA and float32 on CPU (upstream
# parity); "bf16" is bfloat16 autocast, 1.5-2.4x faster on this CPU (docs/models.md).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _autocast(precision: str, device: torch.device):
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def _outside_zeroed(
    audio: torch.Tensor, clip: WindowSource, first: int, max_offset: int
) -> torch.Tensor:
    """Audio embeddings [T + 2K, D] of a run from the clip's window `first` on, with those
    of windows outside the clip set to zero (SyncNet v2 compares with zero vectors there,
    as upstream pads)."""
    window = torch.arange(len(audio)) + clip.first_window + first - max_offset  # each row's
    outside = window < 0
    if clip.clip_windows is not None:
        outside |= window >= clip.clip_windows
    return audio.masked_fill(outside[:, None].to(audio.device), 0.0)


def default_batch_size(model: SyncModel, device: torch.device) -> int:
    """The model's own batch size: on CPU its `cpu_batch_size`, no larger than
    CPU_BATCH_BYTES of activations allow.

    On CPU, batches past a few dozen windows are no faster and only hold memory: the paper
    IC-SyncNet at 256 windows a batch peaked at 6.9 GB and was slower than at 64. On a GPU
    the model's `batch_size` stands (its memory is sized with --batch-size).
    """
    if device.type != "cpu":
        return model.batch_size
    own = getattr(model, "cpu_batch_size", model.batch_size)
    if not isinstance(getattr(model, "network", None), torch.nn.Module):
        return own  # a stand-in model: no network to measure
    return max(1, min(own, CPU_BATCH_BYTES // activation_bytes_per_window(model)))


def activation_bytes_per_window(model: SyncModel) -> int:
    """Bytes one visual window's activations take in the visual encoder's busiest layer.

    Measured by running one blank window with hooks on every leaf module: the largest
    input + output of a single layer. It is a floor of the working set (a residual
    branch keeps one more tensor alive), which CPU_BATCH_BYTES leaves room for.
    """
    recipe = model.recipe
    frames = torch.zeros((audio.WINDOW_FRAMES, *recipe.crop_hw, 3), dtype=torch.uint8)
    busiest = 0

    def measure(module, inputs, output) -> None:
        nonlocal busiest
        tensors = [*inputs, output]
        size = sum(t.nelement() * t.element_size() for t in tensors if torch.is_tensor(t))
        busiest = max(busiest, size)

    leaves = [m for m in model.network.modules() if not list(m.children())]
    hooks = [leaf.register_forward_hook(measure) for leaf in leaves]
    try:
        with torch.inference_mode():
            model.embed_visual(recipe.visual_windows(frames, 0, 1))
    finally:
        for hook in hooks:
            hook.remove()
    return max(1, busiest)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return torch.device(name)
