"""Crop geometry: the mouth region of a face box (SPEC §2), and regions past the frame.

Model recipes (`synccurate.models`) cut their crops with these.
"""

from __future__ import annotations

import numpy as np

MOUTH_MARGIN = 0.2  # a detected face box is widened by this fraction before cutting


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


def lower_half_filter(width: int, height: int) -> str:
    """ffmpeg filter cutting the mouth region of a frame that is the face (pad, then crop)."""
    x0, y0, x1, y1 = mouth_box(np.array([0.0, 0.0, width, height]), margin=0.0)
    left, top = max(0, -x0), max(0, -y0)
    padded_w, padded_h = max(width, x1) + left, max(height, y1) + top
    return (
        f"pad={padded_w}:{padded_h}:{left}:{top}:black,"
        f"crop={x1 - x0}:{y1 - y0}:{x0 + left}:{y0 + top}"
    )
