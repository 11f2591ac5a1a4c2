"""`synccurate train` and `synccurate eval` as library calls: the inputs read and checked, then
the work. What the user sees (warnings, log lines, the accuracy table) stays with the caller,
fed through callbacks."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from synccurate.curate.synthetic_scores import refuse_synthetic_scores
from synccurate.models.base import SyncModel
from synccurate.models.icsyncnet import CONFIGS, ModelConfig
from synccurate.pipeline import batching
from synccurate.pipeline.run import synthetic_weights_warning
from synccurate.training import cliplist, evaluate, train


def train_on_clips(
    videos: Sequence[Path],
    out_dir: Path,
    settings: train.TrainSettings,
    *,
    cache: Path | None = None,
    config: str | None = None,
    init: Path | None = None,
    detector: str = "none",
    workers: int = 0,
    device: str = "auto",
    resume: bool = True,
    allow_synthetic_weights: bool = False,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] = print,
) -> Path | None:
    """List the clips, cache them (rank 0), then train IC-SyncNet on them.

    cache: default out_dir/cache. config: a name of `CONFIGS` (default: small, or the
    config of the `init` weights). Returns the trained weights file, or None when no epoch
    was asked for or in a process other than rank 0 (torchrun: rank 0 builds the cache and
    speaks for the run). Raises ValueError, FileNotFoundError or WeightsError first.
    """
    if config is not None and config not in CONFIGS:
        raise ValueError(f"--config {config}: choose one of {', '.join(CONFIGS)}")
    cache = cache or out_dir / "cache"
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if init is not None:
        _, model_config = train.init_config(init, config)
    else:
        model_config = CONFIGS[config] if config else ModelConfig()
    listed = cliplist.resolve(list(videos))
    for path, table in listed.tables:
        refuse_synthetic_scores(table, path, allow_synthetic_weights, warn)
    warning = out_of_sync_warning(listed)
    if warning:
        warn(warning)
    if rank0:
        added = train.build_cache(
            listed.refs, cache, model_config, detector=detector, workers=workers, log=log
        )
        log(f"{len(listed.clips)} clips listed; cache {cache}: {added} clips added")
    if settings.epochs + settings.tune_epochs == 0:
        return None
    final = train.train(
        cache,
        out_dir,
        model_config if init is None else config,
        settings,
        device=batching.resolve_device(device),
        resume=resume,
        log=log,
        init=init,
        clips=listed.refs,
    )
    return final if rank0 else None


def out_of_sync_warning(listed: cliplist.ClipList) -> str | None:
    """Clips a table says are out of sync teach a wrong pairing: say how many (fix them first)."""
    off = [c for c in listed.clips if c.offset is not None and abs(c.offset) > 1]
    if not off:
        return None
    return (
        f"WARNING: {len(off)} of {len(listed.clips)} listed clips have |offset| > 1 in their "
        f"table (e.g. {off[0].ref.path}: {off[0].offset:+d}); training takes every clip as in "
        "sync: run `synccurate fix` on them and train on its output folder"
    )


def evaluate_clips(
    model: SyncModel,
    paths: Sequence[Path],
    manifest: Path | None = None,
    *,
    shifts: tuple[int, ...] | None = None,
    device: str = "auto",
    detector: str = "none",
    batch_size: int | None = None,
    workers: int = 0,
    output: Path | None = None,
    warn: Callable[[str], None] = print,
) -> dict:
    """The accuracy results of `model` on the clips (`evaluate.evaluate`), also written as
    JSON to `output` when given.

    shifts: default `evaluate.REAL_CLIP_SHIFTS` for clips and tables, 0 alone with a
    manifest (its clips carry their own known offsets). Raises FileNotFoundError,
    ValueError or KeyError for clips that cannot be evaluated.
    """
    if shifts is None:
        shifts = (0,) if manifest is not None else evaluate.REAL_CLIP_SHIFTS
    refs, offsets = evaluate.load_truth(list(paths), manifest)
    warning = synthetic_weights_warning(model, refs)
    if warning:
        warn(warning)
    results = evaluate.evaluate(
        model,
        refs,
        offsets,
        device=batching.resolve_device(device),
        detector=detector,
        batch_size=batch_size,
        workers=workers,
        shifts=shifts,
    )
    if output:
        evaluate.write_json_atomic(results, output)
    return results
