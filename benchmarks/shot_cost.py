"""What shot detection costs next to scoring, on the shared real clips (prints a table).

    python benchmarks/shot_cost.py [--clips DIR] [--runs 2] [--budget 0.10]

The claim to check: finding shot cuts (`faces.shots.ShotDetector`, PySceneDetect's content
detector on the face detection pass's small frames) costs at most 10 % of the scoring time.

- scoring: `synccurate score CLIPS --workers 0` with `--shot-detector none` and with
  `--shot-detector content`, everything else the same (default face detector), into a fresh
  folder each run; the best of `--runs` wall times of each.
- detector alone: each clip decoded at the detection pass's size (longest side at most
  `locate_faces`' detect_size), in the pass's chunks, kept in memory; then only
  `ShotDetector.add` is timed (best of `--runs`). The ratio of that to the scoring time
  without shots is the cost, PASS when at most `--budget`.
- half size: the same frames shrunk to half their side (cv2.resize, INTER_AREA, the resize
  timed too) before `add`, a way to make it cheaper; whether the cuts of the synthetic raw
  video of tests/test_raw_to_clips.py are still found at their frames is printed as well.

The machine's load average is printed: other work on the machine inflates every number.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from synccurate.faces import extract
from synccurate.faces.shots import ShotDetector
from synccurate.io import media

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "fixtures" / "real"
DETECT_SIZE = inspect.signature(extract.locate_faces).parameters["detect_size"].default  # px
CHUNK_FRAMES = inspect.signature(extract.locate_faces).parameters["chunk_frames"].default
SHOT_DETECTOR = "content"
BUDGET = 0.10  # shot detection may cost this share of the scoring time
HALF = 0.5  # side scale of the cheaper variant
CUT_TOLERANCE = 1  # frames: a cut found this close to the true one counts as found

sys.path.insert(0, str(ROOT / "benchmarks"))
from timed import run_timed  # noqa: E402


def detection_size(info: media.MediaInfo) -> tuple[int, int]:
    """(H, W) of the face detection pass's frames, as `extract._detect_all` computes them."""
    height, width = media.frame_size(info)
    scale = min(1.0, DETECT_SIZE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def decode_chunks(path: Path) -> list[np.ndarray]:
    """The clip's 25-fps frames at detection size, in the detection pass's chunks."""
    info = media.probe(path)
    size = detection_size(info)
    return list(media.iter_video_frames(info, size=size, chunk_frames=CHUNK_FRAMES))


def shrink(chunk: np.ndarray, scale: float) -> np.ndarray:
    """Every frame of a chunk resized to `scale` of its side (area averaging)."""
    height, width = chunk.shape[1:3]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.stack([cv2.resize(frame, size, interpolation=cv2.INTER_AREA) for frame in chunk])


def detect_cuts(
    chunks: list[np.ndarray], prepare: Callable[[np.ndarray], np.ndarray]
) -> tuple[float, list[int]]:
    """(seconds spent preparing and adding the chunks, the cuts found)."""
    shots = ShotDetector(SHOT_DETECTOR)
    start = time.perf_counter()
    for chunk in chunks:
        shots.add(prepare(chunk))
    return time.perf_counter() - start, shots.cuts()


def best_detector_seconds(
    clips: dict[str, list[np.ndarray]], prepare: Callable[[np.ndarray], np.ndarray], runs: int
) -> dict[str, float]:
    """Per clip, the best of `runs` timings of the detector over all its frames."""
    return {
        name: min(detect_cuts(chunks, prepare)[0] for _ in range(runs))
        for name, chunks in clips.items()
    }


def best_scoring_seconds(clips_dir: Path, shot_detector: str, runs: int) -> dict:
    """The best of `runs` runs of `synccurate score` (wall and CPU s), fresh output each."""
    timings = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as out:
            command = [sys.executable, "-m", "synccurate", "score", str(clips_dir)]
            command += ["-o", str(Path(out) / "scores"), "--workers", "0", "--no-progress"]
            command += ["--shot-detector", shot_detector]
            timings.append(run_timed(command, what=f"score --shot-detector {shot_detector}"))
    return min(timings, key=lambda timing: timing["wall_s"])


def synthetic_cuts_check(work: Path) -> str:
    """Cuts found at full and half size on the raw video of tests/test_raw_to_clips.py."""
    sys.path.insert(0, str(ROOT / "tests"))
    import test_raw_to_clips as raw

    path = work / "talk.mp4"
    raw.write_raw_video(path)
    chunks = decode_chunks(path)
    found = {
        label: detect_cuts(chunks, prepare)[1]
        for label, prepare in (("full", lambda c: c), ("half", lambda c: shrink(c, HALF)))
    }

    def verdict(cuts: list[int]) -> str:
        hit = len(cuts) == len(raw.CUTS) and all(
            abs(a - b) <= CUT_TOLERANCE for a, b in zip(cuts, raw.CUTS, strict=True)
        )
        return "all found" if hit else "MISSED/EXTRA"

    lines = [f"synthetic raw video: true cuts {list(raw.CUTS)}"]
    lines += [f"  {label:4s} size: {cuts} ({verdict(cuts)})" for label, cuts in found.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=REAL)
    parser.add_argument("--runs", type=int, default=2, help="best of this many runs")
    parser.add_argument("--budget", type=float, default=BUDGET)
    args = parser.parse_args()
    paths = sorted(p for p in args.clips.iterdir() if p.suffix.lower() in media.VIDEO_EXTENSIONS)
    if not paths:
        sys.exit(f"no video clips in {args.clips}")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")

    clips = {path.name: decode_chunks(path) for path in paths}
    full = best_detector_seconds(clips, lambda chunk: chunk, args.runs)
    half = best_detector_seconds(clips, lambda chunk: shrink(chunk, HALF), args.runs)
    print(f"\n{'clip':22s} {'frames':>6s} {'size':>9s} {'add s':>7s} {'half s':>7s}")
    for name, chunks in clips.items():
        height, width = chunks[0].shape[1:3]
        frames = sum(len(chunk) for chunk in chunks)
        print(f"{name:22s} {frames:6d} {width:4d}x{height:<4d} {full[name]:7.3f} {half[name]:7.3f}")
    detector_s, half_s = sum(full.values()), sum(half.values())
    print(f"{'all':22s} {sum(len(c) for cs in clips.values() for c in cs):6d} {'':9s} ", end="")
    print(f"{detector_s:7.3f} {half_s:7.3f}")

    without = best_scoring_seconds(args.clips, "none", args.runs)
    with_shots = best_scoring_seconds(args.clips, SHOT_DETECTOR, args.runs)
    print(f"\n{'score run':28s} {'wall s':>7s} {'CPU s':>7s}")
    print(f"{'--shot-detector none':28s} {without['wall_s']:7.2f} {without['cpu_s']:7.2f}")
    print(f"{'--shot-detector content':28s} {with_shots['wall_s']:7.2f} {with_shots['cpu_s']:7.2f}")

    def judged(seconds: float) -> str:
        share = seconds / without["wall_s"]
        return (
            f"{share:6.1%}  {'PASS' if share <= args.budget else 'FAIL'} (budget {args.budget:.0%})"
        )

    print("\nshare of the scoring time (--shot-detector none, wall):")
    print(f"  ShotDetector.add, detection size:   {judged(detector_s)}")
    print(f"  ShotDetector.add, half size:        {judged(half_s)}")
    print(
        f"  score content - score none (noisy): {judged(with_shots['wall_s'] - without['wall_s'])}"
    )
    with tempfile.TemporaryDirectory() as work:
        print("\n" + synthetic_cuts_check(Path(work)))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
