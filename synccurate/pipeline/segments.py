"""Speaker segments: the stretches of a clip where one face is on screen and speaks in sync.

A data set of talking heads wants clips in which one visible face speaks, cut at shot
boundaries, a few seconds to a few tens of seconds long. Per window, each face track has
its in-sync evidence: p_t (`models.sync.clip_metrics`) for probability models, the
frame-wise confidence `fconf` for distance models (SyncNet v2). A face speaks in a window
whose evidence reaches the threshold, in a run of such windows with some speech in it
(`window_speech`: a shut mouth also fits a pause); where two faces speak in the same
window, the one with the stronger evidence has it (turn taking). A face's speaking
windows, with pauses up to MAX_GAP_SECONDS bridged, make its segments; shorter than
MIN_SEGMENT_SECONDS are left out, longer than MAX_SEGMENT_SECONDS split.
Each segment gets the model's own metrics computed on its windows alone
(`timeline.window_metrics`, as the clip's row and the timeline's stretches) and says why
it ended (`END_REASONS`).

Times follow the windows: window t covers frames t … t+4, so a segment of windows a … b-1
covers frames a … b+3, start_s = a / 25 and end_s = (b + 4) / 25. No I/O here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from synccurate.faces import quality
from synccurate.faces.shots import shot_index
from synccurate.faces.tracks import runs
from synccurate.io.audio import VIDEO_FPS, WINDOW_FRAMES
from synccurate.models.base import SyncModel
from synccurate.pipeline.timeline import MIN_LSE_C, MIN_PROB, window_metrics

# VoxCeleb, AVSpeech, TalkingHead-1KH and LatentSync keep clips of 2 to 20 s or so.
MIN_SEGMENT_SECONDS = 2.0
MAX_SEGMENT_SECONDS = 20.0
# A pause between two sentences of one speaker is usually shorter than a second; a
# longer stretch without in-sync evidence ends the segment.
MAX_GAP_SECONDS = 1.0
# A segment that ends where neither a cut, a lost face nor another face takes over ended in
# "silence" when at least this share of the frames after it is unvoiced; otherwise a voice
# that is not this face's lips went on (someone off screen): "other_speaker".
SILENT_SHARE = 0.5
END_REASONS = ("shot_cut", "face_lost", "other_speaker", "silence", "max_length", "clip_end")
NO_SHOT = -1  # a window whose five frames straddle a cut belongs to no shot


@dataclass(frozen=True)
class SegmentOptions:
    """How speaker segments are cut (`score --segments`); each default named once here."""

    threshold: float | None = None  # window evidence of a speaking face (`default_threshold`)
    max_gap_seconds: float = MAX_GAP_SECONDS
    min_seconds: float = MIN_SEGMENT_SECONDS
    max_seconds: float = MAX_SEGMENT_SECONDS


@dataclass
class TrackEvidence:
    """One scored face track: its index, S [T, 2K+1], valid windows [T] (five frames with
    the face), and per frame has_face [n] and boxes [n, 4] (source px, NaN where none)."""

    track: int
    similarity: torch.Tensor
    valid: np.ndarray
    has_face: np.ndarray
    boxes: np.ndarray


def default_threshold(model: SyncModel) -> float:
    """The window evidence a speaking face reaches: P(sync) >= MIN_PROB for probability
    models, frame-wise confidence >= MIN_LSE_C (LatentSync's LSE-C bar) for distance ones."""
    return MIN_PROB if model.score_kind == "probability" else MIN_LSE_C


def window_evidence(
    model: SyncModel, similarity: torch.Tensor, valid: np.ndarray, offset_method: str = "mean"
) -> np.ndarray:
    """Per window, how clearly this face's lips follow the audio near the track's offset:
    p_t, or for a distance model its frame-wise confidence; -inf where the face is missing."""
    valid = np.asarray(valid, dtype=bool)
    if not valid.any():
        return np.full(len(valid), -np.inf)
    found = model.metrics(similarity, valid, offset_method)
    per_window = found.get("p_t") if model.score_kind == "probability" else found.get("fconf")
    if per_window is None:
        raise ValueError(f"{model.kind}: its metrics give no per-window evidence")
    return np.where(valid, np.asarray(per_window, dtype=float), -np.inf)


def window_shots(cuts: Sequence[int], n_frames: int, n_windows: int) -> np.ndarray:
    """The shot of each window, NO_SHOT where its five frames straddle a cut."""
    frame_shot = shot_index(cuts, n_frames)
    first, last = frame_shot[:n_windows], frame_shot[WINDOW_FRAMES - 1 :][:n_windows]
    return np.where(first == last, first, NO_SHOT)


def window_speech(voiced: np.ndarray, n_windows: int) -> np.ndarray:
    """Whether each window is speech: at least half of its five frames voiced (all windows
    when voicing is unknown)."""
    if not len(voiced):
        return np.ones(n_windows, dtype=bool)
    frames = np.pad(voiced, (0, max(0, n_windows + WINDOW_FRAMES - 1 - len(voiced))))
    share = np.convolve(frames.astype(float), np.ones(WINDOW_FRAMES), "valid") / WINDOW_FRAMES
    return share[:n_windows] >= 0.5


def _spoken_runs(in_sync: np.ndarray, speech: np.ndarray) -> np.ndarray:
    """`in_sync` without its runs of consecutive windows in which no window is speech: a
    shut mouth fits a pause as well as it fits silence, so a run that lies wholly in a
    pause (someone off screen stops for breath) is nobody's turn."""
    kept = in_sync.copy()
    for start, stop in runs(in_sync):
        if not speech[start:stop].any():
            kept[start:stop] = False
    return kept


def speaker_segments(
    model: SyncModel,
    tracks: Sequence[TrackEvidence],
    cuts: Sequence[int],
    n_frames: int,
    voiced: np.ndarray,
    *,
    threshold: float | None = None,
    max_gap_seconds: float = MAX_GAP_SECONDS,
    min_seconds: float = MIN_SEGMENT_SECONDS,
    max_seconds: float = MAX_SEGMENT_SECONDS,
    offset_method: str = "mean",
) -> list[dict]:
    """The speaker segments of one clip, in time order (see the module docstring).

    `voiced`: bool per frame (`io.audio.frame_voicing`). `threshold`: the window evidence
    of a speaking face (default `default_threshold`). Each segment: shot, face_track,
    start_s, end_s, the model's metrics on its windows (offset_frames, offset_fine,
    vote_share, prob_at_offset or lse_c, offscreen_ratio), face_px (median face height,
    source px), speech_ratio (voiced share of its frames) and end_reason (END_REASONS).
    """
    if not tracks:
        return []
    threshold = default_threshold(model) if threshold is None else threshold
    n_windows = min(len(track.similarity) for track in tracks)
    shots = window_shots(cuts, n_frames, n_windows)
    evidence = np.stack(
        [
            window_evidence(model, t.similarity[:n_windows], t.valid[:n_windows], offset_method)
            for t in tracks
        ]
    )
    speech = window_speech(np.asarray(voiced, dtype=bool), n_windows)
    speaking = np.stack(
        [_spoken_runs(row, speech) for row in (evidence >= threshold) & (shots != NO_SHOT)]
    )
    owner = np.where(speaking.any(0), np.where(speaking, evidence, -np.inf).argmax(0), -1)
    context = _Context(
        shots, owner, np.asarray(voiced, dtype=bool), round(max_gap_seconds * VIDEO_FPS)
    )
    max_windows = max(1, round(max_seconds * VIDEO_FPS) - (WINDOW_FRAMES - 1))
    segments = []
    for k, track in enumerate(tracks):
        valid = np.asarray(track.valid[:n_windows], dtype=bool)
        for start, stop, reason in context.stretches(k, valid):
            for a, b, why in _split(start, stop, reason, max_windows):
                if (b - a + WINDOW_FRAMES - 1) / VIDEO_FPS < min_seconds:
                    continue
                segments.append(_segment(model, track, a, b, why, context, offset_method))
    return sorted(segments, key=lambda s: (s["start_s"], s["face_track"]))


@dataclass
class _Context:
    """What the segments of every track are cut by: the shot of each window, the track that
    owns each window (-1: nobody speaks), voicing per frame, the longest bridged gap."""

    shots: np.ndarray
    owner: np.ndarray
    voiced: np.ndarray
    max_gap: int  # windows

    def stretches(self, k: int, valid: np.ndarray) -> list[tuple[int, int, str]]:
        """Track k's windows as [start, stop) stretches with why each ended: its owned
        windows, joined across gaps of at most max_gap windows where its face stays on
        screen, in the same shot, and no other face speaks."""
        owned = np.flatnonzero(self.owner == k)
        if not len(owned):
            return []
        breaks = np.flatnonzero(np.diff(owned) > 1)
        starts, stops = owned[np.r_[0, breaks + 1]], owned[np.r_[breaks, len(owned) - 1]] + 1
        runs = list(zip(starts, stops, strict=True))
        merged = [list(runs[0])]
        for start, stop in runs[1:]:
            end = merged[-1][1]
            if self._bridged(end, start, valid):
                merged[-1][1] = stop
            else:
                merged.append([start, stop])
        return [(int(a), int(b), self._end_reason(k, b, valid)) for a, b in merged]

    def _bridged(self, end: int, start: int, valid: np.ndarray) -> bool:
        return (
            start - end <= self.max_gap
            and bool((self.shots[end - 1 : start + 1] == self.shots[start]).all())
            and bool(valid[end:start].all())
            and bool((self.owner[end:start] < 0).all())
        )

    def _end_reason(self, k: int, stop: int, valid: np.ndarray) -> str:
        """What happens first in the windows after a stretch (within max_gap + 1 of them):
        the clip ends, a cut, the face is lost, another face speaks; else the voicing of
        those frames tells silence from a voice that is not this face's."""
        shot = self.shots[stop - 1]
        horizon = min(len(self.owner), stop + self.max_gap + 1)
        for t in range(stop, horizon):
            if self.shots[t] != shot:
                return "shot_cut"
            if not valid[t]:
                return "face_lost"
            if self.owner[t] not in (-1, k):
                return "other_speaker"
        if len(self.owner) - stop <= self.max_gap:
            return "clip_end"
        after = self.voiced[stop + WINDOW_FRAMES - 1 : horizon + WINDOW_FRAMES - 1]
        return "silence" if not len(after) or 1 - after.mean() >= SILENT_SHARE else "other_speaker"


def _split(start: int, stop: int, reason: str, max_windows: int) -> list[tuple[int, int, str]]:
    """[start, stop) cut into equal pieces of at most max_windows windows whose frames do not
    overlap (each piece after the first starts WINDOW_FRAMES - 1 windows after the previous
    one stops); all but the last end with "max_length"."""
    stride = WINDOW_FRAMES - 1
    pieces = -(-(stop - start + stride) // (max_windows + stride))  # ceiling division
    if pieces <= 1:
        return [(start, stop, reason)]
    size = (stop - start + stride) / pieces
    edges = [start + round(i * size) for i in range(pieces + 1)]
    return [
        (a, b - stride if i < pieces - 1 else stop, "max_length" if i < pieces - 1 else reason)
        for i, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True))
    ]


def _segment(
    model: SyncModel,
    track: TrackEvidence,
    start: int,
    stop: int,
    reason: str,
    context: _Context,
    offset_method: str,
) -> dict:
    """One segment's row: where it is, the model's metrics on its windows, its face."""
    frames = slice(start, stop + WINDOW_FRAMES - 1)
    valid = np.asarray(track.valid[start:stop], dtype=bool)
    return {
        "shot": int(context.shots[start]),
        "face_track": int(track.track),
        "start_s": start / VIDEO_FPS,
        "end_s": (stop + WINDOW_FRAMES - 1) / VIDEO_FPS,
        **window_metrics(model, track.similarity[start:stop], valid, offset_method),
        "face_px": quality.face_px(track.boxes[frames], track.has_face[frames]),
        "speech_ratio": float(context.voiced[frames].mean()) if len(context.voiced) else None,
        "end_reason": reason,
    }


def segment_rows(segments: list[dict], key: dict, model_id: str) -> list[dict]:
    """The rows of one clip in a segments table: its key columns, then one row a segment
    (`segment` 0, 1, … in time order)."""
    return [
        {**key, "segment": i, **segment, "model": model_id} for i, segment in enumerate(segments)
    ]
