"""Two passes over a clip: detect faces on small frames, then cut each track's crops.

Both passes stream the video. The first (`locate_faces`) keeps only boxes; the second
(`iter_crops`) yields the crops chunk by chunk, so a long recording is scored while it is
cut and never held whole. `extract_mouths` keeps the main face; `extract_face_tracks`
returns every face long enough to score with all its crops (a short clip, in one piece).
The crop itself is the model's (its input recipe); this module only decides where.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from synccurate.faces import quality
from synccurate.faces.detectors import Box, FaceDetector, WholeFrameDetector
from synccurate.faces.shots import ShotDetector
from synccurate.faces.tracks import MIN_TRACK_FRAMES, FaceTrack, track_all_faces, track_faces

# synccurate.io.media (PyAV) is imported inside the functions that decode, which run in
# the worker processes.
if TYPE_CHECKING:
    from synccurate.io.media import MediaInfo

MAX_FACES = 4  # faces scored at any one frame (the most persistent first), by default
CROP_OVERSAMPLE = 2.0  # the crop pass decodes at >= 2x the pixels the crop needs


class CropRecipe(Protocol):
    """What this stage needs of a model's input recipe (`models.base.CropRecipe`)."""

    crop_hw: tuple[int, int]  # the crop's height × width (RGB uint8)

    @property
    def crop_width_per_face(self) -> float:
        """Crop width / face-box side: how much detail the crop pass must decode."""

    def crop(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The model's region of one RGB frame, given the (smoothed) face box."""

    def whole_frame(self, frame: np.ndarray) -> np.ndarray:
        """The crop when the whole frame is the face (`--face-detector none`)."""

    def smooth_track(self, boxes: np.ndarray, has_face: np.ndarray) -> np.ndarray:
        """Extra smoothing of a face track's boxes [n, 4] that the model was trained with."""


@dataclass
class MouthTrack:
    """Per-frame crops of one face of a clip at 25 fps, cut by a model's input recipe;
    all-zero crops where has_face is False.

    Boxes are in frame_size(info) pixels: the source resolution (display orientation,
    square pixels), so a box height is the face's height in source pixels. `changes` and
    `yaw` are the per-frame facts `faces.quality.track_columns` reduces.
    """

    crops: np.ndarray | None  # uint8 [n, H, W, 3], RGB; None until the crop pass cut them
    has_face: np.ndarray  # bool [n]
    boxes: np.ndarray  # float [n, 4] face boxes in frame_size(info) pixels, NaN where no face
    detector: str
    changes: np.ndarray | None = None  # float [n]: quality.change of the face since frame t-1
    yaw: np.ndarray | None = None  # float [n] degrees, NaN where none; None: no landmarks


def _whole_frame_chunks(
    info: MediaInfo, recipe: CropRecipe, chunk_frames: int
) -> Iterator[np.ndarray]:
    """Pre-cropped faces: ffmpeg cuts the region when the recipe has a filter, else numpy."""
    from synccurate.io.media import frame_size, iter_video_frames

    height, width = frame_size(info)
    video_filter = getattr(recipe, "whole_frame_filter", None)
    if video_filter is not None:
        yield from iter_video_frames(
            info,
            size=recipe.crop_hw,
            video_filter=video_filter(width, height),
            chunk_frames=chunk_frames,
        )
        return
    for chunk in iter_video_frames(info, chunk_frames=chunk_frames):
        yield np.stack([recipe.whole_frame(frame) for frame in chunk])


def _iter_whole_frame(
    info: MediaInfo, track: MouthTrack, recipe: CropRecipe, chunk_frames: int
) -> Iterator[list[np.ndarray]]:
    """The whole frame is the face: its one track grows as the frames decode, complete
    (has_face, boxes, changes) when the stream ends or breaks off."""
    from synccurate.io.media import frame_size

    height, width = frame_size(info)
    changes, last = [], None
    try:
        for crops in _whole_frame_chunks(info, recipe, chunk_frames):
            changes.append(quality.crop_changes(crops, last))  # one region: consecutive crops
            last = crops[-1].copy()
            yield [crops]
    finally:  # also when the stream broke off: the frames decoded so far are the track
        track.changes = np.concatenate(changes) if changes else np.zeros(0)
        n = len(track.changes)
        track.has_face = np.ones(n, dtype=bool)
        track.boxes = np.tile(np.array([0.0, 0.0, width, height]), (n, 1))


def _detect_all(
    info: MediaInfo,
    detector: FaceDetector,
    detect_size: int,
    detect_every: int,
    chunk_frames: int,
    shots: ShotDetector | None = None,
) -> list[list[Box] | None]:
    """Pass 1: the faces of every `detect_every`-th frame (None for the others), in source px.

    Frames are decoded with their longest side at most `detect_size` px. A detector that
    returns five landmarks after the score (x, y each: CenterFace) gets each face's yaw
    (`quality.yaw_from_landmarks`, in source px) as a sixth value. `shots` sees every
    frame on the way, so finding the cuts needs no decode of its own.
    """
    from synccurate.io.media import frame_size, iter_video_frames

    height, width = frame_size(info)
    scale = min(1.0, detect_size / max(height, width))
    detect_hw = (max(1, round(height * scale)), max(1, round(width * scale)))
    to_source = np.array([width / detect_hw[1], height / detect_hw[0]] * 2)
    detections: list[list[Box] | None] = []
    for chunk in _until_truncated(
        iter_video_frames(info, size=detect_hw, chunk_frames=chunk_frames)
    ):
        if shots is not None:
            shots.add(chunk)
        picked = [i for i in range(len(chunk)) if (len(detections) + i) % detect_every == 0]
        found = dict(zip(picked, detector.detect(chunk[picked]), strict=True)) if picked else {}
        for i in range(len(chunk)):
            faces = found.get(i)
            detections.append(None if faces is None else [_to_source(f, to_source) for f in faces])
    return detections


def _until_truncated(chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """The chunks of a stream that may break off: where it does, its faces end (the pass
    that cuts the crops says where it broke)."""
    from synccurate.io.media import MediaError

    try:
        yield from chunks
    except MediaError as error:
        if error.status != "truncated":
            raise


def _to_source(face: Sequence[float], to_source: np.ndarray) -> tuple[float, ...]:
    """A detection in source px: (x1, y1, x2, y2, score), plus the yaw with landmarks."""
    box = (*map(float, np.asarray(face[:4]) * to_source), float(face[4]))
    if len(face) < 15:
        return box
    points = np.asarray(face[5:15], dtype=np.float64).reshape(5, 2) * to_source[:2]
    return (*box, quality.yaw_from_landmarks(points))


def _crop_scale(sides: np.ndarray, recipe: CropRecipe) -> float:
    """Decode scale for pass 2: >= CROP_OVERSAMPLE x the crop width over 95 % of the faces."""
    if not len(sides):
        return 1.0
    smallest_crop = np.percentile(sides, 5) * recipe.crop_width_per_face  # px across
    return min(1.0, CROP_OVERSAMPLE * recipe.crop_hw[1] / smallest_crop)


def _iter_tracks(
    info: MediaInfo, tracks: Sequence[MouthTrack], recipe: CropRecipe, chunk_frames: int
) -> Iterator[list[np.ndarray | None]]:
    """Pass 2: one decode of the clip cuts the crops of every track (zeros where no face;
    None for a track other than the main face with no face in the whole chunk: a raw
    video's many shots each start tracks that are absent from most of it).

    Also fills, per track, how much the face changed since the previous frame: this
    frame's face box cut from this frame and from the previous one
    (`quality.change_in_box`; the same box, so a box that moves while the image stands
    still does not hide a frozen frame; NaN where either frame has no face).
    """
    from synccurate.io.media import frame_size, iter_video_frames

    height, width = frame_size(info)
    n = len(tracks[0].has_face) if tracks else 0
    for track in tracks:
        track.changes = np.full(n, np.nan)
    if not any(track.has_face.any() for track in tracks):
        for start in range(0, n, chunk_frames):  # nothing to cut: no need to decode
            size = min(chunk_frames, n - start)
            yield [np.zeros((size, *recipe.crop_hw, 3), dtype=np.uint8) for _ in tracks]
        return
    faces = np.concatenate([track.boxes[track.has_face] for track in tracks])
    crop_scale = _crop_scale(np.maximum(*(faces[:, 2:] - faces[:, :2]).T), recipe)
    crop_frame_hw = (max(1, round(height * crop_scale)), max(1, round(width * crop_scale)))
    to_crop_frame = np.array([crop_frame_hw[1] / width, crop_frame_hw[0] / height] * 2)
    t = 0
    previous = None
    for chunk in iter_video_frames(info, size=crop_frame_hw, chunk_frames=chunk_frames):
        crops = [
            np.zeros((len(chunk), *recipe.crop_hw, 3), dtype=np.uint8)
            if k == 0 or track.has_face[t : t + len(chunk)].any()
            else None
            for k, track in enumerate(tracks)
        ]
        for i, frame in enumerate(chunk):
            for track, out in zip(tracks, crops, strict=True):
                if out is not None and t < n and track.has_face[t]:
                    box = track.boxes[t] * to_crop_frame
                    out[i] = recipe.crop(frame, box)
                    if previous is not None and track.has_face[t - 1]:
                        track.changes[t] = quality.change_in_box(previous, frame, box)
            previous = frame.copy()  # a copy: a view would keep the whole chunk
            t += 1
        yield crops


def iter_crops(
    info: MediaInfo, tracks: Sequence[MouthTrack], recipe: CropRecipe, chunk_frames: int = 64
) -> Iterator[list[np.ndarray]]:
    """Pass 2 as a stream: consecutive chunks [n <= chunk_frames, H, W, 3] of every track's
    crops (one list entry per track; None where a track other than the first shows no
    face in the chunk), cut from one decode of the clip.

    Fills each track's `changes` as it goes; the whole frame's track (`locate_faces` with
    the ``none`` detector) gets its frames, boxes and changes when the stream ends.
    """
    if len(tracks) == 1 and tracks[0].detector == WholeFrameDetector.name:
        return _iter_whole_frame(info, tracks[0], recipe, chunk_frames)
    return _iter_tracks(info, tracks, recipe, chunk_frames)


def _check_args(info: MediaInfo, detect_every: int, caller: str) -> None:
    from synccurate.io.media import MediaError

    if detect_every < 1:
        raise ValueError(f"{caller}: detect_every must be >= 1, got {detect_every}")
    if not info.has_video:
        raise MediaError("no_video", f"{info.path}: no video stream")


def _smoothed(tracks: list[FaceTrack], recipe: CropRecipe) -> list[FaceTrack]:
    """Each track's boxes through the recipe's own smoothing (e.g. SyncNet v2's median)."""
    return [FaceTrack(recipe.smooth_track(t.boxes, t.has_face), t.has_face, t.yaw) for t in tracks]


def at_most_at_once(tracks: list[FaceTrack], max_faces: int) -> list[FaceTrack]:
    """The tracks in their order, leaving out each that would put more than `max_faces`
    faces on one frame. A crowd is capped frame by frame, not the video: a raw video's
    every shot starts new tracks, and its later shots' faces count as much as the first's."""
    shown = np.zeros(len(tracks[0].has_face) if tracks else 0, dtype=int)
    kept = []
    for track in tracks:
        if (shown[track.has_face] < max_faces).all():
            shown += track.has_face
            kept.append(track)
    return kept


def locate_faces(
    info: MediaInfo,
    detector: FaceDetector,
    recipe: CropRecipe,
    *,
    detect_size: int = 320,
    detect_every: int = 1,
    chunk_frames: int = 64,
    max_faces: int | None = MAX_FACES,
    min_frames: int = MIN_TRACK_FRAMES,
    shot_detector: str | None = None,
    shot_threshold: float | None = None,
) -> tuple[list[MouthTrack], list[int] | None]:
    """Pass 1: each face track of the clip long enough to score, main face first, no crops
    yet; and the shot cuts (frames where a new shot starts), which no track crosses.

    The tracks are those of `track_all_faces` (at least `min_frames` frames; at most
    `max_faces` on any one frame, `at_most_at_once`; None = all). When no track is that
    long, the main face's track alone (it may be short or empty). With the ``none``
    detector there is exactly one track, the whole frame, which `iter_crops` completes
    (no pass 1 is needed, and no shots are looked for: the cuts are None, as with
    `shot_detector` None).
    """
    _check_args(info, detect_every, "locate_faces")
    if detector.name == WholeFrameDetector.name:
        empty = np.zeros(0, dtype=bool)
        return [MouthTrack(None, empty, np.zeros((0, 4)), WholeFrameDetector.name)], None
    shots = ShotDetector(shot_detector, shot_threshold) if shot_detector else None
    detections = _detect_all(info, detector, detect_size, detect_every, chunk_frames, shots)
    n = len(detections)
    cuts = shots.cuts() if shots else None
    # No track long enough: the main face however short, so callers still see the frames.
    found = track_all_faces(detections, n, min_frames=min_frames, cuts=cuts or ())
    tracks = found or [track_faces(detections, n)]
    tracks = _smoothed(tracks if max_faces is None else at_most_at_once(tracks, max_faces), recipe)
    located = [MouthTrack(None, t.has_face, t.boxes, detector.name, yaw=t.yaw) for t in tracks]
    return located, cuts


def cut_all_crops(
    info: MediaInfo, tracks: list[MouthTrack], recipe: CropRecipe, chunk_frames: int = 64
) -> list[MouthTrack]:
    """The tracks with all their crops, cut in one pass (a clip short enough to hold)."""
    chunks = list(iter_crops(info, tracks, recipe, chunk_frames))
    for i, track in enumerate(tracks):
        parts = [np.zeros_like(chunk[0]) if chunk[i] is None else chunk[i] for chunk in chunks]
        track.crops = (
            np.concatenate(parts) if parts else np.zeros((0, *recipe.crop_hw, 3), np.uint8)
        )
    return tracks


def extract_face_tracks(
    info: MediaInfo,
    detector: FaceDetector,
    recipe: CropRecipe,
    *,
    chunk_frames: int = 64,
    **locate_options,
) -> list[MouthTrack]:
    """Crops of each face track of the clip long enough to score, main face first, at
    25 fps, cut by the recipe in one decoding pass. `locate_options`: those of
    `locate_faces` (detect_size, detect_every, max_faces, min_frames, shot_detector, …)."""
    tracks, _ = locate_faces(info, detector, recipe, chunk_frames=chunk_frames, **locate_options)
    return cut_all_crops(info, tracks, recipe, chunk_frames)


def extract_mouths(
    info: MediaInfo,
    detector: FaceDetector,
    recipe: CropRecipe,
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
    _check_args(info, detect_every, "extract_mouths")
    if detector.name == WholeFrameDetector.name:
        [track], _ = locate_faces(info, detector, recipe, chunk_frames=chunk_frames)
    else:
        detections = _detect_all(info, detector, detect_size, detect_every, chunk_frames)
        [main] = _smoothed([track_faces(detections, len(detections))], recipe)
        track = MouthTrack(None, main.has_face, main.boxes, detector.name, yaw=main.yaw)
    [track] = cut_all_crops(info, [track], recipe, chunk_frames)
    return track
