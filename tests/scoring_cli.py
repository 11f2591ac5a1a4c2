"""`synccurate score` as a user runs it, judged by the table it writes (shared by several tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.io.media import write_clip
from synccurate.training import synth


def run_score(paths, out: Path, *extra: str, detector: str = "none", workers: int | str = 0):
    """The CliRunner result of `synccurate score PATHS -o OUT …` (in this process)."""
    paths = paths if isinstance(paths, list | tuple) else [paths]
    args = ["score", *map(str, paths), "-o", str(out), "--workers", str(workers)]
    args += ["--no-progress", "--face-detector", detector, *extra]
    return CliRunner().invoke(app, args)


def score_table(paths, out: Path, *extra: str, **options) -> pd.DataFrame:
    """Score, insist on success, and return the written table (latest row per clip) by path."""
    from synccurate.store.readers import read_scores

    result = run_score(paths, out, *extra, **options)
    assert result.exit_code == 0, result.output
    return read_scores(out).set_index("path")


def synth_with(path: Path, *, seconds: float, seed: int, offset: int = 0, frames=None, audio=None):
    """A synthetic clip whose frames and/or audio were edited by the callables given."""
    images, samples, truth = synth.synth_arrays(seconds=seconds, seed=seed, offset_frames=offset)
    images = images if frames is None else frames(images.copy())
    samples = samples if audio is None else audio(samples.copy())
    path.parent.mkdir(parents=True, exist_ok=True)
    write_clip(path, images, samples)
    return truth


def blank(start: int, stop: int):
    """Frames start…stop-1 replaced by plain grey: the face has left the picture."""

    def edit(images: np.ndarray) -> np.ndarray:
        images[start:stop] = 128
        return images

    return edit
