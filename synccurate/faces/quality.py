"""What curators filter on besides sync, per face track: face size, track steadiness, frozen
frames, head yaw.

The crop pass (`faces.extract`) reduces each frame to a few facts carried on its
`MouthTrack` (the boxes, whether the face repeats the previous frame, the yaw of each
detection); `track_columns` turns those into the scores table's numbers. NumPy only (cv2
is imported inside `thumbnail`, which runs in the workers).
"""

from __future__ import annotations

import math

import numpy as np

# --- frozen frames -------------------------------------------------------------------------
# A frame repeats the previous one on the face when the face's region in both (the frame's
# face box cut from each; without a detector, the model's crops of the whole frame) differ
# by at most FROZEN_TOLERANCE 8-bit levels on average, compared as FROZEN_THUMB x
# FROZEN_THUMB RGB thumbnails (area averaged: one scale whatever the region's size). A
# frame a decoder repeats (a 12.5 fps source read at 25 fps) is identical; a repeated image
# that was encoded again (x264 refines it) differs by coding noise of about 0.01 to 0.35
# levels, while real footage moves by 0.5 and more. Synthetic faces barely move, so there a
# larger tolerance calls still frames frozen; 0.05 balances both
# (benchmarks/curation_columns.py, docs/reading-scores.md).
FROZEN_THUMB = 32  # px
FROZEN_TOLERANCE = 0.05  # mean |difference|, 8-bit levels


def thumbnail(crop: np.ndarray) -> np.ndarray:
    """A crop as FROZEN_THUMB x FROZEN_THUMB RGB (area averaged), float32."""
    import cv2

    small = cv2.resize(crop, (FROZEN_THUMB, FROZEN_THUMB), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32)


def change(previous: np.ndarray, current: np.ndarray) -> float:
    """How much two crops of one region differ: mean |difference| of their thumbnails."""
    return float(np.abs(thumbnail(current) - thumbnail(previous)).mean())


def change_in_box(previous: np.ndarray, current: np.ndarray, box: np.ndarray) -> float:
    """`change` of two frames inside `box` (x1, y1, x2, y2; the part inside the frame)."""
    height, width = current.shape[:2]
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
    if x1 <= x0 or y1 <= y0:
        return math.nan
    return change(previous[y0:y1, x0:x1], current[y0:y1, x0:x1])


def crop_changes(crops: np.ndarray, before: np.ndarray | None = None) -> np.ndarray:
    """Float [n]: `change` from crop t - 1 to crop t (crops of one fixed region); crop 0 is
    compared with `before` (the crop preceding these, when a clip comes in chunks), else NaN."""
    changes = np.full(len(crops), np.nan)
    previous = None if before is None else thumbnail(before)
    for t, crop in enumerate(crops):  # one thumbnail at a time: long clips stay small
        current = thumbnail(crop)
        if previous is not None:
            changes[t] = float(np.abs(current - previous).mean())
        previous = current
    return changes


# --- yaw -----------------------------------------------------------------------------------
# Five landmarks (CenterFace's order: the eye on the image's left, the other eye, the nose
# tip, the mouth corner on the image's left, the other corner). Turn the points so that the
# eyes lie level (roll); then under a rotation by yaw θ about the vertical axis the nose
# tip moves sideways by depth · sin θ while the eyes and mouth corners close up by cos θ:
#     (nose x − centre x of eyes and mouth corners) / mean half-width of eyes and mouth
#       = YAW_NOSE_DEPTH · tan θ,
# YAW_NOSE_DEPTH = 2 · (depth of the nose tip in front of the eye–mouth plane) / (half the
# eye distance + half the mouth width). Gee & Cipolla's face model (1994) puts the nose tip
# 0.6 × the eye–mouth distance in front of that plane; with the eye and mouth positions of
# ArcFace's five-point template (eye–mouth 40.7, half widths 17.6 and 14.6) that is
# 2 · 24.4 / 32.2 = 1.52. Accuracy: docs/reading-scores.md#yaw_deg.
TEMPLATE_EYE_MOUTH = 40.7  # ArcFace's 112 px template: eye line to mouth line
TEMPLATE_HALF_WIDTHS = (17.6, 14.6)  # half the eye distance, half the mouth width
GEE_CIPOLLA_NOSE = 0.6  # nose tip height / eye–mouth distance
YAW_NOSE_DEPTH = 2 * GEE_CIPOLLA_NOSE * TEMPLATE_EYE_MOUTH / sum(TEMPLATE_HALF_WIDTHS)
YAW_MAX_DEG = 90.0


def yaw_from_landmarks(points: np.ndarray) -> float:
    """The head's yaw in degrees from five landmarks [5, 2] (x, y): 0 = facing the camera,
    + = the nose turned towards the image's right. NaN when the points are degenerate."""
    points = np.asarray(points, dtype=np.float64).reshape(5, 2)
    if not np.isfinite(points).all():
        return math.nan
    left_eye, right_eye, nose, left_mouth, right_mouth = points
    axis = right_eye - left_eye
    length = float(np.hypot(*axis))
    if length <= 0:
        return math.nan
    axis /= length
    along = (points - points[[0, 1, 3, 4]].mean(axis=0)) @ axis  # position along the eye line
    half_width = ((along[1] - along[0]) + (along[4] - along[3])) / 4
    if half_width <= 0:
        return math.nan
    return math.degrees(math.atan(along[2] / half_width / YAW_NOSE_DEPTH))


# --- the columns ---------------------------------------------------------------------------


def face_heights(boxes: np.ndarray, has_face: np.ndarray) -> np.ndarray:
    """Box heights (px) of the frames with a face."""
    boxes = np.asarray(boxes, dtype=np.float64)[np.asarray(has_face, dtype=bool)]
    return boxes[:, 3] - boxes[:, 1]


def face_px(boxes: np.ndarray, has_face: np.ndarray) -> float | None:
    """Median face box height over the frames with a face (the boxes' pixels); None: no face."""
    heights = face_heights(boxes, has_face)
    return float(np.median(heights)) if len(heights) else None


def track_jitter(boxes: np.ndarray, has_face: np.ndarray) -> float | None:
    """Median distance the box centre moves from one frame to the next, in face heights
    (the later frame's), over the pairs of consecutive frames that both have a face."""
    boxes = np.asarray(boxes, dtype=np.float64)
    has_face = np.asarray(has_face, dtype=bool)
    pairs = has_face[1:] & has_face[:-1]
    if not pairs.any():
        return None
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    moved = np.hypot(*(centres[1:] - centres[:-1]).T)[pairs]
    heights = (boxes[1:, 3] - boxes[1:, 1])[pairs]
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = moved / heights
    relative = relative[np.isfinite(relative)]
    return float(np.median(relative)) if len(relative) else None


def frozen_ratio(changes: np.ndarray | None, has_face: np.ndarray) -> float | None:
    """Share of the frames with a face whose image of the face repeats the previous frame's:
    `changes` (per frame, NaN where there is nothing to compare) <= FROZEN_TOLERANCE."""
    has_face = np.asarray(has_face, dtype=bool)
    if changes is None or not has_face.any():
        return None
    with np.errstate(invalid="ignore"):
        frozen = np.asarray(changes, dtype=np.float64) <= FROZEN_TOLERANCE
    return float((frozen & has_face).sum() / has_face.sum())


def yaw_deg(yaw: np.ndarray | None, has_face: np.ndarray) -> float | None:
    """Median yaw (degrees) over the frames with a face and a landmark estimate; None when
    the detector gives no landmarks (or none of these frames has one)."""
    if yaw is None:
        return None
    values = np.asarray(yaw, dtype=np.float64)[np.asarray(has_face, dtype=bool)]
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else None


def track_columns(track) -> dict:
    """face_px, track_jitter, frozen_ratio and yaw_deg of one `MouthTrack` (None: unknown)."""
    return {
        "face_px": face_px(track.boxes, track.has_face),
        "track_jitter": track_jitter(track.boxes, track.has_face),
        "frozen_ratio": frozen_ratio(getattr(track, "changes", None), track.has_face),
        "yaw_deg": yaw_deg(getattr(track, "yaw", None), track.has_face),
    }
