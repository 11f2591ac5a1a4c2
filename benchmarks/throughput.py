"""Scoring throughput and memory figures (prints them; asserts nothing).

    python benchmarks/throughput.py [--clips 8] [--seconds 10] [--long-minutes 10]

1. Seconds of video scored per wall-second on pre-cropped 224² clips with the small
   config, split into audio decode + mel / video decode + crops ("faces") / model.
2. Peak resident memory of `synccurate score` on one long clip (default 10 minutes).
3. Parameter counts of the model configs.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from synccurate.io import media
from synccurate.io.inputs import discover
from synccurate.models.icsyncnet import CONFIGS, ICSyncNet, save_checkpoint
from synccurate.models.weights import count_parameters
from synccurate.pipeline.driver import score_clips
from synccurate.pipeline.executors.local import LocalExecutor
from synccurate.store.parts import open_output
from synccurate.training import synth


def throughput(folder: Path, weights: Path, workers: int, batch_size: int) -> None:
    from synccurate.models import load_model

    model = load_model(None, weights)
    pinned = {"model": model.model_id, "max_offset": 15}
    writer, done = open_output(folder / f"scores_w{workers}", pinned)
    refs = discover([folder / "clips"])
    with writer:
        stats = score_clips(
            refs,
            writer,
            model,
            done=done,
            executor=LocalExecutor(workers),
            device=torch.device("cpu"),
            detector_name="none",
            batch_size=batch_size,
        )
    wall = stats.wall
    print(
        f"workers={workers}: {stats.clips} clips, {stats.video_seconds:.0f} s of video in "
        f"{wall:.1f} s wall → {stats.video_seconds / wall:.1f} s of video per second"
    )
    for stage in ("audio", "faces", "model"):
        busy = stats.seconds[stage]
        rate = stats.video_seconds / max(busy, 1e-9)
        print(f"  {stage:>5}: {busy:6.1f} s busy ({rate:7.1f} s of video per busy second)")


def long_clip_memory(folder: Path, weights: Path, minutes: float) -> None:
    piece = folder / "piece.mp4"
    synth.synth_clip(piece, seconds=20.0, seed=7, size=224)
    loops = max(1, round(minutes * 60 / 20))
    long = folder / "long" / "long.mp4"
    long.parent.mkdir()
    media.run_ffmpeg(["-stream_loop", str(loops - 1), "-i", str(piece), "-c", "copy", str(long)])
    info = media.probe(long)
    command = [
        sys.executable,
        "-m",
        "synccurate",
        "score",
        str(long.parent),
        "-o",
        str(folder / "long.parquet"),
        "--weights",
        str(weights),
        "--workers",
        "0",
        "--face-detector",
        "none",
        "--no-progress",
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"long clip: {info.duration_s / 60:.1f} min 224² → scored in {wall:.0f} s, "
        f"peak RSS {peak_mb:.0f} MB (whole process: Python, torch, model, crops, mel)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--long-minutes", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    for name, config in CONFIGS.items():
        print(f"parameters {name}: {count_parameters(ICSyncNet(config)):,}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # Timing does not depend on the weights' values, only on the config.
        weights = save_checkpoint(ICSyncNet(CONFIGS["small"]), folder / "small")
        synth.synth_dataset(
            folder / "clips", n=args.clips, seconds=args.seconds, seed=5, size=224, workers=2
        )
        for workers in (0, 2):
            throughput(folder, weights, workers, args.batch_size)
        if args.long_minutes > 0:
            long_clip_memory(folder, weights, args.long_minutes)


if __name__ == "__main__":
    main()
