"""Sync maps of single clips (`synccurate plot`): each clip scored as `score` scores it, drawn.

The numbers drawn are the ones `score` writes: the speaker's face track, the face mask
applied. A map of synthetic-only weights on a real clip says in its title that it means
nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from synccurate.curate import plot
from synccurate.io.inputs import ClipRef
from synccurate.models import provenance
from synccurate.models.base import SyncModel
from synccurate.models.sync import MAX_OFFSET
from synccurate.pipeline import batching, driver, prepare
from synccurate.pipeline.run import DETECT_EVERY


@dataclass(frozen=True)
class SyncMap:
    """One clip's map: the PNG written, or the status of a clip that could not be scored."""

    ref: ClipRef
    status: str
    error: str | None = None
    target: Path | None = None  # the PNG, for a clip with status ok
    offset_frames: int | None = None
    meaningless: bool | None = None  # synthetic-only weights on a real clip


def draw_sync_maps(
    model: SyncModel,
    refs: list[ClipRef],
    out_dir: Path,
    *,
    device: torch.device,
    detector: str = "auto",
    detect_every: int = DETECT_EVERY,
    max_offset: int = MAX_OFFSET,
) -> Iterator[SyncMap]:
    """Score each clip and draw its map into out_dir/<path with / as __>.syncmap.png."""
    model.to(device)
    trained_on = provenance.of_model(model)["data"]
    batch = batching.default_batch_size(model, device)
    for clip in prepare.prepare_clips(refs, model.recipe, detector, detect_every=detect_every):
        if clip.status != "ok":
            yield SyncMap(clip.ref, clip.status, clip.error)
            continue
        (scored,) = driver.score_clip_faces(model, [clip], batch, device, max_offset)
        metrics = scored.columns
        name = Path(clip.ref.path).with_suffix("").as_posix().replace("/", "__")
        target = out_dir / f"{name}.syncmap.png"
        title = f"{clip.ref.path} ({model.model_id})"
        meaningless = provenance.mismatch(trained_on, clip.synthetic)
        if meaningless:
            title += " — SYNTHETIC-ONLY WEIGHTS ON A REAL CLIP: MEANINGLESS"
        plot.plot_sync_map(scored.similarity.cpu().numpy(), metrics, title, target, scored.timeline)
        yield SyncMap(clip.ref, clip.status, None, target, metrics["offset_frames"], meaningless)
