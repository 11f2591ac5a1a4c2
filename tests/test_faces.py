"""Face detection backends, the face track, and mouth crops (SPEC §2)."""

from __future__ import annotations

import socket
import time
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest
from real_fixtures import REAL, real_clips

from synccurate import faces, media

CROP_HW = (48, 96)  # the "small" model's mouth crop
MIN_FACE_RATIO = 0.9  # the requirement for the offline detector on every real clip


@cache
def opencv_mouths(clip: Path) -> faces.MouthTrack:
    """Each real clip is detected once for all the tests that look at it."""
    return faces.extract_mouths(media.probe(clip), faces.make_detector("opencv"), CROP_HW)


@pytest.mark.parametrize("clip", real_clips())
def test_opencv_finds_the_face_in_90_percent_of_frames(clip: Path) -> None:
    track = opencv_mouths(clip)
    ratio = track.has_face.mean()
    print(f"{clip.name}: face in {ratio:.1%} of {len(track.has_face)} frames")
    assert track.detector == "opencv"
    assert ratio >= MIN_FACE_RATIO, f"{clip.name}: face in only {ratio:.1%} of frames"


def test_mouth_crops_contact_sheet(tmp_path: Path) -> None:
    """One row of 8 crops per real clip, saved for a look; the checks are the mechanical ones."""
    clips = [p.values[0] for p in real_clips() if p.values[0] is not None]
    if not clips:
        pytest.skip(f"real test clips not found at {REAL}")
    rows = []
    for clip in clips:
        track = opencv_mouths(clip)
        assert track.crops.shape == (len(track.has_face), *CROP_HW, 3)
        assert track.crops.dtype == np.uint8
        with_face = track.crops[track.has_face]
        assert (with_face.reshape(len(with_face), -1).std(axis=1) > 10).all()  # no blank crops
        assert np.abs(np.diff(with_face.astype(np.int16), axis=0)).mean() > 0.5  # the mouth moves
        assert not track.crops[~track.has_face].any()
        boxes = track.boxes[track.has_face]
        height, width = media.frame_size(media.probe(clip))
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        assert ((centres >= 0) & (centres <= [width, height])).all()
        picks = np.linspace(0, len(track.crops) - 1, 8).astype(int)
        rows.append(
            np.concatenate([np.pad(track.crops[i], ((2, 2), (2, 2), (0, 0))) for i in picks], 1)
        )
    sheet = cv2.resize(np.concatenate(rows), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    # Look at it: pytest --basetemp=/tmp/sc tests/test_faces.py, then open the PNG.
    assert cv2.imwrite(str(tmp_path / "contact_sheet.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


def test_detect_every_nth_frame_interpolates(tmp_path: Path) -> None:
    clips = [p.values[0] for p in real_clips() if p.values[0] is not None]
    if not clips:
        pytest.skip(f"real test clips not found at {REAL}")
    clip = min(clips, key=lambda p: p.stat().st_size)
    every = faces.extract_mouths(
        media.probe(clip), faces.make_detector("opencv"), CROP_HW, detect_every=4
    )
    full = opencv_mouths(clip)
    assert every.has_face.mean() >= MIN_FACE_RATIO
    both = every.has_face & full.has_face
    side = np.nanmedian(full.boxes[:, 2] - full.boxes[:, 0])
    assert np.median(np.abs(every.boxes[both] - full.boxes[both])) < 0.1 * side


def test_none_detector_takes_the_lower_half_of_the_frame(tmp_path: Path) -> None:
    frames = np.zeros((12, 40, 60, 3), dtype=np.uint8)
    frames[:, :20] = (255, 0, 0)  # upper half red
    frames[:, 20:] = (0, 0, 255)  # lower half blue
    info = media.probe(media.write_clip(tmp_path / "face.mp4", frames, None, crf=0))
    detector = faces.make_detector("none")
    assert detector.name == "none"
    assert detector.detect(frames[:2]) == [[(0.0, 0.0, 60.0, 40.0, 1.0)]] * 2
    track = faces.extract_mouths(info, detector, CROP_HW)
    assert track.crops.shape == (12, *CROP_HW, 3) and track.has_face.all()
    assert track.detector == "none"
    np.testing.assert_array_equal(track.boxes, np.tile([0.0, 0.0, 60.0, 40.0], (12, 1)))
    # Square-ified (60 x 60), lower half: 30 rows from the centre, of which 20 are in the frame.
    blue_rows = track.crops[0, :, :, 2].mean(axis=1) > 150
    assert blue_rows[: CROP_HW[0] * 2 // 3 - 2].all() and not blue_rows[-CROP_HW[0] // 4 :].any()
    assert track.crops[..., 0].max() < 60  # no red: nothing from the upper half


class FixedFaceDetector:
    """Reports one face at fixed fractions of whatever frame it is shown (its own pixels)."""

    name = "fixed"

    def __init__(self, box: tuple[float, float, float, float]):
        self.box = box
        self.shapes: set[tuple[int, int]] = set()

    def detect(self, frames: np.ndarray) -> list:
        height, width = frames.shape[1:3]
        self.shapes.add((height, width))
        x0, y0, x1, y1 = self.box
        return [[(x0 * width, y0 * height, x1 * width, y1 * height, 1.0)] for _ in frames]


def test_boxes_are_scaled_between_the_detection_and_crop_passes(tmp_path: Path) -> None:
    """640 x 360 frames, a 200 px face at x 300…500, y 60…260: both passes decode smaller frames
    (longest side 320 for detection; about half size for 32 x 64 crops), and the crop must
    still come from the source's mouth region (x 280…520, y 160…280 with the 20 % margin)."""
    frames = np.zeros((10, 360, 640, 3), dtype=np.uint8)
    frames[:] = (255, 0, 255)  # magenta background
    frames[:, 60:160, 280:520] = (0, 0, 255)  # upper half of the face region: blue
    frames[:, 160:280, 280:520] = (0, 255, 0)  # the mouth region: green
    info = media.probe(media.write_clip(tmp_path / "wide.mp4", frames, None, crf=0))
    detector = FixedFaceDetector((300 / 640, 60 / 360, 500 / 640, 260 / 360))
    track = faces.extract_mouths(info, detector, (32, 64))
    assert detector.shapes == {(180, 320)}  # the detection pass ran on scaled frames
    assert track.has_face.all()
    np.testing.assert_allclose(track.boxes, np.tile([300, 60, 500, 260], (10, 1)), atol=0.5)
    inner = track.crops[:, 3:-3, 3:-3].astype(int)
    assert (inner[..., 1] > 200).all(), "the crop is not all mouth region (green)"
    assert (inner[..., 0] < 60).all() and (inner[..., 2] < 60).all()


def test_crop_mouth_pads_boxes_outside_the_frame() -> None:
    frame = np.full((50, 80, 3), 200, dtype=np.uint8)
    crop = faces.crop_mouth(frame, np.array([60.0, 0.0, 110.0, 60.0]), CROP_HW)
    assert crop.shape == (*CROP_HW, 3)
    assert crop[: CROP_HW[0] // 2, : CROP_HW[1] // 4].min() > 150  # inside the frame
    assert crop[:, -CROP_HW[1] // 4 :].max() == 0  # beyond the right edge: black
    assert crop[-CROP_HW[0] // 4 :].max() == 0  # below the bottom edge: black
    x0, y0, x1, y1 = faces.mouth_box(np.array([10.0, 10.0, 30.0, 50.0]), margin=0.0)
    assert (x0, y0, x1, y1) == (0, 30, 40, 50)  # side = max(w, h), lower half from the centre


def box(x: float, y: float, side: float, score: float = 1.0) -> faces.Box:
    return (x, y, x + side, y + side, score)


def test_track_keeps_the_main_face_fills_short_gaps_and_smooths() -> None:
    rng = np.random.default_rng(0)
    n = 100
    detections: list = []
    for t in range(n):
        found = [box(100 + t + rng.normal(0, 3), 50 + rng.normal(0, 3), 80 + rng.normal(0, 3))]
        found.append(box(400, 300, 40))  # a smaller second face, always there
        if t % 17 == 0:
            found.append(box(rng.uniform(0, 500), rng.uniform(0, 300), 120))  # flickering false hit
        detections.append(found)
    for t in range(20, 25):  # short gap: interpolated
        detections[t] = [box(400, 300, 40)]
    for t in range(50, 80):  # long gap: no face
        detections[t] = [box(400, 300, 40)]
    track = faces.track_faces(detections, n)
    assert (
        track.has_face[:50].all() and not track.has_face[50:80].any() and track.has_face[80:].all()
    )
    assert np.isnan(track.boxes[50:80]).all()
    x1 = track.boxes[track.has_face, 0]
    expected = 100 + np.flatnonzero(track.has_face)
    assert np.abs(x1 - expected).max() < 5  # the big face, also after it came back
    assert np.std(np.diff(x1[:50])) < 1.5  # smoothed: raw jitter has a std of about 4 px per step


def test_track_interpolates_across_unexamined_frames_and_handles_no_faces() -> None:
    detections = [[box(10, 10, 50)] if t % 20 == 0 else None for t in range(61)]
    track = faces.track_faces(detections, 61)
    assert track.has_face.all()
    empty = faces.track_faces([[] for _ in range(10)], 10)
    assert not empty.has_face.any() and np.isnan(empty.boxes).all()


def test_extract_mouths_needs_a_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "speech.mp4"
    media.run_ffmpeg(["-y", "-f", "lavfi", "-i", "sine", "-t", "0.5", "-c:a", "aac", str(path)])
    with pytest.raises(media.MediaError) as caught:
        faces.extract_mouths(media.probe(path), faces.make_detector("none"), CROP_HW)
    assert caught.value.status == "no_video"


def test_unknown_detector_name() -> None:
    with pytest.raises(ValueError, match="opencv"):
        faces.make_detector("dlib")


def test_auto_without_weights_is_opencv_and_never_downloads(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_download(target: Path) -> str:
        raise AssertionError("auto must not download")

    monkeypatch.setattr(faces, "_download_s3fd", no_download)
    assert faces.make_detector("auto").name == "opencv"


def test_face_alignment_without_weights_falls_back_quickly(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """A server that accepts the connection and never answers: the download must not hang."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(faces, "S3FD_DOWNLOAD_TIMEOUT_S", 2.0)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/s3fd-619a316812.pth"
        monkeypatch.setattr(faces, "S3FD_URL", url)
        start = time.monotonic()
        detector = faces.make_detector("face-alignment")
        elapsed = time.monotonic() - start
    assert detector.name == "opencv"
    assert elapsed < 10
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "S3FD weights not found at" in lines[0] and "falling back to opencv" in lines[0]
    assert "timed out" in lines[0]
    assert not any((tmp_path / "hub" / "checkpoints").iterdir())  # no partial download left


def test_face_alignment_backend_runs_batched_from_a_local_weights_file(
    tmp_path: Path, monkeypatch
) -> None:
    """Random S3FD weights: the boxes are meaningless, the plumbing is what is checked."""
    torch = pytest.importorskip("torch")
    net_s3fd = pytest.importorskip("face_alignment.detection.sfd.net_s3fd")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = faces.s3fd_weights_path()
    assert weights.parent == tmp_path / "hub" / "checkpoints"
    weights.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(net_s3fd.s3fd().state_dict(), weights)
    detector = faces.make_detector("auto")
    assert detector.name == "face-alignment"
    found = detector.detect(np.zeros((3, 48, 64, 3), dtype=np.uint8))
    assert len(found) == 3
    assert all(
        len(face) == 5 and all(isinstance(v, float) for v in face) for f in found for face in f
    )
