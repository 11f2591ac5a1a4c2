"""synccurate vs upstream syncnet_python, side by side: wall time, peak memory, numbers.

Upstream is run as people run it, one `run.sh` call per clip (../shared/anchors); synccurate
scores the same clips in one `score` call. Both are timed by /usr/bin/time -v, whose peak
RSS is the largest single process of the tree. With the SyncNet v2 model both load the same
weights file, so offsets and confidences must agree too.

    python benchmarks/anchor_compare.py                       # SyncNet v2, the 224² clips
    python benchmarks/anchor_compare.py --model icsyncnet     # the bundled model
    python benchmarks/anchor_compare.py --copies 34           # ~100 clips (copies)
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RUN_SH = SHARED / "anchors" / "syncnet_python" / "run.sh"
V2_WEIGHTS = SHARED / "fixtures" / "syncnet_v2" / "syncnet_v2_random.model"
FACE_CLIPS = sorted((SHARED / "fixtures" / "real").glob("vox_*.mp4"))  # the 224² face crops


def _time_v(stderr: str) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) from /usr/bin/time -v output."""
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", stderr)
    hours, minutes, seconds = (float(g) if g else 0.0 for g in wall.groups())
    rss_kb = float(re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr).group(1))
    return hours * 3600 + minutes * 60 + seconds, rss_kb / 1024


def run_anchor(clip: Path) -> dict:
    out = subprocess.run(["bash", str(RUN_SH), str(clip)], capture_output=True, text=True)
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    found = dict(re.findall(r"(\w+)=(\S+)", last))
    if "wall_s" not in found:
        raise RuntimeError(f"{clip}: run.sh failed: {out.stderr.strip()[-300:]}")
    return {k: float(v) for k, v in found.items()}


def run_synccurate(folder: Path, out: Path, model: str, workers: int) -> tuple[float, float]:
    weights = (
        ["--model", "syncnet-v2", "--weights", str(V2_WEIGHTS)] if model != "icsyncnet" else []
    )
    command = [
        "/usr/bin/time",
        "-v",
        str(Path(sys.executable).with_name("synccurate")),
        "score",
        str(folder),
        "-o",
        str(out),
        "--face-detector",
        "none",
        "--workers",
        str(workers),
        "--no-progress",
        *weights,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"synccurate score failed: {done.stderr.strip()[-500:]}")
    return _time_v(done.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["syncnet-v2", "icsyncnet"], default="syncnet-v2")
    parser.add_argument("--copies", type=int, default=1, help="copies of each 224² clip")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument(
        "--anchor-sample",
        type=int,
        default=3,
        help="upstream runs to time (its cost per clip is then scaled to all clips)",
    )
    args = parser.parse_args()
    if not FACE_CLIPS or not RUN_SH.is_file():
        sys.exit(f"needs {RUN_SH} and the 224² clips in {SHARED / 'fixtures' / 'real'}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clips"
        folder.mkdir()
        for copy in range(args.copies):
            for clip in FACE_CLIPS:
                shutil.copy(clip, folder / f"{clip.stem}_{copy:03d}{clip.suffix}")
        clips = sorted(folder.iterdir())
        ours_wall, ours_rss = run_synccurate(folder, Path(tmp) / "scores", args.model, args.workers)
        table = pd.read_parquet(Path(tmp) / "scores").set_index("path")
        anchors = {clip.name: run_anchor(clip) for clip in clips[: args.anchor_sample]}
    per_clip = sum(a["wall_s"] for a in anchors.values()) / len(anchors)
    anchor_wall = per_clip * len(clips)
    anchor_rss = max(a["peak_rss_mb"] for a in anchors.values())
    print(f"{len(clips)} clips, model {args.model}, synccurate --workers {args.workers}")
    print(f"  upstream run.sh per clip: {per_clip:.1f} s (mean of {len(anchors)} runs)")
    speedup, memory = anchor_wall / ours_wall, ours_rss / anchor_rss
    print(f"  wall: upstream {anchor_wall:.1f} s, synccurate {ours_wall:.1f} s: {speedup:.1f}x")
    print(f"  peak RSS: upstream {anchor_rss:.0f} MB, synccurate {ours_rss:.0f} MB: {memory:.2f}")
    if args.model == "syncnet-v2":
        print("  numbers (same weights): clip, upstream offset / conf, synccurate offset / lse_c")
        for name, anchor in anchors.items():
            row = table.loc[name]
            print(
                f"    {name}: {anchor['offset']:+.0f} / {anchor['conf']:.4f}   "
                f"{row['offset_frames']:+d} / {row['lse_c']:.4f}"
            )


if __name__ == "__main__":
    main()
