"""synccurate vs upstream syncnet_python, side by side: wall time, CPU time, peak memory, numbers.

Upstream is run as people run it, one `run.sh` call per clip (../shared/anchors); synccurate
scores the same clips in one `score` call. Both are timed by /usr/bin/time -v, whose peak
RSS is the largest single process of the tree and whose CPU time (user + sys) counts the
waited-for children too (ffmpeg, worker processes). With the SyncNet v2 model both load the
same weights file, so offsets and confidences must agree too.

On a shared machine wall time follows the load: each run prints the load average, and
`--repeat` alternates the two sides so that they see the same conditions. CPU time is the
steadier figure; `--threads 1` (OMP_NUM_THREADS for both sides) removes the CPU that idle
OpenMP threads burn spinning when cores are contended.

    python benchmarks/anchor_compare.py                       # SyncNet v2, the 224² clips
    python benchmarks/anchor_compare.py --repeat 3            # three alternating rounds
    python benchmarks/anchor_compare.py --model icsyncnet     # the bundled model
    python benchmarks/anchor_compare.py --copies 4            # 12 clips (copies)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
from timed import run_timed

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RUN_SH = SHARED / "anchors" / "syncnet_python" / "run.sh"
V2_WEIGHTS = SHARED / "fixtures" / "syncnet_v2" / "syncnet_v2_random.model"
FACE_CLIPS = sorted((SHARED / "fixtures" / "real").glob("vox_*.mp4"))  # the 224² face crops


def _load() -> str:
    return "{:.1f}/{:.1f}/{:.1f}".format(*os.getloadavg())


def run_anchor(clip: Path, env: dict) -> dict:
    load = _load()
    out = subprocess.run(["bash", str(RUN_SH), str(clip)], capture_output=True, text=True, env=env)
    found: dict[str, str] = {}
    for line in out.stdout.splitlines():
        if line.startswith(("anchor ", "anchor_detail ")):
            found.update(re.findall(r"(\w+)=([^\s\"]+)", line))
    if "wall_s" not in found:
        raise RuntimeError(f"{clip}: run.sh failed: {out.stderr.strip()[-300:]}")
    return {
        "wall_s": float(found["wall_s"]),
        "cpu_s": float(found["user_s"]) + float(found["sys_s"]),
        "peak_rss_mb": float(found["peak_rss_mb"]),
        "offset": float(found["offset"]),
        "conf": float(found["conf"]),
        "load": load,
    }


def run_synccurate(folder: Path, out: Path, args, env: dict) -> dict:
    weights = (
        ["--model", "syncnet-v2", "--weights", str(V2_WEIGHTS)] if args.model != "icsyncnet" else []
    )
    batch = ["--batch-size", str(args.batch_size)] if args.batch_size else []
    command = [
        sys.executable,
        "-m",
        "synccurate",
        "score",
        str(folder),
        "-o",
        str(out),
        "--face-detector",
        "none",
        "--workers",
        str(args.workers),
        "--no-progress",
        *weights,
        *batch,
    ]
    load = _load()
    shutil.rmtree(out, ignore_errors=True)  # each round scores every clip afresh
    return run_timed(command, env, "synccurate score") | {"load": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["syncnet-v2", "icsyncnet"], default="syncnet-v2")
    parser.add_argument("--copies", type=int, default=1, help="copies of each 224² clip")
    parser.add_argument("--workers", default="auto", help="synccurate's --workers")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the model's")
    parser.add_argument("--repeat", type=int, default=1, help="alternating rounds of both sides")
    parser.add_argument(
        "--threads", type=int, default=None, help="OMP_NUM_THREADS for both sides (default: unset)"
    )
    parser.add_argument(
        "--anchor-sample",
        type=int,
        default=3,
        help="upstream runs per round (its cost per clip is then scaled to all clips)",
    )
    args = parser.parse_args()
    if not FACE_CLIPS or not RUN_SH.is_file():
        sys.exit(f"needs {RUN_SH} and the 224² clips in {SHARED / 'fixtures' / 'real'}")
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    ours_runs, anchor_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clips"
        folder.mkdir()
        for copy in range(args.copies):
            for clip in FACE_CLIPS:
                shutil.copy(clip, folder / f"{clip.stem}_{copy:03d}{clip.suffix}")
        clips = sorted(folder.iterdir())
        # The first copy of each clip first: upstream times different clips, not one clip thrice.
        sample = sorted(clips, key=lambda c: (c.stem.rsplit("_", 1)[1], c.name))
        sample = sample[: args.anchor_sample]
        for round_ in range(args.repeat):
            ours = run_synccurate(folder, Path(tmp) / "scores", args, env)
            ours_runs.append(ours)
            print(
                f"round {round_ + 1}: synccurate {len(clips)} clips: wall {ours['wall_s']:.1f} s, "
                f"CPU {ours['cpu_s']:.1f} s, peak RSS {ours['peak_rss_mb']:.0f} MB "
                f"(load {ours['load']})",
                flush=True,
            )
            anchors = {clip.name: run_anchor(clip, env) for clip in sample}
            anchor_runs.append(anchors)
            for name, a in anchors.items():
                print(
                    f"round {round_ + 1}: upstream {name}: wall {a['wall_s']:.1f} s, "
                    f"CPU {a['cpu_s']:.1f} s, peak RSS {a['peak_rss_mb']:.0f} MB "
                    f"(load {a['load']})",
                    flush=True,
                )
        table = pd.read_parquet(Path(tmp) / "scores").set_index("path")
    n = len(clips)
    threads = args.threads or "default"
    print(
        f"\n{n} clips, model {args.model}, synccurate --workers {args.workers} "
        f"--batch-size {args.batch_size or 'default'}, threads {threads}, {args.repeat} round(s)"
    )
    print("  per clip (median over rounds; upstream: mean of its runs in a round):")
    for label, key in (("wall", "wall_s"), ("CPU", "cpu_s")):
        ours = statistics.median(r[key] for r in ours_runs) / n
        up = statistics.median(statistics.mean(a[key] for a in r.values()) for r in anchor_runs)
        print(f"    {label:5s} upstream {up:6.2f} s, synccurate {ours:6.2f} s: {up / ours:.2f}x")
    anchor_rss = max(a["peak_rss_mb"] for r in anchor_runs for a in r.values())
    ours_rss = max(r["peak_rss_mb"] for r in ours_runs)
    print(
        f"  peak RSS: upstream {anchor_rss:.0f} MB, synccurate {ours_rss:.0f} MB: "
        f"{ours_rss / anchor_rss:.2f} of upstream"
    )
    if args.model == "syncnet-v2":
        print("  numbers (same weights): clip, upstream offset / conf, synccurate offset / lse_c")
        for name, anchor in anchor_runs[-1].items():
            row = table.loc[name]
            print(
                f"    {name}: {anchor['offset']:+.0f} / {anchor['conf']:.4f}   "
                f"{row['offset_frames']:+d} / {row['lse_c']:.4f}"
            )


if __name__ == "__main__":
    main()
