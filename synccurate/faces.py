"""Faces and mouth crops (SPEC §2): detect, keep one smoothed face track, cut the mouth.

Three detector backends share one small interface (`FaceDetector`):

- ``face-alignment``: the S3FD detector of the face-alignment package, alone (no
  landmark network), from a locally cached weights file;
- ``opencv``: Haar cascades shipped with OpenCV, so a fresh offline machine works;
- ``none``: pre-cropped face videos, where the whole frame is the face.

A clip is read twice, both times streamed: a small-frame pass for detection
(only boxes are kept), then a pass that cuts the mouth crops (only the small
crops are kept), so memory stays bounded for long clips.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d, median_filter

from synccurate.audio import VIDEO_FPS
from synccurate.media import MediaError, MediaInfo, frame_size, iter_video_frames

if TYPE_CHECKING:
    from synccurate.models.base import InputRecipe

Box = tuple[float, float, float, float, float]  # x1, y1, x2, y2, score (in the frame's pixels)

DETECTOR_NAMES = ("auto", "face-alignment", "opencv", "none")

S3FD_URL = "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth"
S3FD_SHA256_PREFIX = "619a316812"  # torch.hub's convention: the file name carries its hash prefix
S3FD_DOWNLOAD_TIMEOUT_S = 15.0
S3FD_THRESHOLD = 0.5  # face-alignment's own default score threshold

# Tight crops (the face fills the frame) defeat detectors trained on faces with
# context around them; a black border restores that context.
PAD_FRACTION = 0.25  # of the longest side, on every side

# Haar first searches a grayscale copy whose longest side is 160 px, which finds
# the large faces of talking-head footage at a fraction of the cost, and only where
# that finds nothing the frame as given (extract_mouths' detect_size, 320 px by
# default: faces down to ~10 % of the frame).
OPENCV_COARSE_SIDE = 160  # px
HAAR_WINDOW = 24  # px: the cascades' training window, the smallest face they can see
OPENCV_SCALE_FACTOR = 1.15  # image pyramid step
OPENCV_MIN_NEIGHBORS = 3
OPENCV_MIN_FACE = 0.1  # smallest face, as a fraction of the frame's shorter side

MAX_GAP_FRAMES = VIDEO_FPS // 2  # 12 frames (0.48 s): shorter face gaps are interpolated
LINK_IOU = 0.3  # a box continues a track when it overlaps its last box this much…
LINK_CENTRE = 0.5  # …or its centre is within this fraction of the last box's size
MEDIAN_FRAMES = 5  # frames: removes single-frame box outliers
SMOOTH_SIGMA_FRAMES = 1.5  # frames: Gaussian smoothing of box centre and size

MOUTH_MARGIN = 0.2  # a detected face box is widened by this fraction before cutting
CROP_OVERSAMPLE = 2.0  # the crop pass decodes at >= 2x the pixels the crop needs


class FaceDetector(Protocol):
    """What extract_mouths needs from a backend."""

    name: str

    def detect(self, frames: np.ndarray) -> list[list[Box]]:
        """All faces in each frame of a uint8 RGB batch [n, H, W, 3]."""
        ...


def _pad_width(height: int, width: int) -> int:
    return int(PAD_FRACTION * max(height, width))


class OpenCVDetector:
    """Haar cascades: frontal first, then alt2, then profile (both directions)."""

    name = "opencv"

    def __init__(self) -> None:
        def cascade(file: str) -> cv2.CascadeClassifier:
            classifier = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / file))
            if classifier.empty():
                raise RuntimeError(f"OpenCV cascade {file} could not be loaded")
            return classifier

        self._frontal = [
            cascade("haarcascade_frontalface_default.xml"),
            cascade("haarcascade_frontalface_alt2.xml"),
        ]
        self._profile = cascade("haarcascade_profileface.xml")

    def detect(self, frames: np.ndarray) -> list[list[Box]]:
        return [self._detect_one(frame) for frame in frames]

    def _detect_one(self, frame: np.ndarray) -> list[Box]:
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        longest = max(gray.shape)
        for side in sorted({min(OPENCV_COARSE_SIDE, longest), longest}):
            faces = self._detect_at(gray, side)
            if faces:
                return faces
        return []

    def _detect_at(self, gray: np.ndarray, side: int) -> list[Box]:
        """Faces in `gray` searched on an equalised, padded copy whose longest side is `side`."""
        scale = min(1.0, side / max(gray.shape))
        if scale < 1.0:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        smallest = max(HAAR_WINDOW, int(OPENCV_MIN_FACE * min(gray.shape)))
        pad = _pad_width(*gray.shape)
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        for classifier in self._frontal:
            faces = self._run(classifier, gray, smallest)
            if faces:
                break
        else:
            mirrored = [
                (gray.shape[1] - x - w, y, w, h, n)
                for x, y, w, h, n in self._run(self._profile, cv2.flip(gray, 1), smallest)
            ]
            faces = self._run(self._profile, gray, smallest) + mirrored
        return [
            ((x - pad) / scale, (y - pad) / scale, (x + w - pad) / scale, (y + h - pad) / scale, n)
            for x, y, w, h, n in faces
        ]

    @staticmethod
    def _run(classifier: cv2.CascadeClassifier, gray: np.ndarray, smallest: int) -> list:
        boxes, neighbours = classifier.detectMultiScale2(
            gray,
            scaleFactor=OPENCV_SCALE_FACTOR,
            minNeighbors=OPENCV_MIN_NEIGHBORS,
            minSize=(smallest, smallest),
        )
        return [(*map(float, box), float(n)) for box, n in zip(boxes, neighbours, strict=True)]


class S3FDDetector:
    """face-alignment's S3FD detector on its own, batched, from a local weights file."""

    name = "face-alignment"

    def __init__(self, weights: Path, device: str = "cpu"):
        from face_alignment.detection.sfd.sfd_detector import SFDDetector

        self._sfd = SFDDetector(
            device, path_to_detector=str(weights), filter_threshold=S3FD_THRESHOLD
        )
        self.device = device

    def detect(self, frames: np.ndarray) -> list[list[Box]]:
        import torch

        pad = _pad_width(*frames.shape[1:3])
        padded = np.pad(frames, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        batch = torch.from_numpy(padded).permute(0, 3, 1, 2)  # RGB; S3FD flips to BGR itself
        found = self._sfd.detect_from_batch(batch)
        return [
            [
                (float(x1) - pad, float(y1) - pad, float(x2) - pad, float(y2) - pad, float(score))
                for x1, y1, x2, y2, score in faces
            ]
            for faces in found
        ]


class WholeFrameDetector:
    """Pre-cropped face videos (LRS2/LRS3/VoxCeleb2 style): the frame is the face box."""

    name = "none"

    def detect(self, frames: np.ndarray) -> list[list[Box]]:
        height, width = frames.shape[1:3]
        return [[(0.0, 0.0, float(width), float(height), 1.0)] for _ in frames]


def s3fd_weights_path() -> Path:
    """Where face-alignment caches S3FD: $TORCH_HOME/hub/checkpoints (torch.hub's rule)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(S3FD_URL).name


def _download_s3fd(target: Path) -> str | None:
    """Fetch the S3FD weights in a child process killed after a timeout; None or why not.

    A child process, not a thread: DNS lookups ignore socket timeouts and a
    thread cannot be stopped, so only this bounds the wait for sure.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=target.parent, suffix=".part")
    os.close(fd)
    temp = Path(temp_name)
    fetch = "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])"
    try:
        result = subprocess.run(
            [sys.executable, "-c", fetch, S3FD_URL, temp_name],
            capture_output=True,
            timeout=S3FD_DOWNLOAD_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
            return lines[-1] if lines else f"exit status {result.returncode}"
        if not hashlib.sha256(temp.read_bytes()).hexdigest().startswith(S3FD_SHA256_PREFIX):
            return "checksum mismatch"
        os.replace(temp, target)
        return None
    except subprocess.TimeoutExpired:
        return f"timed out after {S3FD_DOWNLOAD_TIMEOUT_S:.0f} s"
    finally:
        temp.unlink(missing_ok=True)


def make_detector(name: str = "auto", device: str = "cpu") -> FaceDetector:
    """A detector by name; `auto` = face-alignment when its weights are cached, else opencv.

    Only an explicit ``face-alignment`` may try a (bounded) download; whatever
    runs in the end is recorded in the detector's `name`.
    """
    if name not in DETECTOR_NAMES:
        raise ValueError(
            f"unknown face detector {name!r}; choose one of {', '.join(DETECTOR_NAMES)}"
        )
    if name == "none":
        return WholeFrameDetector()
    if name == "opencv":
        return OpenCVDetector()
    weights = s3fd_weights_path()
    if not weights.is_file():
        if name == "auto":
            return OpenCVDetector()
        why = _download_s3fd(weights)
        if why is not None:
            print(
                f"face-alignment S3FD weights not found at {weights} and could not be "
                f"downloaded ({why}); falling back to opencv",
                file=sys.stderr,
            )
            return OpenCVDetector()
    try:
        return S3FDDetector(weights, device=str(device))
    except Exception as error:  # a corrupt or incompatible file must not stop a run
        print(
            f"face-alignment S3FD weights at {weights} could not be loaded "
            f"({type(error).__name__}: {error}); falling back to opencv".splitlines()[0],
            file=sys.stderr,
        )
        return OpenCVDetector()


@dataclass
class FaceTrack:
    """One face per clip: boxes [n, 4] (x1, y1, x2, y2; NaN where no face) and has_face [n]."""

    boxes: np.ndarray
    has_face: np.ndarray


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _continues(box: np.ndarray, last: np.ndarray) -> bool:
    size = max(last[2] - last[0], last[3] - last[1])
    distance = np.hypot(*((box[:2] + box[2:]) / 2 - (last[:2] + last[2:]) / 2))
    return _iou(box, last) >= LINK_IOU or distance <= LINK_CENTRE * size


def _distinct(faces: Sequence[Box]) -> list[np.ndarray]:
    """Boxes largest first, without those centred inside a larger one (one box per face)."""
    kept: list[np.ndarray] = []
    for face in sorted(faces, key=lambda f: _area(np.asarray(f[:4])), reverse=True):
        box = np.asarray(face[:4], dtype=float)
        centre = (box[:2] + box[2:]) / 2
        if not any((k[:2] <= centre).all() and (centre <= k[2:]).all() for k in kept):
            kept.append(box)
    return kept


def _link(detections: Sequence[Sequence[Box] | None]) -> list[dict[int, np.ndarray]]:
    """Greedy frame-to-frame linking of boxes into tracks ({frame: box} each)."""
    tracks: list[dict[int, np.ndarray]] = []
    active: list[dict[int, np.ndarray]] = []
    previous = -1  # the last examined frame
    for t, faces in enumerate(detections):
        if faces is None:  # frame not examined
            continue
        active = [
            track
            for track in active
            if t - max(track) <= MAX_GAP_FRAMES + 1 or max(track) == previous
        ]
        previous = t
        taken: set[int] = set()
        for box in _distinct(faces):
            candidates = [
                (len(track), _iou(box, track[max(track)]), i)  # the established track first
                for i, track in enumerate(active)
                if i not in taken and _continues(box, track[max(track)])
            ]
            if candidates:
                *_, best = max(candidates)
                active[best][t] = box
                taken.add(best)
            else:
                tracks.append({t: box})
                active.append(tracks[-1])
                taken.add(len(active) - 1)
    return _join(tracks)


def _join(tracks: list[dict[int, np.ndarray]]) -> list[dict[int, np.ndarray]]:
    """Chain tracks that follow each other in time where one ended and the next began.

    A face that leaves for longer than MAX_GAP_FRAMES (or is missed that long)
    and comes back in place is the same face; the gap itself stays no-face.
    """
    joined: list[dict[int, np.ndarray]] = []
    for track in sorted(tracks, key=min):
        first = track[min(track)]
        earlier = [j for j in joined if max(j) < min(track) and _continues(first, j[max(j)])]
        if earlier:
            max(earlier, key=len).update(track)
        else:
            joined.append(track)
    return joined


def _area(box: np.ndarray) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _smooth(boxes: np.ndarray) -> np.ndarray:
    """Median then Gaussian over time of centre and size, within one run of frames."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = boxes[:, 2:] - boxes[:, :2]
    params = np.concatenate([centre, size], axis=1)
    params = median_filter(params, size=(MEDIAN_FRAMES, 1), mode="nearest")
    params = gaussian_filter1d(params, SMOOTH_SIGMA_FRAMES, axis=0, mode="nearest")
    return np.concatenate([params[:, :2] - params[:, 2:] / 2, params[:, :2] + params[:, 2:] / 2], 1)


def track_faces(detections: Sequence[Sequence[Box] | None], n_frames: int) -> FaceTrack:
    """Keep the clip's main face: link boxes over time, fill short gaps, smooth.

    `detections[t]` lists the faces of frame t, or is None for a frame that was
    not examined (detect-every-n). The kept track maximises the sum over its frames
    of the box side, i.e. the most persistent and largest face. Gaps of at most
    MAX_GAP_FRAMES frames, or made only of unexamined frames, are interpolated;
    longer ones stay no-face.
    """
    boxes = np.full((n_frames, 4), np.nan)
    tracks = _link(detections[:n_frames])
    if not tracks:
        return FaceTrack(boxes, np.zeros(n_frames, dtype=bool))
    best = max(tracks, key=lambda track: sum(np.sqrt(_area(box)) for box in track.values()))
    frames = np.array(sorted(best))
    examined = np.zeros(n_frames, dtype=bool)
    examined[: len(detections)] = [d is not None for d in detections[:n_frames]]
    for t in frames:
        boxes[t] = best[t]
    for start, stop in zip(frames[:-1], frames[1:], strict=True):
        gap = stop - start - 1
        if gap and (gap <= MAX_GAP_FRAMES or not examined[start + 1 : stop].any()):
            weight = (np.arange(1, gap + 1) / (gap + 1))[:, None]
            boxes[start + 1 : stop] = (1 - weight) * best[start] + weight * best[stop]
    if frames[0] <= MAX_GAP_FRAMES or not examined[: frames[0]].any():
        boxes[: frames[0]] = best[frames[0]]  # hold the first box back to the clip start
    if n_frames - 1 - frames[-1] <= MAX_GAP_FRAMES or not examined[frames[-1] + 1 : n_frames].any():
        boxes[frames[-1] + 1 :] = best[frames[-1]]
    has_face = ~np.isnan(boxes[:, 0])
    edges = np.flatnonzero(np.diff(np.concatenate([[0], has_face.astype(np.int8), [0]])))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        boxes[start:stop] = _smooth(boxes[start:stop])
    return FaceTrack(boxes, has_face)


def mouth_box(box: np.ndarray, margin: float = MOUTH_MARGIN) -> tuple[int, int, int, int]:
    """Integer (x0, y0, x1, y1) of the mouth region: lower half of the square-ified face box.

    side = max(w, h) * (1 + margin), same centre; the result may extend past the frame.
    """
    centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(box[2] - box[0], box[3] - box[1]) * (1 + margin)
    x0, y0 = round(centre_x - side / 2), round(centre_y)
    return x0, y0, x0 + max(2, round(side)), y0 + max(1, round(side / 2))


def crop_mouth(
    frame: np.ndarray, box: np.ndarray, crop_hw: tuple[int, int], margin: float = MOUTH_MARGIN
) -> np.ndarray:
    """The mouth region of `frame` resized to crop_hw; parts outside the frame are black."""
    region = cut_region(frame, *mouth_box(box, margin))
    return cv2.resize(region, (crop_hw[1], crop_hw[0]), interpolation=cv2.INTER_AREA)


def cut_region(frame: np.ndarray, x0: int, y0: int, x1: int, y1: int, fill: int = 0) -> np.ndarray:
    """frame[y0:y1, x0:x1] where the region may extend past the frame (filled with `fill`)."""
    height, width = frame.shape[:2]
    inside = frame[max(0, y0) : max(0, min(height, y1)), max(0, x0) : max(0, min(width, x1))]
    region = np.full((y1 - y0, x1 - x0, frame.shape[2]), fill, dtype=frame.dtype)
    top, left = max(0, -y0), max(0, -x0)
    region[top : top + inside.shape[0], left : left + inside.shape[1]] = inside
    return region


@dataclass
class MouthTrack:
    """Per-frame mouth crops of one clip at 25 fps; all-zero crops where has_face is False."""

    crops: np.ndarray  # uint8 [n, H, W, 3], RGB
    has_face: np.ndarray  # bool [n]
    boxes: np.ndarray  # float [n, 4] face boxes in frame_size(info) pixels, NaN where no face
    detector: str


def lower_half_filter(width: int, height: int) -> str:
    """ffmpeg filter cutting the mouth region of a frame that is the face (pad, then crop)."""
    x0, y0, x1, y1 = mouth_box(np.array([0.0, 0.0, width, height]), margin=0.0)
    left, top = max(0, -x0), max(0, -y0)
    padded_w, padded_h = max(width, x1) + left, max(height, y1) + top
    return (
        f"pad={padded_w}:{padded_h}:{left}:{top}:black,"
        f"crop={x1 - x0}:{y1 - y0}:{x0 + left}:{y0 + top}"
    )


def _whole_frame_crops(info: MediaInfo, recipe: InputRecipe, chunk_frames: int) -> MouthTrack:
    """Pre-cropped faces: ffmpeg cuts the region when the recipe has a filter, else numpy."""
    height, width = frame_size(info)
    video_filter = getattr(recipe, "whole_frame_filter", None)
    if video_filter is not None:
        chunks = iter_video_frames(
            info,
            size=recipe.crop_hw,
            video_filter=video_filter(width, height),
            chunk_frames=chunk_frames,
        )
    else:
        chunks = (
            np.stack([recipe.whole_frame(frame) for frame in chunk])
            for chunk in iter_video_frames(info, chunk_frames=chunk_frames)
        )
    crops = np.concatenate(list(chunks))
    n = len(crops)
    boxes = np.tile(np.array([0.0, 0.0, width, height]), (n, 1))
    return MouthTrack(crops, np.ones(n, dtype=bool), boxes, WholeFrameDetector.name)


def extract_mouths(
    info: MediaInfo,
    detector: FaceDetector,
    recipe: InputRecipe | tuple[int, int],
    *,
    detect_size: int = 320,
    detect_every: int = 1,
    chunk_frames: int = 64,
) -> MouthTrack:
    """Per-frame crops [n, H, W, 3] of the clip's main face, at 25 fps, cut by `recipe`.

    Pass 1 decodes frames with their longest side at most `detect_size` px and runs
    the detector on every `detect_every`-th one (only boxes are kept); pass 2
    decodes just large enough for the crops and cuts them. Frames without a face get
    an all-zero crop; deciding that a clip has too few faces is the caller's job.
    A bare (height, width) means IC-SyncNet's mouth crop of that size.
    """
    if not hasattr(recipe, "crop"):
        from synccurate.models.icsyncnet import MouthRecipe

        recipe = MouthRecipe(crop_hw=tuple(recipe))
    if detect_every < 1:
        raise ValueError(f"extract_mouths: detect_every must be >= 1, got {detect_every}")
    if not info.has_video:
        raise MediaError("no_video", f"{info.path}: no video stream")
    if detector.name == WholeFrameDetector.name:
        return _whole_frame_crops(info, recipe, chunk_frames)
    height, width = frame_size(info)
    scale = min(1.0, detect_size / max(height, width))
    detect_hw = (max(1, round(height * scale)), max(1, round(width * scale)))
    to_source = np.array([width / detect_hw[1], height / detect_hw[0]] * 2)
    detections: list[list[Box] | None] = []
    for chunk in iter_video_frames(info, size=detect_hw, chunk_frames=chunk_frames):
        picked = [i for i in range(len(chunk)) if (len(detections) + i) % detect_every == 0]
        found = dict(zip(picked, detector.detect(chunk[picked]), strict=True)) if picked else {}
        for i in range(len(chunk)):
            faces = found.get(i)
            detections.append(
                None
                if faces is None
                else [(*map(float, np.asarray(f[:4]) * to_source), float(f[4])) for f in faces]
            )
    n = len(detections)
    track = track_faces(detections, n)
    boxes = recipe.smooth_track(track.boxes, track.has_face)
    crop_hw = recipe.crop_hw
    crops = np.zeros((n, *crop_hw, 3), dtype=np.uint8)
    if track.has_face.any():
        sides = np.maximum(*(boxes[track.has_face, 2:] - boxes[track.has_face, :2]).T)
        needed = (
            CROP_OVERSAMPLE * crop_hw[1] / (np.percentile(sides, 5) * recipe.crop_width_per_face)
        )
        crop_scale = min(1.0, needed)
        crop_frame_hw = (max(1, round(height * crop_scale)), max(1, round(width * crop_scale)))
        to_crop_frame = np.array([crop_frame_hw[1] / width, crop_frame_hw[0] / height] * 2)
        t = 0
        for chunk in iter_video_frames(info, size=crop_frame_hw, chunk_frames=chunk_frames):
            for frame in chunk:
                if t < n and track.has_face[t]:
                    crops[t] = recipe.crop(frame, boxes[t] * to_crop_frame)
                t += 1
    return MouthTrack(crops, track.has_face, boxes, detector.name)
