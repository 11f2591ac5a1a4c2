"""The standard accuracy protocol (SPEC §8): offset accuracy of sub-clips of 5 … 15 frames."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import torch

from synccurate.audio import WINDOW_FRAMES
from synccurate.models.base import SyncModel
from synccurate.score import discover, prepare_clips, similarity_matrices
from synccurate.sync import MAX_OFFSET

CLIP_LENGTHS = (5, 7, 9, 11, 13, 15)  # frames per sub-clip
TOLERANCE = 1  # frames: a prediction within ±1 of the truth counts as correct


def accuracy_at(
    matrices: list[torch.Tensor], length: int, true_offsets: list[int]
) -> tuple[float, int]:
    """Fraction of all `length`-frame sub-clips whose argmax offset is within ±1 of the truth.

    A sub-clip of L frames holds L - 4 visual windows; S is averaged over them.
    """
    correct = total = 0
    span = length - WINDOW_FRAMES + 1
    for S, truth in zip(matrices, true_offsets, strict=True):
        S = torch.as_tensor(S).float().cpu()
        if S.shape[0] < span:
            continue
        cumulative = torch.cat([torch.zeros(1, S.shape[1]), S.cumsum(0)])
        means = cumulative[span:] - cumulative[:-span]  # [n_subclips, 2K+1]
        predicted = means.argmax(1) - (S.shape[1] - 1) // 2
        correct += int(((predicted - truth).abs() <= TOLERANCE).sum())
        total += len(predicted)
    return (correct / total if total else None), total


def load_truth(paths: list[Path], manifest: Path | None) -> tuple[list, list[int]]:
    """Clips and their true offsets: from a manifest (true_offset_frames) or 0 (in-sync)."""
    if manifest is None:
        refs = discover(paths)
        return refs, [0] * len(refs)
    table = pd.read_parquet(manifest)
    root = manifest.resolve().parent
    refs = discover([root / p for p in table["path"]])
    return refs, [int(x) for x in table["true_offset_frames"]]


def evaluate(
    model: SyncModel,
    refs: list,
    true_offsets: list[int],
    *,
    device: torch.device,
    detector: str = "none",
    batch_size: int | None = None,
    workers: int = 0,
) -> dict:
    """Accuracy table for every clip length, with the number of sub-clips behind each figure."""
    batch_size = batch_size or model.batch_size
    truth = {ref: offset for ref, offset in zip(refs, true_offsets, strict=True)}
    prepared = prepare_clips(refs, model.recipe, detector, "cpu", workers)
    model.to(device)
    matrices, offsets, failed, group = [], [], [], []

    def embed_group() -> None:  # only S is kept: memory stays bounded by one group of clips
        matrices.extend(similarity_matrices(model, group, batch_size, device))
        offsets.extend(truth[c.ref] for c in group)
        group.clear()

    for clip in prepared:
        if clip.status != "ok":
            failed.append(clip)
            continue
        group.append(clip)
        if len(group) == 32:
            embed_group()
    if group:
        embed_group()
    accuracy, counts = {}, {}
    for length in CLIP_LENGTHS:
        accuracy[str(length)], counts[str(length)] = accuracy_at(matrices, length, offsets)
    return {
        "accuracy": accuracy,
        "n_subclips": counts,
        "n_clips": len(matrices),
        "failed_clips": [c.error for c in failed],
        "model": model.model_id,
        "max_offset": MAX_OFFSET,
        "tolerance_frames": TOLERANCE,
    }


def write_json_atomic(data: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
