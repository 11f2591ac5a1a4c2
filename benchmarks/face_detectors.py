"""Face detector quality and cost on the real clips annotated by hand (prints; asserts nothing).

    python benchmarks/face_detectors.py [--every 1-10] [--clips DIR]

For each available backend and each `--detect-every` value, the clip goes through
what `extract_mouths` does (pass 1 at detect_size 320, the detector on every n-th
frame, `track_faces` linking, interpolating and smoothing) and the main track's
box at each annotated frame (tests/face_boxes.json: brows to chin, ear to ear) is
compared with the hand-drawn box:

- miss: annotated frames with no face, or a box of IoU < 0.5 with the annotation;
- IoU: mean box IoU over the annotated frames that have a box;
- centre: mean distance of the box centres over the annotated face side;
- size: median ratio of the box side (longest) to the annotated side (box convention);
- miss*, IoU*: the same after mapping the backend's boxes onto the annotation's
  convention (detectors box the forehead too): one offset of the centre and one
  scale of width and height per backend, the medians over the annotated frames at
  detect-every 1, applied to every box;
- face: fraction of all frames with a face (the clip's face_ratio);
- jitter (per backend): median frame-to-frame move of the raw box centre (largest
  box of consecutive frames, before any smoothing) over the box side;
- CPU: CPU seconds per second of video of pass 1: detector (this process, one
  thread, as in a `score` worker) and decoding (ffmpeg), the two added up.

The detector runs once on every frame; detect-every n then keeps every n-th
frame's detections (frame index % n == 0, as extract_mouths picks them) and adds
the CPU of those frames only. face-alignment runs only from a cached S3FD
weights file (it is never downloaded here).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np

from synccurate.faces import detectors, extract, tracks
from synccurate.io import media

ROOT = Path(__file__).resolve().parents[1]
ANNOTATIONS = ROOT / "tests" / "face_boxes.json"
REAL = ROOT.parent / "shared" / "fixtures" / "real"
BACKENDS = ("opencv", "centerface", "face-alignment")
MISS_IOU = 0.5


class TimedDetector:
    """Wraps a backend; records the CPU seconds of each frame it is shown."""

    def __init__(self, detector: detectors.FaceDetector):
        self.detector, self.name, self.cpu = detector, detector.name, []

    def detect(self, frames: np.ndarray) -> list[list[detectors.Box]]:
        start = time.process_time()
        found = self.detector.detect(frames)
        self.cpu += [(time.process_time() - start) / len(frames)] * len(frames)
        return found


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(
        0.0, min(a[3], b[3]) - max(a[1], b[1])
    )
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def make(name: str) -> detectors.FaceDetector | str:
    """The backend, or why it is skipped."""
    if name == "face-alignment" and not detectors.s3fd_weights_path().is_file():
        return f"skipped: S3FD weights not cached at {detectors.s3fd_weights_path()}"
    try:
        detector = detectors.make_detector(name)
    except (ImportError, ValueError) as error:
        return f"skipped: {type(error).__name__}: {error}"
    if detector.name != name:
        return f"skipped: make_detector fell back to {detector.name}"
    return detector


def detect_clip(
    detector: detectors.FaceDetector, clip: Path
) -> tuple[list, np.ndarray, float, float]:
    """Detections of every frame, their CPU seconds, ffmpeg's CPU seconds, the duration."""
    info = media.probe(clip)
    timed = TimedDetector(detector)
    children = os.times()
    detections = extract._detect_all(info, timed, 320, 1, 64)
    after = os.times()
    decode_cpu = (after.children_user - children.children_user) + (
        after.children_system - children.children_system
    )
    return detections, np.array(timed.cpu), decode_cpu, len(detections) / media.VIDEO_FPS


def convention(runs: dict, annotations: dict) -> np.ndarray:
    """Median (centre x, centre y offsets in box sides; width, height scales) box -> annotation."""
    fits = []
    for name, (detections, *_) in runs.items():
        track = tracks.track_faces(detections, len(detections))
        for t, truth in annotations[name].items():
            box, truth = track.boxes[int(t)], np.array(truth, dtype=float)
            if not np.isnan(box).any():
                size, side = box[2:] - box[:2], max(box[2:] - box[:2])
                offset = ((truth[:2] + truth[2:]) - (box[:2] + box[2:])) / 2 / side
                fits.append([*offset, *((truth[2:] - truth[:2]) / size)])
    return np.median(fits, axis=0) if fits else np.array([0.0, 0.0, 1.0, 1.0])


def jitter(runs: dict) -> float:
    """Median centre move between consecutive frames' largest raw boxes, in box sides."""
    moves = []
    for detections, *_ in runs.values():
        for before, after in zip(detections[:-1], detections[1:], strict=True):
            if before and after:
                a, b = (
                    np.array(max(d, key=lambda f: tracks._area(np.array(f[:4])))[:4])
                    for d in (before, after)
                )
                moves.append(
                    np.hypot(*((b[:2] + b[2:]) - (a[:2] + a[2:])) / 2) / max(a[2:] - a[:2])
                )
    return float(np.median(moves)) if moves else float("nan")


def mapped(box: np.ndarray, fit: np.ndarray) -> np.ndarray:
    centre = (box[:2] + box[2:]) / 2 + fit[:2] * max(box[2:] - box[:2])
    half = (box[2:] - box[:2]) * fit[2:] / 2
    return np.concatenate([centre - half, centre + half])


def score_every(runs: dict, annotations: dict, every: int, fit: np.ndarray) -> dict[str, float]:
    """Quality and cost of one backend at one detect-every over all annotated clips."""
    ious, centres, sizes, misses, face, detect_cpu, decode_cpu, seconds = [], [], [], 0, [], 0, 0, 0
    fitted_ious, fitted_misses = [], 0
    for name, (detections, cpu, decode, duration) in runs.items():
        n = len(detections)
        kept = [d if t % every == 0 else None for t, d in enumerate(detections)]
        start = time.process_time()
        track = tracks.track_faces(kept, n)
        detect_cpu += cpu[::every].sum() + time.process_time() - start
        decode_cpu += decode
        seconds += duration
        face.append(track.has_face.mean())
        for t, truth in annotations[name].items():
            truth, box = np.array(truth, dtype=float), track.boxes[int(t)]
            if np.isnan(box).any():
                misses += 1
                fitted_misses += 1
                continue
            fitted_ious.append(iou(mapped(box, fit), truth))
            fitted_misses += fitted_ious[-1] < MISS_IOU
            overlap = iou(box, truth)
            misses += overlap < MISS_IOU
            side = max(truth[2] - truth[0], truth[3] - truth[1])
            ious.append(overlap)
            centres.append(np.hypot(*((box[:2] + box[2:]) - (truth[:2] + truth[2:])) / 2) / side)
            sizes.append(max(box[2] - box[0], box[3] - box[1]) / side)
    total = sum(len(a) for a in annotations.values() if isinstance(a, dict))
    return {
        "miss": misses / total,
        "iou": float(np.mean(ious)) if ious else float("nan"),
        "centre": float(np.mean(centres)) if centres else float("nan"),
        "size": float(np.median(sizes)) if sizes else float("nan"),
        "miss*": fitted_misses / total,
        "iou*": float(np.mean(fitted_ious)) if fitted_ious else float("nan"),
        "face": float(np.mean(face)),
        "detect": detect_cpu / seconds,
        "decode": decode_cpu / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--every", default="1-10", help="detect-every values, e.g. 1-10 or 1,4")
    parser.add_argument("--clips", type=Path, default=REAL, help="folder of the annotated clips")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    args = parser.parse_args()
    low, _, high = args.every.partition("-")
    everies = range(int(low), int(high) + 1) if high else [int(e) for e in args.every.split(",")]
    cv2.setNumThreads(1)  # as in a `score` worker: one core per process
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    annotations = {k: v for k, v in json.loads(ANNOTATIONS.read_text()).items() if k[0] != "_"}
    clips = {name: args.clips / name for name in annotations if (args.clips / name).is_file()}
    if not clips:
        raise SystemExit(f"no annotated clip found in {args.clips}")
    annotations = {name: annotations[name] for name in clips}
    frames = sum(len(v) for v in annotations.values())
    print(f"{len(clips)} clips, {frames} annotated frames; miss = no face or IoU < {MISS_IOU}")
    print(
        f"{'backend':<15}{'every':>5}{'miss':>7}{'IoU':>6}{'centre':>8}{'size':>6}"
        f"{'miss*':>7}{'IoU*':>6}{'face':>7}{'CPU detect':>11}{'+decode':>8}{'=total':>7}"
    )
    for name in args.backends.split(","):
        detector = make(name)
        if isinstance(detector, str):
            print(f"{name:<15}{detector}")
            continue
        runs = {clip: detect_clip(detector, path) for clip, path in clips.items()}
        fit = convention(runs, annotations)
        for every in everies:
            r = score_every(runs, annotations, every, fit)
            print(
                f"{name:<15}{every:>5}{r['miss']:>7.1%}{r['iou']:>6.2f}{r['centre']:>8.3f}"
                f"{r['size']:>6.2f}{r['miss*']:>7.1%}{r['iou*']:>6.2f}{r['face']:>7.1%}"
                f"{r['detect']:>11.2f}{r['decode']:>8.2f}{r['detect'] + r['decode']:>7.2f}"
            )
        print(
            f"{name:<15}convention: centre {fit[0]:+.2f}, {fit[1]:+.2f} box sides, "
            f"width x{fit[2]:.2f}, height x{fit[3]:.2f}; raw jitter {jitter(runs):.3f} box sides"
        )


if __name__ == "__main__":
    main()
