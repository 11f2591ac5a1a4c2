"""A long recording scored in chunks: cropped, embedded and reduced a stretch at a time.

Whole-clip scoring holds every crop and the whole spectrogram until the model has run:
about 80 MB a minute with IC-SyncNet's crops, 9 GB an hour with SyncNet v2's. Here the
crop pass (`faces.extract.iter_crops`) and the audio decode advance chunk by chunk. A
chunk of `chunk_frames` visual windows gets the crops its windows cover (the
WINDOW_FRAMES - 1 frames after its last window start included) and the audio features of
the stretch its ±K audio windows read, widened by AUDIO_REACH_FRAMES and started on a
FEATURE_ALIGN_FRAMES boundary, so that every feature column it uses is the one whole-clip
features would hold. Its rows of S are computed, then the chunk is let go.

What stays is S itself (2K+1 numbers a window, per face track) and a few facts a frame
(boxes, face flags, silence): the clip metrics, `p_t` and the timeline are computed from
the whole S, exactly as for a short clip. The chunk pass runs in the model's thread:
a decode thread ahead of it cost memory (its malloc arena fragmented, a 60-minute clip
grew to 945 MB against 392 MB without it) and gained no time (ffmpeg decodes in its own
process).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from synccurate.io import audio
from synccurate.io.audio import SAMPLES_PER_FRAME, VIDEO_FPS, WINDOW_FRAMES
from synccurate.models.base import SyncModel
from synccurate.pipeline.batching import similarity_matrices, window_reach
from synccurate.pipeline.prepare import PreparedClip, face_windows, near_faces

if TYPE_CHECKING:
    from synccurate.io.media import MediaError

# An audio window paired with visual window j reads the audio of video frames j - 3 …
# j + 9 at most (IC-SyncNet: 8 mel frames of context and the STFT's half window on each
# side; SyncNet v2's MFCC: j … j + 6). Features are computed this far beyond the audio
# windows a chunk needs, so their edge columns are never used.
AUDIO_REACH_FRAMES = 10
# 5 video frames = 16 mel frames = 20 MFCC columns: features of a stretch that starts on a
# multiple of 5 frames line up column for column with those of the whole clip.
FEATURE_ALIGN_FRAMES = 5
# A chunk's crops take at most this many bytes (all face tracks): `--chunk-seconds` for
# small crops (IC-SyncNet's 6 KiB a frame: 60 s is 9 MB), fewer seconds for large ones
# (SyncNet v2's 147 KiB a frame: 17 s).
CHUNK_CROP_BYTES = 64 << 20


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has malloc_trim), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()


def _give_back_free_memory() -> None:
    """Hands the free pages of the heap back to the system after a chunk (glibc only).

    Each chunk frees and makes again buffers of ~10 MB (crops, audio, features) that
    glibc serves from a heap whose holes it keeps: a 60-minute clip's peak RSS wandered
    between 597 and 704 MB over three runs (5 minutes: 498 MB), and stayed at 545-559 MB
    with a trim after every chunk, in the same time.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def min_chunk_frames(max_offset: int) -> int:
    """The shortest chunk: longer than the reach of its audio windows, so a chunk's
    neighbour decides whether the clip goes on past them."""
    return 2 * (max_offset + AUDIO_REACH_FRAMES + WINDOW_FRAMES)


@dataclass
class WindowChunk:
    """One face track's windows first_window … first_window + n_windows - 1 (a
    `batching.WindowSource`)."""

    crops: np.ndarray | None  # uint8 [n_windows + WINDOW_FRAMES - 1, H, W, 3]; None: unread
    features: np.ndarray  # audio features from video frame `feature_start` on
    n_windows: int
    first_window: int
    feature_start: int
    clip_windows: int  # the clip's windows as far as decoded (exact once both streams end)
    needed: np.ndarray | None = None  # its windows near a face window (`_near_faces`); None: all

    def windows_to_score(self, reach: int) -> np.ndarray | None:
        """`needed`, found over the whole clip (a face window in the next chunk needs rows
        of this one) with the model's reach, which `reach` is."""
        return self.needed


def _next_or_end(items: Iterator, stream: _Samples | _Crops):
    """The next item, or None at the end; a stream that broke off ends where it broke
    (`MediaError("truncated")`, kept as `stream.broken`)."""
    from synccurate.io.media import MediaError

    try:
        return next(items, None)
    except MediaError as error:
        if error.status != "truncated":
            raise
        stream.broken = error
        return None


class _Samples:
    """The clip's 16 kHz audio as it decodes: samples from `start` on, earlier ones let go."""

    def __init__(self, blocks: Iterator[np.ndarray]):
        self.blocks = blocks
        self.buffer = np.zeros(0, dtype=np.float32)
        self.start = 0
        self.ended = False
        self.broken: MediaError | None = None

    @property
    def end(self) -> int:
        return self.start + len(self.buffer)

    def decode_to(self, sample: int) -> None:
        parts, end = [self.buffer], self.end
        while end < sample and not self.ended:
            block = _next_or_end(self.blocks, self)
            if block is None:
                self.ended = True
            else:
                parts.append(block)
                end += len(block)
        if len(parts) > 1:
            self.buffer = np.concatenate(parts)

    def piece(self, start: int, stop: int) -> np.ndarray:
        return self.buffer[start - self.start : max(0, stop - self.start)]

    def forget_before(self, sample: int) -> None:
        if sample > self.start:
            self.buffer = self.buffer[sample - self.start :].copy()
            self.start = sample


class _Crops:
    """Every track's crops as they are cut: frames from `start` on, earlier ones let go.

    Each track's frames are one buffer, made anew as blocks arrive (a piece held for long
    alongside newer ones fragmented the heap: SyncNet v2 at 20 minutes peaked at 1,066 MB
    against 857). A track other than the first that shows no face in the frames held has
    no buffer (None): a raw video's many shots each start tracks absent from most of it.
    """

    def __init__(self, chunks: Iterator[list[np.ndarray | None]], faces: list[np.ndarray]):
        self.chunks = chunks
        self.faces = faces  # has_face of each track (pass 1), frames from 0 on
        self.buffers: list[np.ndarray | None] = [None] * len(faces)
        self.start = 0
        self.ended = False
        self.broken: MediaError | None = None

    @property
    def end(self) -> int:
        first = self.buffers[0]
        return self.start + (0 if first is None else len(first))

    def cut_to(self, frame: int) -> None:
        held = self.end - self.start
        parts: list[list[np.ndarray | None]] = [[b] if held else [] for b in self.buffers]
        lengths = [held] if held else []
        end = self.end
        while end < frame and not self.ended:
            chunk = _next_or_end(self.chunks, self)
            if chunk is None:
                self.ended = True
                break
            for track, crops in zip(parts, chunk, strict=True):
                track.append(crops)
            lengths.append(len(chunk[0]))
            end += len(chunk[0])
        self.buffers = [_joined(pieces, lengths) for pieces in parts]
        self._drop_absent()

    def crops(self, track: int, start: int, stop: int) -> np.ndarray | None:
        held = self.buffers[track]
        return None if held is None else held[start - self.start : stop - self.start]

    def forget_before(self, frame: int) -> None:
        if frame > self.start:
            self.buffers = [None if b is None else b[frame - self.start :] for b in self.buffers]
            self.start = frame
            self._drop_absent()

    def _drop_absent(self) -> None:
        for k in range(1, len(self.buffers)):
            if self.buffers[k] is not None and not self.faces[k][self.start : self.end].any():
                self.buffers[k] = None


def _joined(pieces: list[np.ndarray | None], lengths: list[int]) -> np.ndarray | None:
    """A track's consecutive pieces as one array (zeros for a piece without a face); None
    when no piece has one."""
    real = next((piece for piece in pieces if piece is not None), None)
    if real is None or len(pieces) == 1:
        return real
    return np.concatenate(
        [
            np.zeros((length, *real.shape[1:]), real.dtype) if piece is None else piece
            for piece, length in zip(pieces, lengths, strict=True)
        ]
    )


def iter_window_chunks(
    clip: PreparedClip, model: SyncModel, chunk_frames: int, max_offset: int
) -> Iterator[list[WindowChunk]]:
    """The clip's windows in chunks of `chunk_frames`, one `WindowChunk` per face track.

    When the stream ends, the clip holds its frame and sample counts, its windows and its
    per-frame silence and voicing, as a whole-clip `prepare_clip` would have set them. A
    file that broke off is scored as far as it decodes, and its status says where it broke
    ("truncated"). Raises MediaError when a stream cannot be decoded otherwise.
    """
    from synccurate.faces.extract import iter_crops
    from synccurate.io import media

    if chunk_frames < min_chunk_frames(max_offset):
        shortest = min_chunk_frames(max_offset)
        raise ValueError(f"chunks of {chunk_frames} frames: at least {shortest} are needed")
    recipe = model.recipe
    faces = [track.has_face for track in clip.tracks]
    crops = _Crops(iter_crops(clip.media, clip.tracks, recipe), faces)
    samples = _Samples(media.iter_audio(clip.media))
    reach = max_offset + AUDIO_REACH_FRAMES
    silence, voiced = [], []
    near = [_near_faces(track.has_face, window_reach(model)) for track in clip.tracks]
    t0 = 0
    while True:
        # Read one chunk further than this one needs: while a stream goes on past it, the
        # clip's windows go on past every audio window this chunk reads.
        crops.cut_to(t0 + 2 * chunk_frames + WINDOW_FRAMES)
        samples.decode_to((t0 + 2 * chunk_frames + reach + WINDOW_FRAMES) * SAMPLES_PER_FRAME)
        windows = recipe.n_windows(crops.end, samples.end)  # exact once both streams ended
        t1 = min(t0 + chunk_frames, windows)
        if t1 <= t0:
            break
        first = _feature_start(t0, reach)
        stretch = samples.piece(first * SAMPLES_PER_FRAME, (t1 + reach) * SAMPLES_PER_FRAME)
        features = recipe.audio_features(stretch)
        last = t1 + WINDOW_FRAMES - 1
        yield [
            WindowChunk(
                _chunk_crops(crops, i, t0, last, needed, recipe.crop_hw),
                features,
                t1 - t0,
                t0,
                first,
                windows,
                needed,
            )
            for i, needed in enumerate(_chunk_of(track_near, t0, t1) for track_near in near)
        ]
        silence_, voiced_ = _frame_audio(samples, t0, t1)
        silence.append(silence_)
        voiced.append(voiced_)
        t0 = t1
        crops.forget_before(t0)
        samples.forget_before(_feature_start(t0, reach) * SAMPLES_PER_FRAME)
    if t0 == 0:
        raise media.MediaError("too_short", f"{clip.ref.file}: only {crops.end} frames at 25 fps")
    silence_, voiced_ = _frame_audio(samples, t0, crops.end)
    clip.silence = np.concatenate([*silence, silence_])
    clip.voiced = np.concatenate([*voiced, voiced_])
    clip.frames_seen, clip.n_samples, clip.n_windows = crops.end, samples.end, t0
    clip.has_face = clip.tracks[0].has_face  # the whole frame's track is complete now
    if broken := crops.broken or samples.broken:
        clip.status, clip.error = broken.status, str(broken).splitlines()[0]


def _near_faces(has_face: np.ndarray, reach: int) -> np.ndarray | None:
    """The clip's windows within `reach` of one that shows the track's face in all five
    frames, so that a chunk also scores the rows its neighbour's face windows read; None
    for the whole frame's track (its faces are known only as it is cut: all of them)."""
    if not len(has_face):
        return None
    return near_faces(face_windows(has_face), reach)


def _chunk_crops(
    crops: _Crops,
    track: int,
    start: int,
    stop: int,
    needed: np.ndarray | None,
    crop_hw: tuple[int, int],
) -> np.ndarray | None:
    """A track's crops of frames start … stop - 1 for a chunk; None when none of the
    chunk's windows is scored for it (nothing reads them), zeros when its face lies only
    past them."""
    if needed is not None and not needed.any():
        return None
    held = crops.crops(track, start, stop)
    return np.zeros((stop - start, *crop_hw, 3), dtype=np.uint8) if held is None else held


def _chunk_of(near: np.ndarray | None, start: int, stop: int) -> np.ndarray | None:
    if near is None:
        return None
    part = near[start:stop]
    return np.pad(part, (0, stop - start - len(part)))


def _feature_start(first_window: int, reach: int) -> int:
    """The frame where the audio features of a chunk from `first_window` on start."""
    return max(0, (first_window - reach) // FEATURE_ALIGN_FRAMES * FEATURE_ALIGN_FRAMES)


def _frame_audio(samples: _Samples, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Silence and voicing of video frames start … stop - 1 (silent past the audio's end)."""
    piece = samples.piece(start * SAMPLES_PER_FRAME, stop * SAMPLES_PER_FRAME)
    return audio.frame_silence(piece, stop - start), audio.frame_voicing(piece, stop - start)


def faces_at_once(clip: PreparedClip) -> int:
    """The most face tracks that show a face on one frame (at least 1): how many tracks
    hold crops in a chunk besides the first, whose crops are always cut."""
    shown = [track.has_face for track in clip.tracks if len(track.has_face)]
    return max(1, int(np.sum(shown, axis=0).max())) if shown else 1


def chunk_length(
    model: SyncModel, clip: PreparedClip, chunk_seconds: float, max_offset: int
) -> int:
    """Windows in a chunk: `chunk_seconds` of them, fewer when their crops would take more
    than CHUNK_CROP_BYTES (the tracks that show a face at once, and the first), never fewer
    than `min_chunk_frames`."""
    height, width = model.recipe.crop_hw
    frame_bytes = height * width * 3 * min(len(clip.tracks), faces_at_once(clip) + 1)
    wanted = min(round(chunk_seconds * VIDEO_FPS), CHUNK_CROP_BYTES // frame_bytes)
    return max(min_chunk_frames(max_offset), wanted)


def similarities_in_chunks(
    model: SyncModel,
    clip: PreparedClip,
    batch_size: int,
    device: torch.device,
    max_offset: int,
    chunk_seconds: float,
    precision: str = "auto",
) -> list[torch.Tensor]:
    """S of every face track of a located clip (`PreparedClip.in_chunks`), chunk by chunk.

    Raises MediaError when the clip cannot be decoded; `clip.frames_seen` then says how
    far it got (its S rows up to there are lost with the exception: see `partial`).
    """
    chunk_frames = chunk_length(model, clip, chunk_seconds, max_offset)
    rows: list[list[torch.Tensor]] = [[] for _ in clip.tracks]
    waited = 0.0  # in the decode and crop pass, between two chunks
    chunks = iter_window_chunks(clip, model, chunk_frames, max_offset)
    while True:
        start = time.perf_counter()
        views = next(chunks, None)
        waited += time.perf_counter() - start
        if views is None:
            break
        matrices = similarity_matrices(model, views, batch_size, device, max_offset, precision)
        for track, S in zip(rows, matrices, strict=True):
            track.append(S)
        _give_back_free_memory()
    clip.timings["decode"] = waited  # the model's wait for crops and audio
    return [torch.cat(track) for track in rows]
