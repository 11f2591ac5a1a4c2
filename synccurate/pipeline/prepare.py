"""Step 1 of scoring: decode a clip's audio and cut the model's crops of every face.

`PrepareStep` is the value an executor runs in its workers (it holds the model's
weight-free input recipe, and loads the face detector once per worker); `prepare_clip`
never raises for a bad clip, it returns a clip with a status instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from synccurate.io import audio
from synccurate.io.inputs import ClipRef, unreadable

# faces and media (cv2, PyAV, scipy) are imported inside the functions that decode and crop,
# which run in the worker processes: the process that holds the model never loads them.
if TYPE_CHECKING:
    from synccurate.faces.detectors import FaceDetector
    from synccurate.faces.extract import MouthTrack
    from synccurate.io.media import MediaInfo
    from synccurate.models.base import InputRecipe

MIN_FACE_RATIO = 0.5  # below this fraction of frames with a face the clip is `no_face`
# A clip longer than this is scored in chunks of this many seconds (`pipeline.streaming`,
# which shortens them for large crops). 60 s: on 5-minute clips 20 s chunks were ~20 %
# slower than the whole clip (more seams, each re-embedding 2K audio windows), 60 s as
# fast; an hour of SyncNet v2's 224² crops whole would be 13 GB.
CHUNK_SECONDS = 60.0


@dataclass
class PreparedClip:
    ref: ClipRef
    status: str = "ok"
    error: str = ""
    duration_s: float | None = None
    source_fps: float | None = None
    crops: np.ndarray | None = None  # uint8 [n, H, W, 3], cut by the model's recipe
    has_face: np.ndarray | None = None
    features: np.ndarray | None = None  # audio features of the whole clip (recipe's kind)
    n_samples: int = 0  # 16 kHz audio samples decoded
    n_windows: int = 0  # visual windows the model scores (recipe.n_windows)
    silence: np.ndarray | None = None
    voiced: np.ndarray | None = None  # bool [n]: voiced speech (audio.frame_voicing)
    detector: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    # Every face track (main face first); crops / has_face above are the main face's.
    tracks: list[MouthTrack] = field(default_factory=list)
    synthetic: bool | None = None  # a `synccurate synth` clip (its tag); None = not probed
    # A long clip comes back located, not cut: its tracks hold boxes, no crops, and the
    # driver scores it chunk by chunk (`pipeline.streaming`), which then fills in the
    # frames, audio facts and windows counted on the way.
    in_chunks: bool = False
    media: MediaInfo | None = None  # what the chunks are decoded from
    frames_seen: int | None = None  # frames of a clip scored in chunks
    cuts: list[int] | None = None  # frames where a new shot starts; None: not looked for

    @property
    def n_frames(self) -> int:
        if self.crops is None:
            return self.frames_seen or 0
        return len(self.crops)

    # A whole clip as a `batching.WindowSource`: its windows and features start at 0.
    first_window = 0
    feature_start = 0

    @property
    def clip_windows(self) -> int:
        return self.n_windows

    def valid_windows(self) -> np.ndarray:
        """The scored visual windows whose five frames all show the face."""
        return face_windows(self.has_face, self.n_windows)

    def windows_to_score(self, reach: int) -> np.ndarray:
        """The windows within `reach` of a face window (`batching.WindowSource`)."""
        return near_faces(self.valid_windows(), reach)

    def face_views(self) -> list[tuple[int, PreparedClip]]:
        """(track index, the clip as seen through that face) for each face with a window."""
        if len(self.tracks) <= 1:
            return [(0, self)]
        views = [
            (i, replace(self, crops=track.crops, has_face=track.has_face))
            for i, track in enumerate(self.tracks)
        ]
        return [(i, view) for i, view in views if view.valid_windows().any()]


def prepare_clip(
    ref: ClipRef,
    recipe: InputRecipe,
    detector: FaceDetector,
    detect_every: int = 1,
    chunk_seconds: float = CHUNK_SECONDS,
    shot_detector: str | None = None,
    shot_threshold: float | None = None,
) -> PreparedClip:
    """Decode audio and the model's crops of one clip; never raises for a bad clip.

    A clip longer than `chunk_seconds`, or with more face tracks than `MAX_FACES`, is only
    located (probed, its faces tracked), so that its crops and audio can be cut chunk by
    chunk where it is scored. Shots are
    found on the face detection's frames (`faces.shots`; None: not looked for).
    """
    from synccurate.faces import extract
    from synccurate.io import media

    clip = PreparedClip(ref, detector=getattr(detector, "name", ""))
    shots = (shot_detector, shot_threshold)
    try:
        start = time.perf_counter()
        if reason := unreadable(ref.file):
            raise media.MediaError("decode_error", f"{ref.file}: {reason}")
        info = media.probe(ref.file)
        clip.duration_s, clip.source_fps = info.duration_s, info.source_fps
        clip.synthetic = info.is_synth
        if not info.has_video:
            raise media.MediaError("no_video", f"{ref.file}: no video stream")
        if not info.has_audio:
            raise media.MediaError("no_audio", f"{ref.file}: no audio stream")
        clip.in_chunks = info.duration_s > chunk_seconds
        if clip.in_chunks:
            clip.media = info
        else:
            samples = media.decode_audio(info)
            clip.features, clip.n_samples = recipe.audio_features(samples), len(samples)
        clip.timings["audio"] = time.perf_counter() - start
        start = time.perf_counter()
        clip.tracks, clip.cuts = extract.locate_faces(
            info,
            detector,
            recipe,
            detect_every=detect_every,
            shot_detector=shot_detector,
            shot_threshold=shot_threshold,
        )
        main = clip.tracks[0]
        clip.has_face, clip.detector = main.has_face, main.detector
        if len(clip.tracks) > extract.MAX_FACES and not clip.in_chunks:
            # More tracks than faces at once (a raw video's shots): each track's crops span
            # the clip, so they are cut chunk by chunk, as a long recording's.
            clip.in_chunks, clip.media, clip.features, clip.n_samples = True, info, None, 0
        if clip.in_chunks:
            clip.timings["faces"] = time.perf_counter() - start
            if len(main.has_face):  # a detector ran: its faces are known before any crop
                _check_faces(clip, ref)
            return clip
        extract.cut_all_crops(info, clip.tracks, recipe)
        clip.timings["faces"] = time.perf_counter() - start
        clip.crops, clip.has_face = main.crops, main.has_face
        clip.silence = audio.frame_silence(samples, clip.n_frames)
        clip.voiced = audio.frame_voicing(samples, clip.n_frames)
        clip.n_windows = recipe.n_windows(clip.n_frames, clip.n_samples)
        if clip.n_windows < 1:
            raise media.MediaError(
                "too_short", f"{ref.file}: only {clip.n_frames} frames at 25 fps"
            )
        _check_faces(clip, ref, clip.n_windows)
    except media.MediaError as error:
        if error.status == "truncated" and not clip.in_chunks:
            # Broken off: scored in chunks, which keep what decodes and say where it broke.
            return prepare_clip(ref, recipe, detector, detect_every, 0.0, *shots)
        clip.status, clip.error = error.status, str(error).splitlines()[0]
    except Exception as error:  # one bad clip must never stop a batch
        clip.status, clip.error = "error", f"{ref.file}: {type(error).__name__}: {error}"
    return clip


def _check_faces(clip: PreparedClip, ref: ClipRef, n_windows: int | None = None) -> None:
    """Raise `no_face` for a clip whose faces are seen too seldom to score: a frame counts
    when any face track shows a face there (a raw video's face changes at every shot cut,
    so no single track covers most of it), a window when one track fills its five frames."""
    from synccurate.io.media import MediaError

    faces = [track.has_face for track in clip.tracks if len(track.has_face)] or [clip.has_face]
    any_window = any(face_windows(has_face, n_windows).any() for has_face in faces)
    face_ratio = float(np.logical_or.reduce(faces).mean())
    if face_ratio < MIN_FACE_RATIO or not any_window:
        raise MediaError(
            "no_face",
            f"{ref.file}: a face in only {face_ratio:.0%} of frames "
            "(or in no run of 5 consecutive frames)",
        )


def face_windows(has_face: np.ndarray, count: int | None = None) -> np.ndarray:
    """The first `count` visual windows (default: all): True where all five frames have a face."""
    T = max(0, len(has_face) - audio.WINDOW_FRAMES + 1) if count is None else count
    return np.all([has_face[i : i + T] for i in range(audio.WINDOW_FRAMES)], axis=0)


def near_faces(valid: np.ndarray, reach: int) -> np.ndarray:
    """The windows that lie within `reach` windows of a face window (`valid`)."""
    return np.convolve(np.asarray(valid, dtype=bool), np.ones(2 * reach + 1), "same") > 0


@dataclass
class PrepareStep:
    """prepare_clip as a value an executor can ship to its workers and run on each clip."""

    recipe: InputRecipe
    detector_name: str = "auto"
    detect_every: int = 1
    chunk_seconds: float = CHUNK_SECONDS
    shot_detector: str | None = None
    shot_threshold: float | None = None
    detector: FaceDetector | None = field(default=None, repr=False, compare=False)

    def setup(self, device: str = "cpu") -> None:
        """Loads the face detector: once per worker, not once per clip."""
        from synccurate.faces.detectors import make_detector

        self.detector = make_detector(self.detector_name, device=device)

    def __call__(self, ref: ClipRef) -> PreparedClip:
        return prepare_clip(
            ref,
            self.recipe,
            self.detector,
            self.detect_every,
            self.chunk_seconds,
            self.shot_detector,
            self.shot_threshold,
        )

    def failed(self, ref: ClipRef, why: str) -> PreparedClip:
        """The status row of a clip whose worker died (a decoder crash must not end the run)."""
        return PreparedClip(ref, status="error", error=f"{ref.file}: worker failed: {why}")

    def __getstate__(self) -> dict:
        return {**vars(self), "detector": None}  # workers load their own detector


def prepare_clips(
    refs: list[ClipRef],
    recipe: InputRecipe,
    detector_name: str = "auto",
    device: str = "cpu",
    workers: int = 0,
    detect_every: int = 1,
    chunk_seconds: float = math.inf,
) -> Iterator[PreparedClip]:
    """Prepared clips in completion order, on this machine (0 workers = in this process).

    Whole clips by default (training and evaluation read their crops); with
    `chunk_seconds`, longer clips come back located only, to be scored in chunks.
    """
    from synccurate.pipeline.executors.local import LocalExecutor

    step = PrepareStep(recipe, detector_name, detect_every, chunk_seconds)
    return LocalExecutor(workers, device).run(step, refs)
