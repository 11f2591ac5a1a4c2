"""The standard accuracy protocol (SPEC §8): offset accuracy of sub-clips of 5 … 15 frames.

Truth comes from a `synth` manifest (`true_offset_frames`), from a scores / kept table (its
measured `offset_frames`, taken as the truth), or is 0 (folders of in-sync clips, a `fix`
folder). On top of it every clip can be evaluated at known **shifts** of its audio: shifting
by s frames moves the audio windows so that window j holds the sound of frame j + s (the audio
is advanced by s frames, so by SPEC §6 the true offset becomes truth + s). That is done on the
audio window index — S'[t, k] = S[t, k − s], read off one similarity matrix computed over
±(K + max |s|) — so no clip is re-encoded and the new truth is exact. A model biased towards
offset 0 passes shift 0 and fails the others; shift 0 alone is the paper's protocol.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import torch

from synccurate.io.audio import WINDOW_FRAMES
from synccurate.io.inputs import discover
from synccurate.models import provenance
from synccurate.models.base import SyncModel
from synccurate.models.sync import MAX_OFFSET
from synccurate.pipeline.batching import default_batch_size, similarity_matrices
from synccurate.pipeline.prepare import prepare_clips

CLIP_LENGTHS = (5, 7, 9, 11, 13, 15)  # frames per sub-clip
TOLERANCE = 1  # frames: a prediction within ±1 of the truth counts as correct
# Shifts (frames) of the audio windows every clip is evaluated at, unless told otherwise,
# for clips whose truth is not known from a manifest: both signs, near and far, not symmetric.
REAL_CLIP_SHIFTS = (-8, -3, 0, 4, 9)


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


def shifted(similarity: torch.Tensor, shift: int, max_offset: int = MAX_OFFSET) -> torch.Tensor:
    """S' [T, 2K+1] of the clip with its audio windows moved by `shift` frames (+ = advanced,
    the audio leads): S'[t, k] = S[t, k − shift], from S computed over ±(K + |shift|) or more.
    """
    margin = (similarity.shape[1] - 1) // 2 - max_offset
    if abs(shift) > margin:
        raise ValueError(f"shift {shift:+d} needs S over ±{max_offset + abs(shift)} offsets")
    start = margin - shift
    return similarity[:, start : start + 2 * max_offset + 1]


def load_truth(paths: list[Path], manifest: Path | None) -> tuple[list, list[int]]:
    """Clips and their true offsets: from a manifest (true_offset_frames), from a scores or
    kept table (offset_frames, taken as the truth), else 0 (in-sync folders, fix folders)."""
    if manifest is None:
        from synccurate.training import cliplist

        listed = cliplist.resolve(paths).clips
        return [c.ref for c in listed], [c.offset or 0 for c in listed]
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
    shifts: tuple[int, ...] = (0,),
    max_offset: int = MAX_OFFSET,
) -> dict:
    """Accuracy table for every clip length, with the number of sub-clips behind each figure.

    Every clip is evaluated at every shift in `shifts` (see the module docstring); a
    (clip, shift) pair whose shifted truth lies outside ±max_offset is skipped and counted.
    `accuracy` pools all shifts; `accuracy_by_shift` has one table per shift.
    """
    batch_size = batch_size or default_batch_size(model, device)
    shifts = tuple(dict.fromkeys(int(s) for s in shifts)) or (0,)
    margin = max(abs(s) for s in shifts)
    truth = {ref: offset for ref, offset in zip(refs, true_offsets, strict=True)}
    prepared = prepare_clips(refs, model.recipe, detector, "cpu", workers)
    model.to(device)
    matrices, offsets, failed, group, names, synth_flags = [], [], [], [], [], []

    def embed_group() -> None:  # only S is kept: memory stays bounded by one group of clips
        matrices.extend(similarity_matrices(model, group, batch_size, device, max_offset + margin))
        offsets.extend(truth[c.ref] for c in group)
        names.extend(c.ref.path for c in group)
        synth_flags.extend(c.synthetic for c in group)
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
    pooled_S, pooled_truth, by_shift, skipped = [], [], {}, []
    per_clip = {name: [0, 0] for name in names}  # correct, total over every length and shift
    for shift in shifts:
        pairs = []
        for S, true, name in zip(matrices, offsets, names, strict=True):
            if abs(true + shift) > max_offset:  # the search could not find it
                skipped.append(f"{name}: truth {true:+d} shifted by {shift:+d}")
            else:
                pairs.append((shifted(S, shift, max_offset), true + shift, name))
        S_s, truth_s = [p[0] for p in pairs], [p[1] for p in pairs]
        pooled_S += S_s
        pooled_truth += truth_s
        by_shift[str(shift)] = _table(S_s, truth_s)
        for S, true, name in pairs:
            for length in CLIP_LENGTHS:
                accuracy, n = accuracy_at([S], length, [true])
                per_clip[name][0] += round((accuracy or 0) * n)
                per_clip[name][1] += n
    pooled = _table(pooled_S, pooled_truth)
    trained_on = provenance.of_model(model)["data"]
    non_synth = sum(flag is False for flag in synth_flags)
    return {
        "accuracy": pooled["accuracy"],
        "n_subclips": pooled["n_subclips"],
        "shifts": list(shifts),
        "accuracy_by_shift": {s: t["accuracy"] for s, t in by_shift.items()},
        "n_subclips_by_shift": {s: t["n_subclips"] for s, t in by_shift.items()},
        "accuracy_by_clip": {n: (c / t if t else None) for n, (c, t) in per_clip.items()},
        "skipped_shifts": skipped,
        "n_clips": len(matrices),
        "failed_clips": [c.error for c in failed],
        "model": model.model_id,
        "weights_trained_on": trained_on,
        "non_synth_clips": non_synth,
        "synthetic_weights_on_real": trained_on == provenance.SYNTHETIC and non_synth > 0,
        "max_offset": max_offset,
        "tolerance_frames": TOLERANCE,
    }


def _table(matrices: list, truth: list[int]) -> dict:
    accuracy, counts = {}, {}
    for length in CLIP_LENGTHS:
        accuracy[str(length)], counts[str(length)] = accuracy_at(matrices, length, truth)
    return {"accuracy": accuracy, "n_subclips": counts}


def write_json_atomic(data: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
