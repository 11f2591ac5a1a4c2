"""Face tracks: detections linked frame to frame, gaps filled, boxes smoothed.

A box continues a track when it is close to the track's typical box (median centre and
size of its last few detections) and not much larger or smaller than a zoom could make it
in the time between them, so a single spurious box neither ends nor derails a face, and a
camera zoom within a shot does not split one. Tracks of one face separated
by a long gap are joined. A shot cut (`faces.shots`) ends every track: no track crosses
one, and tracks of different shots are never joined.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from synccurate.faces.detectors import Box
from synccurate.faces.shots import shot_index
from synccurate.io.audio import VIDEO_FPS

MAX_GAP_FRAMES = VIDEO_FPS // 2  # 12 frames (0.48 s): shorter face gaps are interpolated
# A box continues a track when its centre is within LINK_CENTRE of the track's typical
# box side and its size within a factor LINK_SIZE_RATIO of the typical size; typical =
# median centre and size of the track's last SUMMARY_DETECTIONS detections.
LINK_CENTRE = 0.5
LINK_SIZE_RATIO = 1.5
SUMMARY_DETECTIONS = 5
# A camera zoom changes the face's size smoothly: the size gate widens by a factor
# MAX_ZOOM_PER_SECOND per second between the typical box and the box it is compared with
# (at most MAX_ZOOM_FRAMES apart), so a face growing 2× in 2 s stays one track while a cut
# to a closer shot (the size jumps between two frames) still starts a new one.
MAX_ZOOM_PER_SECOND = 2.0
MAX_ZOOM_FRAMES = VIDEO_FPS  # 1 s
MIN_TRACK_FRAMES = VIDEO_FPS  # 1 s: shorter tracks are not returned by track_all_faces
MEDIAN_FRAMES = 5  # frames: removes single-frame box outliers
SMOOTH_SIGMA_FRAMES = 1.5  # frames: Gaussian smoothing of box centre and size


@dataclass
class FaceTrack:
    """One face over a clip: boxes [n, 4] (x1, y1, x2, y2; NaN where no face) and has_face [n].

    yaw [n]: the head's yaw (degrees) in the frames whose detection came with one (a
    detection's sixth value, `faces.quality.yaw_from_landmarks`); NaN elsewhere, never
    interpolated. None when the detector gives none.
    """

    boxes: np.ndarray
    has_face: np.ndarray
    yaw: np.ndarray | None = None


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of consecutive True values (frames with a face, …)."""
    edges = np.flatnonzero(np.diff(np.r_[0, np.asarray(mask, dtype=np.int8), 0]))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


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


def _link_cost(box: np.ndarray, typical: np.ndarray, frames_apart: float = 0.0) -> float | None:
    """How far `box` is from continuing a face whose typical box is `typical`; None if it cannot.

    It can when its centre lies within LINK_CENTRE of the typical side and its size
    (the square root of its area) is within a factor LINK_SIZE_RATIO of the typical
    size, widened by the zoom allowed over the `frames_apart` between the two
    (MAX_ZOOM_PER_SECOND); the cost adds the two deviations, each relative.
    """
    box_p, typical_p = _params(box), _params(typical)
    side = max(typical_p[2], typical_p[3])
    if side <= 0 or min(box_p[2], box_p[3]) <= 0:
        return None
    distance = np.hypot(*(box_p[:2] - typical_p[:2])) / side
    size_jump = abs(np.log(np.sqrt(box_p[2] * box_p[3] / (typical_p[2] * typical_p[3]))))
    zoom_frames = min(abs(frames_apart), MAX_ZOOM_FRAMES)
    allowed = np.log(LINK_SIZE_RATIO) + np.log(MAX_ZOOM_PER_SECOND) * zoom_frames / VIDEO_FPS
    if distance > LINK_CENTRE or size_jump > allowed:
        return None
    return float(distance + size_jump)


@dataclass
class _Track:
    """The detections of one face so far, in time order: boxes (x1, y1, x2, y2, yaw), the
    yaw NaN when the detector gave none."""

    frames: list[int]
    boxes: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.frames)

    def typical(self, at_start: bool = False) -> tuple[np.ndarray, float]:
        """Median box of the last (or first) SUMMARY_DETECTIONS detections, and the median
        of their frames (where that box stands in time)."""
        part = slice(None, SUMMARY_DETECTIONS) if at_start else slice(-SUMMARY_DETECTIONS, None)
        return _median_box(self.boxes[part]), float(np.median(self.frames[part]))

    def weight(self) -> float:
        """Sum over detections of the box side: the most persistent, largest face is the main."""
        return float(sum(np.sqrt(_area(box)) for box in self.boxes))


def _distinct(faces: Sequence[Box]) -> list[np.ndarray]:
    """Boxes (x1, y1, x2, y2, yaw) largest first, without those centred inside a larger one
    (one box per face). The yaw is a detection's sixth value, NaN when it has none."""
    kept: list[np.ndarray] = []
    for face in sorted(faces, key=lambda f: _area(np.asarray(f[:4])), reverse=True):
        yaw = float(face[5]) if len(face) > 5 else np.nan
        box = np.array([*face[:4], yaw], dtype=float)
        centre = (box[:2] + box[2:4]) / 2
        if not any((k[:2] <= centre).all() and (centre <= k[2:4]).all() for k in kept):
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
        if (cost := _link_cost(box, typical[j][0], t - typical[j][1])) is not None
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


def _link(detections: Sequence[Sequence[Box] | None], cuts: Sequence[int] = ()) -> list[_Track]:
    """Link boxes frame to frame into tracks, then join the tracks of one face.

    A shot cut (a frame of `cuts`) ends every open track; tracks of different shots are
    never joined.

    A track stays open while its last detection is at most MAX_GAP_FRAMES + 1 frames
    back, or was in the last examined frame (detect-every-n), so missed frames do
    not end it. A box continues a track when it is close to the track's typical
    box (the median of its last detections), so one spurious box neither ends a
    track nor derails it.
    """
    tracks: list[_Track] = []
    active: list[_Track] = []
    previous = -1  # the last examined frame
    shot_of = shot_index(cuts, len(detections))
    for t, faces in enumerate(detections):
        if faces is None:  # frame not examined
            continue
        if previous >= 0 and shot_of[t] != shot_of[previous]:
            active = []  # a new shot: no face continues across the cut
        active = [
            track
            for track in active
            if t - track.frames[-1] <= MAX_GAP_FRAMES + 1 or track.frames[-1] == previous
        ]
        previous = t
        started = _assign(t, _distinct(faces), active)
        tracks += started
        active += started
    return _join(tracks, shot_of)


def _join(tracks: list[_Track], shot_of: np.ndarray) -> list[_Track]:
    """Chain tracks of one face that follow each other in time.

    A face that leaves for longer than MAX_GAP_FRAMES (or is missed that long) and
    comes back in place is the same face; the gap itself stays no-face. A track is
    chained to an earlier one that ended before it began when its typical box at
    the start continues that track's typical box at the end (`_link_cost`, the zoom
    allowed over the time between the two). Only tracks of the same shot are joined.
    """
    joined: list[_Track] = []
    for track in sorted(tracks, key=lambda tr: tr.frames[0]):
        first = track.frames[0]
        start, start_frame = track.typical(at_start=True)
        options = []
        for k, earlier in enumerate(joined):
            if earlier.frames[-1] >= first or shot_of[earlier.frames[-1]] != shot_of[first]:
                continue
            end, end_frame = earlier.typical()
            cost = _link_cost(start, end, start_frame - end_frame)
            if cost is not None:
                options.append((cost, -len(earlier), k))
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


def _fill(track: _Track, examined: np.ndarray, shot_of: np.ndarray) -> FaceTrack:
    """Per-frame boxes of one track: gaps filled where allowed, then smoothed run by run.

    Gaps of at most MAX_GAP_FRAMES frames, or made only of unexamined frames, are
    interpolated; longer ones stay no-face. The first and last boxes are held to the
    ends of the track's shot (`shot_of`: each frame's shot) on the same condition.
    """
    n_frames = len(examined)
    boxes = np.full((n_frames, 4), np.nan)
    frames = np.array(track.frames)
    detected = np.array(track.boxes)[:, :4]
    boxes[frames] = detected
    yaw = np.full(n_frames, np.nan)
    yaw[frames] = np.array(track.boxes)[:, 4]
    for k, (start, stop) in enumerate(zip(frames[:-1], frames[1:], strict=True)):
        gap = stop - start - 1
        if gap and (gap <= MAX_GAP_FRAMES or not examined[start + 1 : stop].any()):
            weight = (np.arange(1, gap + 1) / (gap + 1))[:, None]
            boxes[start + 1 : stop] = (1 - weight) * detected[k] + weight * detected[k + 1]
    first, last = frames[0], frames[-1]
    shot = np.flatnonzero(shot_of == shot_of[first])
    shot_start, shot_stop = int(shot[0]), int(shot[-1]) + 1
    if first - shot_start <= MAX_GAP_FRAMES or not examined[shot_start:first].any():
        boxes[shot_start:first] = detected[0]
    if shot_stop - 1 - last <= MAX_GAP_FRAMES or not examined[last + 1 : shot_stop].any():
        boxes[last + 1 : shot_stop] = detected[-1]
    has_face = ~np.isnan(boxes[:, 0])
    for start, stop in runs(has_face):
        boxes[start:stop] = _smooth(boxes[start:stop])
    return FaceTrack(boxes, has_face, None if np.isnan(yaw).all() else yaw)


def _examined(detections: Sequence[Sequence[Box] | None], n_frames: int) -> np.ndarray:
    examined = np.zeros(n_frames, dtype=bool)
    examined[: min(n_frames, len(detections))] = [d is not None for d in detections[:n_frames]]
    return examined


def track_all_faces(
    detections: Sequence[Sequence[Box] | None],
    n_frames: int,
    min_frames: int = MIN_TRACK_FRAMES,
    *,
    cuts: Sequence[int] = (),
) -> list[FaceTrack]:
    """Every face track of the clip that covers at least `min_frames` frames, main face first.

    `detections[t]` lists the faces of frame t, or is None for a frame that was not
    examined (detect-every-n). Tracks are ordered by the sum over their detections
    of the box side (the main face, as `track_faces` picks it, is the most
    persistent and largest). A track covers the frames from its first to its last
    detection that have a face after gap filling (see `_fill`). `cuts`: the frames where
    a new shot starts (`faces.shots.ShotDetector.cuts`); no track crosses one.
    """
    examined = _examined(detections, n_frames)
    shot_of = shot_index(cuts, n_frames)
    tracks = sorted(_link(detections[:n_frames], cuts), key=_Track.weight, reverse=True)
    kept = []
    for track in tracks:
        face = _fill(track, examined, shot_of)
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
