"""Shot boundaries: where the camera cuts, found on the frames face detection already decodes.

A speaker segment never crosses a cut (a cut can join one person's face to another's, or a
wide shot to a close-up). PySceneDetect's detectors do the work; they are fed the small
25-fps RGB frames of the face detection pass (`faces.extract`), so finding the cuts costs
no second decode:

- "content" (`ContentDetector`): a jump of the HSV content between neighbouring frames;
  hard cuts. The default, as syncnet_python's pipeline uses it.
- "adaptive" (`AdaptiveDetector`): the same score against its rolling average, for footage
  with fast camera motion.
- "threshold" (`ThresholdDetector`): the mean brightness crossing a level; fades to black.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from synccurate.io.audio import VIDEO_FPS

# Detector name → (PySceneDetect class name, its threshold keyword, our default threshold).
# The thresholds are PySceneDetect's own defaults, in its units: HSV content change (0–255)
# for "content", the ratio to the rolling average for "adaptive", mean pixel level for
# "threshold".
SHOT_DETECTORS = {
    "content": ("ContentDetector", "threshold", 27.0),
    "adaptive": ("AdaptiveDetector", "adaptive_threshold", 3.0),
    "threshold": ("ThresholdDetector", "threshold", 12.0),
}
DEFAULT_SHOT_DETECTOR = "content"
MIN_SHOT_FRAMES = 15  # frames (0.6 s): a shorter shot is not cut off (PySceneDetect's default)


class ShotDetector:
    """Feed consecutive 25-fps RGB frames with `add`; `cuts()` gives where new shots start.

    Frames come in chunks [n, h, w, 3] uint8, as the face detection pass decodes them;
    the detector keeps only its running statistics, never the frames.
    """

    def __init__(self, detector: str = DEFAULT_SHOT_DETECTOR, threshold: float | None = None):
        import scenedetect  # lazily: only the processes that decode need it

        if detector not in SHOT_DETECTORS:
            raise ValueError(f"shot detector must be one of {sorted(SHOT_DETECTORS)}: {detector!r}")
        class_name, keyword, default = SHOT_DETECTORS[detector]
        options = {keyword: default if threshold is None else threshold}
        self._detector = getattr(scenedetect, class_name)(min_scene_len=MIN_SHOT_FRAMES, **options)
        self._timecode = scenedetect.FrameTimecode
        self._frames = 0
        self._cuts: list[int] = []

    def add(self, frames: np.ndarray) -> None:
        """Examine the next consecutive RGB frames [n, h, w, 3] (uint8, 25 fps)."""
        for frame in frames:
            bgr = np.ascontiguousarray(frame[..., ::-1])  # PySceneDetect reads OpenCV's BGR
            at = self._timecode(self._frames, float(VIDEO_FPS))
            found = self._detector.process_frame(at, bgr)
            self._cuts += [cut.frame_num for cut in found]
            self._frames += 1

    def cuts(self) -> list[int]:
        """25-fps frame indices where a new shot starts, ascending, without frame 0."""
        final = []
        if self._frames:  # a detector may hold back a cut until the stream ends
            last = self._timecode(self._frames - 1, float(VIDEO_FPS))
            final = [cut.frame_num for cut in self._detector.post_process(last)]
        return sorted({cut for cut in [*self._cuts, *final] if 0 < cut < self._frames})


def shot_ranges(cuts: Sequence[int], n_frames: int) -> list[tuple[int, int]]:
    """Half-open frame ranges [start, stop) of the shots of a clip of `n_frames`."""
    inside = sorted({cut for cut in cuts if 0 < cut < n_frames})
    edges = [0, *inside, n_frames]
    return [(start, stop) for start, stop in zip(edges[:-1], edges[1:], strict=True)]


def shot_index(cuts: Sequence[int], n_frames: int) -> np.ndarray:
    """The shot each of `n_frames` frames belongs to: 0 before the first cut, 1 after it, …"""
    shot_of = np.zeros(n_frames, dtype=np.int64)
    for cut in sorted(set(cuts)):
        if 0 < cut < n_frames:
            shot_of[cut:] += 1
    return shot_of
