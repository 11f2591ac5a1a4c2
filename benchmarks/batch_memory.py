"""Peak memory and speed of `score` on CPU by model batch size (prints figures).

    python benchmarks/batch_memory.py [--config paper] [--clips 8] [--batches 256 64 16]

A folder of short synthetic clips is scored with a random IC-SyncNet of the given config
(timing and memory do not depend on the weight values), once per --batch-size and once
with the default, which on CPU is bounded by `batching.CPU_BATCH_BYTES` of activations.
Each run is one `synccurate score` process timed by /usr/bin/time -v (peak RSS of the
largest process); `--workers 0` keeps decoding in that process, so it is all counted.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from timed import run_timed

from synccurate.models.icsyncnet import CONFIGS, ICSyncNet, ICSyncNetModel, save_checkpoint
from synccurate.pipeline import batching
from synccurate.pipeline import driver as score


def run_score(clips: Path, weights: Path, out: Path, batch: int | None) -> dict:
    """wall_s, cpu_s and peak_rss_mb of one score run."""
    command = [
        *(sys.executable, "-m", "synccurate", "score", str(clips), "-o", str(out)),
        *("--weights", str(weights), "--face-detector", "none", "--workers", "0"),
        "--no-progress",
        *(["--batch-size", str(batch)] if batch else []),
    ]
    return run_timed(command, what="synccurate score")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="paper")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--batches", type=int, nargs="*", default=[256, 64, 16])
    args = parser.parse_args()

    network = ICSyncNet(CONFIGS[args.config]).eval()
    model = ICSyncNetModel(network, args.config)
    per_window = batching.activation_bytes_per_window(model)
    default = score.default_batch_size(model, torch.device("cpu"))
    print(
        f"config {args.config}: {per_window / 2**20:.1f} MB of activations per window "
        f"(busiest layer); default CPU batch {default} "
        f"(budget {batching.CPU_BATCH_BYTES / 2**30:.0f} GiB)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        weights = save_checkpoint(network, folder / "weights" / f"{args.config}.safetensors")
        size = max(96, CONFIGS[args.config].crop_width)
        subprocess.run(
            [
                *(sys.executable, "-m", "synccurate", "synth", str(folder / "clips")),
                *("--n", str(args.clips), "--seconds", str(args.seconds), "--size", str(size)),
            ],
            check=True,
            capture_output=True,
        )
        print(f"{args.clips} clips of {args.seconds:g} s, {size}² px, --workers 0, CPU")
        for batch in [*args.batches, None]:
            run = run_score(folder / "clips", weights, folder / f"out-{batch}", batch)
            label = f"{batch}" if batch else f"default ({default})"
            print(
                f"  --batch-size {label:>13}: wall {run['wall_s']:6.1f} s, "
                f"peak RSS {run['peak_rss_mb']:6.0f} MB"
            )


if __name__ == "__main__":
    main()
