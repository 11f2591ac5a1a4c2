"""Scoring: clips → prepare (decode + faces) → batched sync model → rows → parts.

Reader (`io.inputs.discover`, or a manifest), steps (`prepare.PrepareStep`, which an
executor runs in its workers with the model's weight-free input recipe;
`batching.similarity_matrices`, which embeds windows of many clips per model batch; `_row`),
writer (`store.parts.PartsWriter`: immutable Parquet parts, resumable). Any model kind of
`synccurate.models` runs through the same path; executors (`pipeline.executors`) run the
step they are given and know nothing of it. Each stage keeps its own counters so the
summary can say where the time went.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from synccurate.faces import quality
from synccurate.io import audio
from synccurate.io.inputs import ClipRef
from synccurate.models import provenance
from synccurate.models.base import SyncModel
from synccurate.models.sync import MAX_OFFSET
from synccurate.pipeline import streaming
from synccurate.pipeline.batching import default_batch_size, similarity_matrices
from synccurate.pipeline.executors import Executor
from synccurate.pipeline.executors.local import LocalExecutor
from synccurate.pipeline.prepare import CHUNK_SECONDS, PreparedClip, PrepareStep, face_windows
from synccurate.pipeline.segments import (
    SegmentOptions,
    TrackEvidence,
    segment_rows,
    speaker_segments,
)
from synccurate.pipeline.timeline import (
    SEGMENT_SECONDS,
    offset_over_time,
    stretches,
    timeline_rows,
)


@dataclass
class ScoredClip:
    """A clip's metric columns, its timeline and S, all of the speaker's face; and, when
    asked for, its speaker segments (every face track's)."""

    columns: dict
    timeline: list[dict]
    similarity: torch.Tensor  # S [T, 2K+1] of the speaker's windows
    segments: list[dict] = field(default_factory=list)


def score_faces(
    model: SyncModel,
    clips: list[PreparedClip],
    batch_size: int,
    device: torch.device,
    max_offset: int = MAX_OFFSET,
    offset_method: str = "mean",
) -> list[dict]:
    """The metric columns of each clip (see `score_clip_faces`)."""
    scored = score_clip_faces(model, clips, batch_size, device, max_offset, offset_method)
    return [clip.columns for clip in scored]


def score_clip_faces(
    model: SyncModel,
    clips: list[PreparedClip],
    batch_size: int,
    device: torch.device,
    max_offset: int = MAX_OFFSET,
    offset_method: str = "mean",
    segment_seconds: float = SEGMENT_SECONDS,
    segment_options: SegmentOptions | None = None,
    precision: str = "auto",
) -> list[ScoredClip]:
    """Every face track is scored (in shared batches) and the most in-sync one, the
    speaker, describes the clip; the others are summarised in `face_tracks`. The speaker's
    windows are also scored stretch by stretch: the offset over time."""
    views = [(c, i, view) for c, clip in enumerate(clips) for i, view in clip.face_views()]
    found = [v for *_, v in views]
    matrices = similarity_matrices(model, found, batch_size, device, max_offset, precision)
    per_clip: list[dict[int, torch.Tensor]] = [{} for _ in clips]
    for (c, i, _), S in zip(views, matrices, strict=True):
        per_clip[c][i] = S
    return [
        reduce_clip(model, clip, found, offset_method, segment_seconds, segment_options)
        for clip, found in zip(clips, per_clip, strict=True)
    ]


def score_in_chunks(
    model: SyncModel,
    clip: PreparedClip,
    batch_size: int,
    device: torch.device,
    max_offset: int = MAX_OFFSET,
    offset_method: str = "mean",
    segment_seconds: float = SEGMENT_SECONDS,
    chunk_seconds: float = CHUNK_SECONDS,
    segment_options: SegmentOptions | None = None,
    precision: str = "auto",
) -> ScoredClip:
    """`score_clip_faces` of one located clip (`PreparedClip.in_chunks`), its crops and
    audio cut and embedded chunk by chunk (`streaming`); the same numbers, flat memory."""
    matrices = streaming.similarities_in_chunks(
        model, clip, batch_size, device, max_offset, chunk_seconds, precision
    )
    tracks = range(len(clip.tracks))
    valid = {i: face_windows(clip.tracks[i].has_face, clip.n_windows) for i in tracks}
    found = {i: S for i, S in zip(tracks, matrices, strict=True) if valid[i].any()}
    if not found:
        from synccurate.io.media import MediaError

        raise MediaError("no_face", f"{clip.ref.file}: no run of 5 consecutive frames with a face")
    return reduce_clip(model, clip, found, offset_method, segment_seconds, segment_options)


def reduce_clip(
    model: SyncModel,
    clip: PreparedClip,
    matrices: dict[int, torch.Tensor],
    offset_method: str = "mean",
    segment_seconds: float = SEGMENT_SECONDS,
    segment_options: SegmentOptions | None = None,
) -> ScoredClip:
    """The clip's columns and timeline from S of each face track that shows a face; with
    `segment_options`, also its speaker segments."""
    valid = {i: face_windows(_track_faces(clip, i), clip.n_windows) for i in matrices}
    found = [(i, model.metrics(S, valid[i], offset_method)) for i, S in matrices.items()]
    columns = _speaker(clip, found)
    speaker = columns["face_track"]
    S = matrices[speaker]
    timeline = stretches(model, S, valid[speaker], segment_seconds, offset_method)
    scored = ScoredClip(columns | offset_over_time(timeline), timeline, S)
    if segment_options is not None:
        evidence = [
            TrackEvidence(i, S, valid[i], _track_faces(clip, i), _track_boxes(clip, i))
            for i, S in matrices.items()
        ]
        scored.segments = speaker_segments(
            model,
            evidence,
            clip.cuts or (),
            clip.n_frames,
            clip.voiced,
            offset_method=offset_method,
            **vars(segment_options),
        )
    return scored


def _track_boxes(clip: PreparedClip, track: int) -> np.ndarray:
    """The face boxes of `track` in source px (NaN where none)."""
    if clip.tracks:
        return clip.tracks[track].boxes
    return np.full((len(clip.has_face), 4), np.nan)


def _track_faces(clip: PreparedClip, track: int) -> np.ndarray:
    """Which frames show the face of `track` (the clip's own flags when it has one track)."""
    return clip.tracks[track].has_face if clip.tracks else clip.has_face


def _sync_strength(metrics: dict) -> float:
    """How clearly a face's lips follow the audio: P(sync), or LSE-C for distance models."""
    value = metrics.get("prob_at_offset")
    return value if value is not None else metrics.get("lse_c", float("-inf"))


def _rounded(columns: dict, digits: int = 4) -> dict:
    return {k: None if v is None else round(v, digits) for k, v in columns.items()}


def _speaker(clip: PreparedClip, found: list[tuple[int, dict]]) -> dict:
    """The speaker's (most in-sync track's) metrics and face columns; every scored track
    summarised in `face_tracks` when the clip has several."""
    track, metrics = max(found, key=lambda item: _sync_strength(item[1]))
    chosen = clip.tracks[track] if clip.tracks else None
    summary = [
        {
            "track": i,
            "offset_frames": m["offset_frames"],
            "strength": round(float(_sync_strength(m)), 4),
            "face_ratio": round(float(clip.tracks[i].has_face.mean()), 4),
            **_rounded(quality.track_columns(clip.tracks[i])),
        }
        for i, m in found
    ]
    faces = quality.track_columns(chosen) if chosen is not None else {}
    return (
        metrics
        | faces
        | {
            "n_faces": max(1, len(clip.tracks)),
            "face_track": track,
            "face_tracks": json.dumps(summary) if len(clip.tracks) > 1 else None,
            "face_ratio": float(chosen.has_face.mean()) if chosen is not None else None,
        }
    )


# --- writer ---------------------------------------------------------------------


def _row(
    clip: PreparedClip,
    model_id: str,
    metrics: dict | None = None,
    trained_on: str = provenance.UNKNOWN,
) -> dict:
    row = {
        "root": clip.ref.root,
        "path": clip.ref.path,
        "status": clip.status,
        "error": clip.error or None,
        "duration_s": clip.duration_s,
        "n_frames": clip.n_frames if clip.crops is not None or clip.frames_seen else None,
        "source_fps": clip.source_fps,
        "model": model_id,
        "weights_trained_on": trained_on,
        "synthetic_weights_on_real": provenance.mismatch(trained_on, clip.synthetic),
        "face_detector": clip.detector or None,
        "face_ratio": float(clip.has_face.mean()) if clip.has_face is not None else None,
        "silence_ratio": float(clip.silence.mean()) if clip.silence is not None else None,
        "speech_ratio": float(clip.voiced.mean()) if clip.voiced is not None else None,
        "n_shots": None if clip.cuts is None else len(clip.cuts) + 1,
    }
    if clip.tracks:  # the main face's, as face_ratio; a scored clip's speaker's replace them
        row |= quality.track_columns(clip.tracks[0])
    return row | (metrics or {})


# --- driver ---------------------------------------------------------------------


@dataclass
class RunStats:
    """Counters of one run, for the progress bar and the closing summary."""

    clips: int = 0
    video_seconds: float = 0.0
    statuses: Counter = field(default_factory=Counter)
    seconds: Counter = field(default_factory=Counter)  # audio / faces (worker time) / model
    synthetic_on_real: int = 0  # clips scored with synthetic-only weights that are not synth
    notes: list[str] = field(default_factory=list)  # said after the summary (fewer actors…)
    started: float = field(default_factory=time.perf_counter)

    @property
    def wall(self) -> float:
        return time.perf_counter() - self.started

    def count(self, clip: PreparedClip, row: dict) -> None:
        self.clips += 1
        self.statuses[row["status"]] += 1
        self.synthetic_on_real += bool(row["synthetic_weights_on_real"])
        self.video_seconds += clip.n_frames / audio.VIDEO_FPS
        for name, seconds in clip.timings.items():
            self.seconds[name] += seconds


# Tables written beside the scores, one row per clip × item: name → the rows of a scored
# clip (`score --timeline`, `--segments`).
SIDE_TABLES: dict[str, Callable[[ScoredClip, dict, str], list[dict]]] = {
    "timeline": lambda scored, key, model_id: timeline_rows(scored.timeline, key, model_id),
    "segments": lambda scored, key, model_id: segment_rows(scored.segments, key, model_id),
}


def score_clips(
    refs: list[ClipRef],
    writer,
    model: SyncModel,
    *,
    device: torch.device,
    done: set[tuple[str, str]] | frozenset = frozenset(),
    executor: Executor | None = None,
    detector_name: str = "auto",
    batch_size: int | None = None,
    detect_every: int = 1,
    max_offset: int = MAX_OFFSET,
    on_clip: Callable[[dict, RunStats], None] | None = None,
    offset_method: str = "mean",
    segment_seconds: float = SEGMENT_SECONDS,
    side_writers: dict | None = None,
    chunk_seconds: float = CHUNK_SECONDS,
    segment_options: SegmentOptions | None = None,
    shot_detector: str | None = None,
    shot_threshold: float | None = None,
    precision: str = "auto",
) -> RunStats:
    """Score every clip whose (root, path) is not in `done`; `writer.add(row)` as clips finish.

    The executor runs the prepare step (default: in this process); windows of several
    clips share model batches here, in the driver, which is also the only writer.
    offset_method: what decides offset_frames, "mean" (SPEC §6) or "vote" (`sync.vote_offset`).
    side_writers: table name (SIDE_TABLES) → writer: also `add` each clip's rows of that
    table (the timeline's stretches of `segment_seconds`, the speaker segments cut by
    `segment_options`; a clip with none, one row with its status), before its scores row.
    chunk_seconds: a longer clip is scored here chunk by chunk (`score_in_chunks`) while
    the workers prepare the next clips; shorter ones share model batches.
    shot_detector / shot_threshold: how the
    face detection pass finds shot cuts (`faces.shots`; None: it does not).
    precision: the encoders' arithmetic (`batching.PRECISIONS`).
    """
    batch_size = batch_size or default_batch_size(model, device)
    executor = executor or LocalExecutor(0, device.type)
    stats = RunStats()
    todo = [ref for ref in refs if (ref.root, ref.path) not in done]
    step = PrepareStep(
        model.recipe, detector_name, detect_every, chunk_seconds, shot_detector, shot_threshold
    )
    prepared = executor.run(step, todo)
    side_writers = side_writers or {}
    if "segments" in side_writers and segment_options is None:
        segment_options = SegmentOptions()
    if "segments" not in side_writers:
        segment_options = None  # not asked for: not computed
    model.to(device)
    pending: list[PreparedClip] = []

    trained_on = provenance.of_model(model)["data"]

    def finish(clip: PreparedClip, scored: ScoredClip | None = None) -> None:
        row = _row(clip, model.model_id, scored.columns if scored else None, trained_on)
        key = {"root": row["root"], "path": row["path"], "status": row["status"]}
        for name, side in side_writers.items():
            rows = SIDE_TABLES[name](scored, key, model.model_id) if scored else []
            for side_row in rows or [key | {"model": model.model_id}]:  # resume knows it
                side.add(side_row)
        writer.add(row)
        stats.count(clip, row)
        if on_clip:
            on_clip(row, stats)

    def run_model() -> None:
        start = time.perf_counter()
        scored = score_clip_faces(
            model,
            pending,
            batch_size,
            device,
            max_offset,
            offset_method,
            segment_seconds,
            segment_options,
            precision,
        )
        stats.seconds["model"] += time.perf_counter() - start
        for clip, found in zip(pending, scored, strict=True):
            finish(clip, found)
        pending.clear()

    def run_in_chunks(clip: PreparedClip) -> None:
        from synccurate.io.media import MediaError

        start = time.perf_counter()
        try:
            scored = score_in_chunks(
                model,
                clip,
                batch_size,
                device,
                max_offset,
                offset_method,
                segment_seconds,
                chunk_seconds,
                segment_options,
                precision,
            )
        except MediaError as error:
            clip.status, clip.error, scored = error.status, str(error).splitlines()[0], None
        stats.seconds["model"] += time.perf_counter() - start - clip.timings.get("decode", 0)
        finish(clip, scored)

    for clip in prepared:
        if clip.status != "ok":
            finish(clip)
            continue
        if clip.in_chunks:
            run_in_chunks(clip)
            continue
        pending.append(clip)
        del clip  # a scored clip's crops are freed before the next clip is awaited
        if sum(c.n_windows for c in pending) >= batch_size:
            run_model()
    if pending:
        run_model()
    return stats
