"""Shot boundaries on synthetic frames with hard cuts at known frames, and no cut in a zoom."""

from __future__ import annotations

import numpy as np
import pytest

from synccurate.faces.shots import SHOT_DETECTORS, ShotDetector, shot_ranges

HEIGHT, WIDTH = 180, 320  # px: the face detection pass's small frames
CHUNK = 16  # frames handed to the detector at a time, as the decoder's chunks


def shot(n_frames: int, background, radius_from: float, radius_to: float, centre, seed: int):
    """A still camera on a face-like blob (skin ellipse, one eye) whose radius goes from
    radius_from to radius_to px smoothly, with a little sensor noise; RGB uint8."""
    import cv2

    rng = np.random.default_rng(seed)
    frames = np.empty((n_frames, HEIGHT, WIDTH, 3), np.uint8)
    for i in range(n_frames):
        radius = radius_from + (radius_to - radius_from) * i / max(1, n_frames - 1)
        frame = np.full((HEIGHT, WIDTH, 3), background, np.uint8)
        axes = (round(radius * 0.8), round(radius))
        cv2.ellipse(frame, centre, axes, 0, 0, 360, (200, 160, 130), -1)
        eye = (centre[0] - round(radius * 0.3), centre[1] - round(radius * 0.2))
        cv2.circle(frame, eye, max(2, round(radius * 0.1)), (40, 40, 40), -1)
        noise = rng.integers(-3, 4, frame.shape)
        frames[i] = np.clip(frame + noise, 0, 255).astype(np.uint8)
    return frames


def detect(frames: np.ndarray, detector: str) -> list[int]:
    shots = ShotDetector(detector)
    for start in range(0, len(frames), CHUNK):
        shots.add(frames[start : start + CHUNK])
    return shots.cuts()


def three_shots() -> np.ndarray:
    """Hard cuts at frames 40 and 77 (a new background, place and size of the face)."""
    return np.concatenate(
        [
            shot(40, (30, 60, 90), 30, 30, (160, 90), seed=0),
            shot(37, (150, 140, 60), 50, 50, (100, 100), seed=1),
            shot(30, (90, 20, 40), 40, 40, (220, 80), seed=2),
        ]
    )


@pytest.mark.parametrize("detector", ["content", "adaptive"])
def test_hard_cuts_are_found_at_their_frame(detector):
    cuts = detect(three_shots(), detector)
    assert len(cuts) == 2
    assert abs(cuts[0] - 40) <= 1 and abs(cuts[1] - 77) <= 1


@pytest.mark.parametrize("detector", ["content", "adaptive"])
def test_a_face_growing_twice_as_large_over_two_seconds_is_one_shot(detector):
    zoom = shot(50, (30, 60, 90), 30, 60, (160, 90), seed=3)  # 2× over 50 frames
    hold = shot(25, (30, 60, 90), 60, 60, (160, 90), seed=4)
    assert detect(np.concatenate([zoom, hold]), detector) == []


def test_a_fade_to_black_is_a_cut_for_the_threshold_detector():
    black = np.zeros((30, HEIGHT, WIDTH, 3), np.uint8)
    frames = np.concatenate([shot(40, (120, 120, 120), 30, 30, (160, 90), 0), black])
    frames = np.concatenate([frames, shot(30, (120, 120, 120), 30, 30, (160, 90), 1)])
    cuts = detect(frames, "threshold")
    assert cuts and all(40 <= cut <= 71 for cut in cuts)
    assert detect(frames[:40], "threshold") == []


def test_an_unknown_detector_and_a_threshold_of_our_own():
    with pytest.raises(ValueError, match="shot detector"):
        ShotDetector("histogram")
    frames = three_shots()
    assert detect(frames, "content")  # found at the default …
    strict = ShotDetector("content", threshold=250.0)  # … and not when the bar is out of reach
    strict.add(frames)
    assert strict.cuts() == []
    assert set(SHOT_DETECTORS) == {"content", "adaptive", "threshold"}


def test_shot_ranges_cover_the_clip_without_overlap():
    assert shot_ranges([40, 77], 107) == [(0, 40), (40, 77), (77, 107)]
    assert shot_ranges([], 50) == [(0, 50)]
    assert shot_ranges([0, 50, 60], 50) == [(0, 50)]  # 0 and cuts past the end are no cuts
