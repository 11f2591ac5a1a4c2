"""Memory and speed of `score` on one long recording: does either grow with the clip's length?

    python benchmarks/long_recordings.py [--minutes 5 20 60] [--v2-minutes 5 20]
        [--models icsyncnet syncnet-v2] [--extra-args "--chunk-seconds 20"] [--work DIR]
        [--source DIR]

For each model and length, one `synccurate score CLIP --face-detector none --workers 0` call
on one pre-cropped synthetic clip runs under /usr/bin/time; the table gives its peak RSS, its
wall and CPU time and the seconds of video it scored per wall second. The bars (the "flat
memory" issue): peak RSS at every length within 15 % (largest / smallest <= 1.15), and the
speed at the longest length at least 80 % of the speed at the shortest. A `score` call spends
a fixed time (imports, model load) whatever the clip's length, which flatters long clips; so
the speed the bar is judged on is net of it, measured once per model on a short clip, and the
raw figure is printed next to it. Wall time is only meaningful on an otherwise idle machine:
video seconds per CPU second, also printed, tell a slow code path from a busy machine.

Clips are made once and kept in --work (default: synccurate-long-recordings in the temp
folder): a `--base-seconds` synth clip (96 px face crops) looped by ffmpeg with stream copy,
so a 60-minute clip costs seconds. SyncNet v2 runs with the random-weights fixture (its cost
is the real model's; its numbers mean nothing), by default at 5 and 20 minutes only: on two
CPU cores it scores ~3.5 s of video a second. `--source` scores with another copy of the
package (e.g. `git archive HEAD` unpacked), for a fixed "before" while the tree changes.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from timed import run_timed

from synccurate.io import media
from synccurate.io.audio import VIDEO_FPS
from synccurate.store.readers import read_scores
from synccurate.training import synth

SECONDS_PER_MINUTE = 60
MAX_RSS_SPREAD = 1.15  # largest / smallest peak RSS over the lengths (the issue's ±15 %)
MIN_SPEED_KEPT = 0.80  # speed at the longest length / speed at the shortest
BASE_CLIP_SECONDS = 120.0  # the synth clip that is looped into long ones
# Short enough that its whole wall time counts as the call's fixed cost: the 2 s it also
# scores make the fixed cost too large by < 1 s, which only makes the speed bar stricter.
FIXED_COST_CLIP_SECONDS = 2.0
BASE_CLIP_SEED = 0
REPO_ROOT = Path(__file__).resolve().parents[1]
V2_RANDOM_WEIGHTS = REPO_ROOT.parent / "shared/fixtures/syncnet_v2/syncnet_v2_random.model"
SHORTEST_WALL_S = 1e-3  # a floor for wall time net of the fixed cost (no division by zero)


@dataclass(frozen=True)
class Measurement:
    """One `score` call: what it cost and how much video it scored."""

    model: str
    minutes: float
    peak_rss_mb: float
    wall_s: float
    cpu_s: float  # user + system: unlike wall time, barely moved by other load on the machine
    video_s: float
    status: str


def model_args(model: str, v2_weights: Path) -> list[str]:
    """`score` options selecting `model` (the bundled IC-SyncNet needs none)."""
    if model == "icsyncnet":
        return []
    if model == "syncnet-v2":
        return ["--model", "syncnet-v2", "--weights", str(v2_weights)]
    raise ValueError(f"unknown model {model!r}: icsyncnet or syncnet-v2")


def looped_clip(base: Path, seconds: float, folder: Path) -> Path:
    """`base` repeated to `seconds` by stream copy (moov first), made once and reused.

    Written under a temporary name and renamed, so an interrupted run never leaves a short
    clip that a rerun would take for a finished one.
    """
    path = folder / f"{base.stem}_looped_{seconds:g}s.mp4"
    if path.exists():
        return path
    partial = path.with_name(f".partial.{path.name}")
    media.run_ffmpeg(
        ["-y", "-stream_loop", "-1", "-i", str(base), "-t", f"{seconds:g}"]
        + ["-c", "copy", "-movflags", "+faststart", str(partial)],
        what=f"looping {base.name}",
    )
    partial.rename(path)
    return path


def base_clip(folder: Path, seconds: float) -> Path:
    """The synth clip every long clip is looped from (made once per --work folder)."""
    path = folder / f"synth_seed{BASE_CLIP_SEED}_{seconds:g}s.mp4"
    if not path.exists():
        synth.synth_clip(path, seconds=seconds, seed=BASE_CLIP_SEED)
    return path


def score_once(
    clip: Path,
    model: str,
    minutes: float,
    score_args: list[str],
    work: Path,
    source: Path | None,
) -> Measurement:
    """Run one `score` call on `clip` into a fresh folder; its cost and its row.

    With `source` (a folder holding a `synccurate` package) the call runs that code instead
    of the installed one: a fixed "before" snapshot while the working tree is being edited.
    """
    scores = work / "scores" / f"{model}_{clip.stem}"
    shutil.rmtree(scores, ignore_errors=True)  # `score` resumes: a kept folder would skip
    command = [sys.executable, "-m", "synccurate", "score", str(clip), "-o", str(scores)]
    command += ["--face-detector", "none", "--workers", "0", "--no-progress", *score_args]
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    timing = run_timed(command, env=env, what=f"score {clip.name} with {model}")
    row = read_scores(scores).iloc[0]
    return Measurement(
        model=model,
        minutes=minutes,
        peak_rss_mb=timing["peak_rss_mb"],
        wall_s=timing["wall_s"],
        cpu_s=timing["cpu_s"],
        video_s=0.0 if pd.isna(row["n_frames"]) else float(row["n_frames"]) / VIDEO_FPS,
        status=str(row["status"]),
    )


def speed(run: Measurement, fixed_cost_s: float) -> float:
    """Seconds of video scored per wall second, with `fixed_cost_s` taken off the wall time."""
    return run.video_s / max(run.wall_s - fixed_cost_s, SHORTEST_WALL_S)


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def report(model: str, runs: list[Measurement], fixed_cost_s: float) -> None:
    """The table of one model's lengths, then its two ratios against the bars."""
    print(f"\n{model}  (fixed cost of a score call: {fixed_cost_s:.1f} s wall)")
    print(
        f"{'minutes':>7} {'status':>8} {'peak RSS MB':>11} {'wall s':>8} {'CPU s':>8} "
        f"{'video s/wall s':>14} {'net of fixed':>12} {'video s/CPU s':>13}"
    )
    for run in runs:
        print(
            f"{run.minutes:>7g} {run.status:>8} {run.peak_rss_mb:>11.0f} {run.wall_s:>8.1f} "
            f"{run.cpu_s:>8.1f} {speed(run, 0.0):>14.1f} {speed(run, fixed_cost_s):>12.1f} "
            f"{run.video_s / run.cpu_s:>13.1f}"
        )
    if len(runs) < 2:
        print("  (one length only: no ratio)")
        return
    rss = [run.peak_rss_mb for run in runs]
    spread = max(rss) / min(rss)
    shortest, longest = min(runs, key=lambda r: r.minutes), max(runs, key=lambda r: r.minutes)

    kept_net = speed(longest, fixed_cost_s) / speed(shortest, fixed_cost_s)
    kept_raw = speed(longest, 0.0) / speed(shortest, 0.0)
    flat = verdict(spread <= MAX_RSS_SPREAD)
    print(f"  peak RSS max/min: {spread:.2f}  (bar <= {MAX_RSS_SPREAD:.2f}) {flat}")
    print(
        f"  speed {longest.minutes:g} min / {shortest.minutes:g} min: net {kept_net:.2f}, "
        f"raw {kept_raw:.2f}  (bar >= {MIN_SPEED_KEPT:.2f} on net) "
        f"{verdict(kept_net >= MIN_SPEED_KEPT)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0, 20.0, 60.0])
    parser.add_argument(
        "--v2-minutes",
        type=float,
        nargs="+",
        default=[5.0, 20.0],
        help="Lengths for syncnet-v2 (slow on CPU).",
    )
    parser.add_argument(
        "--models", nargs="+", default=["icsyncnet", "syncnet-v2"], help="icsyncnet, syncnet-v2"
    )
    parser.add_argument("--v2-weights", type=Path, default=V2_RANDOM_WEIGHTS)
    parser.add_argument(
        "--extra-args", default="", help='More `score` options, one string: "--chunk-seconds 20".'
    )
    parser.add_argument("--base-seconds", type=float, default=BASE_CLIP_SECONDS)
    parser.add_argument("--work", type=Path, help="Clip cache and scores (reused by reruns).")
    parser.add_argument(
        "--source",
        type=Path,
        help="Score with the synccurate package in this folder, e.g. a `git archive HEAD` "
        "snapshot (default: the installed one).",
    )
    args = parser.parse_args()

    work = args.work or Path(tempfile.gettempdir()) / "synccurate-long-recordings"
    clips = work / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    base = base_clip(clips, args.base_seconds)
    extra = shlex.split(args.extra_args)
    print(f"clips in {clips}; score options: --face-detector none --workers 0 {args.extra_args}")
    print(f"synccurate scoring: {args.source or 'installed'}")
    for model in args.models:
        score_args = model_args(model, args.v2_weights) + extra
        lengths = args.v2_minutes if model == "syncnet-v2" else args.minutes
        short = looped_clip(base, FIXED_COST_CLIP_SECONDS, clips)
        fixed_minutes = FIXED_COST_CLIP_SECONDS / SECONDS_PER_MINUTE
        fixed_cost_s = score_once(short, model, fixed_minutes, score_args, work, args.source).wall_s
        runs = []
        for minutes in sorted(lengths):
            clip = looped_clip(base, minutes * SECONDS_PER_MINUTE, clips)
            runs.append(score_once(clip, model, minutes, score_args, work, args.source))
            print(f"  {model} {minutes:g} min: {runs[-1].wall_s:.1f} s", flush=True)
        report(model, runs, fixed_cost_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
