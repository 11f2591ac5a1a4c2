"""Drift and steps on long synthetic clips: what `score --timeline` measures against the truth.

Makes three 4-minute clips with `synth` (audio drifting by +40 and -25 ms a minute, and one
whose offset steps from 0 to +6 frames at 2:00), scores them with the bundled weights and
prints, per clip, the measured drift against the true one, the largest error of a stretch
offset against the true offset at the stretch's middle, and the steps found.

    python benchmarks/drift_check.py [--seconds 240] [--keep DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from synccurate.io.audio import VIDEO_FPS
from synccurate.store.readers import read_scores, read_timeline
from synccurate.training import synth

MS_PER_FRAME = 1000 / VIDEO_FPS
CLIPS = {  # name: (drift ms/min, offset step (s, frames) or None)
    "drift_plus40.mp4": (40.0, None),
    "drift_minus25.mp4": (-25.0, None),
    "step_0_to_6.mp4": (0.0, (120.0, 6)),
}


def true_offset(drift: float, step, seconds: np.ndarray) -> np.ndarray:
    offset = drift * seconds / 60 / MS_PER_FRAME
    if step is not None:
        offset = offset + np.where(seconds >= step[0], step[1], 0)
    return offset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--keep", type=Path, help="Write the clips and tables here.")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="drift-check-"))
    clips = work / "clips"
    for seed, (name, (drift, step)) in enumerate(CLIPS.items()):
        if not (clips / name).exists():
            synth.synth_clip(
                clips / name,
                seconds=args.seconds,
                seed=seed,
                drift_ms_per_min=drift,
                offset_step=step,
            )
    command = [sys.executable, "-m", "synccurate", "score", str(clips), "-o", str(work / "scores")]
    command += ["--timeline", str(work / "timeline"), "--face-detector", "none", "--no-progress"]
    subprocess.run(command, check=True, capture_output=True)
    rows = read_scores(work / "scores").set_index("path")
    stretches = read_timeline(work / "timeline")
    print(
        f"{'clip':20} {'drift true':>10} {'measured':>9} {'error':>7} {'residual':>9} "
        f"{'worst stretch':>13} {'steps at (s)':>14}"
    )
    for name, (drift, step) in CLIPS.items():
        row = rows.loc[name]
        mine = stretches[(stretches["path"] == name) & stretches["offset_frames"].notna()]
        middles = ((mine["start_s"] + mine["end_s"]) / 2).to_numpy()
        worst = np.abs(mine["offset_frames"].to_numpy() - true_offset(drift, step, middles)).max()
        measured = row["drift_ms_per_min"]
        error = f"{(measured - drift) / drift:+.0%}" if drift else f"{measured - drift:+.1f}"
        steps = ", ".join(f"{s:.0f}" for s in row["offset_step_at_s"]) or "none"
        print(
            f"{name:20} {drift:>10.1f} {measured:>9.2f} {error:>7} "
            f"{row['drift_residual_ms']:>8.1f}ms {worst:>10.2f} fr {steps:>14}"
        )
    print(f"(tables in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
