"""Peak RSS of the `synccurate score` driver process, local vs `--executor ray`.

With `--executor ray` the model actors prepare, embed and write: the driver holds
neither crops nor activations. Each side runs in a fresh process; the figure is that
process's own peak (Ray's processes are not counted: they are the cluster's).

    python benchmarks/driver_memory.py --clips 36 --seconds 4
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

KIB = 1024


def peak_of(args: list[str]) -> tuple[float, float]:
    """(peak RSS MB, wall s) of one `score` run in a child that reports its own peak."""
    code = (
        "import resource, sys, time\n"
        "from synccurate.cli import app\n"
        "start = time.perf_counter()\n"
        "try:\n"
        f"    app({args!r}, standalone_mode=False)\n"
        "finally:\n"
        "    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "    print(f'PEAK {peak} {time.perf_counter() - start}', file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    line = next(x for x in done.stderr.splitlines() if x.startswith("PEAK "))
    _, peak_kib, wall = line.split()
    return int(peak_kib) / KIB, float(wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=36)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--model-actors", type=int, default=2)
    options = parser.parse_args()
    from synccurate.training import synth

    with tempfile.TemporaryDirectory() as temp:
        clips = Path(temp) / "clips"
        synth.synth_dataset(clips, n=options.clips, seconds=options.seconds, seed=1, workers=2)
        common = ["score", str(clips), "--face-detector", "none", "--no-progress"]
        sides = {
            "local, --workers 0": ["--workers", "0"],
            "local, --workers 2": ["--workers", "2"],
            f"ray, {options.model_actors} model actors": [
                "--executor",
                "ray",
                "--workers",
                "2",
                "--model-actors",
                str(options.model_actors),
            ],  # fmt: skip
        }
        print(f"{options.clips} synthetic clips of {options.seconds:g} s, bundled model")
        for index, (name, extra) in enumerate(sides.items()):
            peak, wall = peak_of([*common, "-o", f"{temp}/out{index}", *extra])
            print(f"{name:28s} driver peak RSS {peak:7.0f} MB   wall {wall:6.1f} s")


if __name__ == "__main__":
    main()
