"""Scoring: clips → prepare (decode + faces) → batched sync model → rows → parts.

Reader (`discover`, or a manifest), steps (`prepare_clip`, which an executor runs in
workers with the model's weight-free input recipe; `similarity_matrices`, which embeds
windows of many clips per model batch; `_row`), writer (`store.PartsWriter`: immutable
Parquet parts, resumable). Any model kind of `synccurate.models` runs through the same
path; executors (`synccurate.executors`) are kept apart from the steps. Each stage keeps
its own counters so the summary can say where the time went.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

# faces and media (cv2, PyAV, scipy) are imported inside the functions that decode and crop,
# which run in the worker processes: the process that holds the model never loads them.
from synccurate import audio, provenance
from synccurate.models.base import InputRecipe, SyncModel
from synccurate.sync import MAX_OFFSET

if TYPE_CHECKING:
    from synccurate import faces
    from synccurate.executors import Executor

MIN_FACE_RATIO = 0.5  # below this fraction of frames with a face the clip is `no_face`

# --- reader -------------------------------------------------------------------


@dataclass(frozen=True)
class ClipRef:
    """A clip as found: the root it was found under and its path relative to that root."""

    root: str
    path: str

    @property
    def file(self) -> Path:
        return Path(self.root) / self.path


def discover(paths: Iterable[str | Path]) -> list[ClipRef]:
    """Video files under the given folders (recursively) plus files named directly.

    Every name found is returned, also a dangling symlink or an unreadable file, so that
    each gets a row saying why it was not scored (`unreadable`); a sub-folder that cannot
    be listed is returned itself for the same reason.
    """
    refs: list[ClipRef] = []
    for given in paths:
        path = Path(given).resolve()
        if path.is_dir():
            refs += [ClipRef(str(path), relative) for relative in _video_files(path)]
        elif path.exists():
            refs.append(ClipRef(str(path.parent), path.name))
        elif Path(given).is_symlink():
            link = Path(os.path.abspath(given))
            refs.append(ClipRef(str(link.parent), link.name))
        else:
            raise FileNotFoundError(f"{given}: no such file or folder")
    return list(dict.fromkeys(refs))


def _video_files(folder: Path) -> list[str]:
    """Paths relative to `folder` of its video files, sorted like Path objects."""
    from synccurate.media import VIDEO_EXTENSIONS

    found: list[str] = []

    def unlisted(error: OSError) -> None:
        if error.filename and Path(error.filename) != folder:
            found.append(Path(error.filename).relative_to(folder).as_posix())
        elif error.filename:
            raise error

    for directory, _, names in os.walk(folder, onerror=unlisted):
        for name in names:  # also symlinks whose target is missing
            if Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                found.append((Path(directory) / name).relative_to(folder).as_posix())
    return sorted(found, key=lambda relative: relative.split("/"))


def unreadable(file: Path) -> str | None:
    """Why `file` cannot be opened ('dangling symlink to …', 'permission denied'), or None."""
    if file.is_symlink() and not file.exists():
        return f"dangling symlink to {os.readlink(file)}"
    if file.exists() and not os.access(file, os.R_OK):
        return "permission denied"
    if file.is_dir():
        return "a folder that could not be listed"
    return None


def shard_of(path: str, count: int) -> int:
    """The shard (0 … count-1) of a clip: a stable hash of its path relative to its root."""
    return zlib.crc32(path.encode()) % count


def shard(refs: list[ClipRef], index: int, count: int) -> list[ClipRef]:
    """The clips of shard `index` of `count`, by a stable hash of the relative path.

    Independent jobs (a Slurm array, several machines) each take one shard and write
    into the same output folder; the same clip always lands in the same shard.
    """
    if not 0 <= index < count:
        raise ValueError(f"--shard {index}/{count}: the index must be in 0 … {count - 1}")
    return [ref for ref in refs if shard_of(ref.path, count) == index]


# --- step 1: decode + faces (runs in worker processes) --------------------------


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
    detector: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    # Every face track (main face first); crops / has_face above are the main face's.
    tracks: list[faces.MouthTrack] = field(default_factory=list)
    synthetic: bool | None = None  # a `synccurate synth` clip (its tag); None = not probed

    @property
    def n_frames(self) -> int:
        return 0 if self.crops is None else len(self.crops)

    def valid_windows(self) -> np.ndarray:
        """The scored visual windows whose five frames all show the face."""
        return face_windows(self.has_face, self.n_windows)

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
    ref: ClipRef, recipe: InputRecipe, detector: faces.FaceDetector, detect_every: int = 1
) -> PreparedClip:
    """Decode audio and the model's crops of one clip; never raises for a bad clip."""
    from synccurate import faces, media

    clip = PreparedClip(ref, detector=getattr(detector, "name", ""))
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
        samples = media.decode_audio(info)
        clip.features, clip.n_samples = recipe.audio_features(samples), len(samples)
        clip.timings["audio"] = time.perf_counter() - start
        start = time.perf_counter()
        clip.tracks = faces.extract_face_tracks(info, detector, recipe, detect_every=detect_every)
        clip.timings["faces"] = time.perf_counter() - start
        main = clip.tracks[0]
        clip.crops, clip.has_face, clip.detector = main.crops, main.has_face, main.detector
        clip.silence = audio.frame_silence(samples, clip.n_frames)
        clip.n_windows = recipe.n_windows(clip.n_frames, clip.n_samples)
        if clip.n_windows < 1:
            raise media.MediaError(
                "too_short", f"{ref.file}: only {clip.n_frames} frames at 25 fps"
            )
        if clip.has_face.mean() < MIN_FACE_RATIO or not clip.valid_windows().any():
            raise media.MediaError(
                "no_face",
                f"{ref.file}: a face in only {clip.has_face.mean():.0%} of frames "
                "(or in no run of 5 consecutive frames)",
            )
    except media.MediaError as error:
        clip.status, clip.error = error.status, str(error).splitlines()[0]
    except Exception as error:  # one bad clip must never stop a batch
        clip.status, clip.error = "error", f"{ref.file}: {type(error).__name__}: {error}"
    return clip


def prepare_clips(
    refs: list[ClipRef],
    recipe: InputRecipe,
    detector_name: str = "auto",
    device: str = "cpu",
    workers: int = 0,
    detect_every: int = 1,
) -> Iterator[PreparedClip]:
    """Prepared clips in completion order, on this machine (0 workers = in this process)."""
    from synccurate.executors import LocalExecutor

    return LocalExecutor(workers, device).prepare(refs, recipe, detector_name, detect_every)


def face_windows(has_face: np.ndarray, count: int | None = None) -> np.ndarray:
    """The first `count` visual windows (default: all): True where all five frames have a face."""
    T = max(0, len(has_face) - audio.WINDOW_FRAMES + 1) if count is None else count
    return np.all([has_face[i : i + T] for i in range(audio.WINDOW_FRAMES)], axis=0)


# --- step 2: batched embedding -------------------------------------------------


def _chunks(lengths: list[int], batch_size: int) -> Iterator[list[tuple[int, int, int]]]:
    """Batches of (item, start, stop) spans filling batch_size across items."""
    batch: list[tuple[int, int, int]] = []
    room = batch_size
    for item, length in enumerate(lengths):
        start = 0
        while start < length:
            stop = min(length, start + room)
            batch.append((item, start, stop))
            room -= stop - start
            start = stop
            if room == 0:
                yield batch
                batch, room = [], batch_size
    if batch:
        yield batch


def embed_batched(
    encode: Callable[[torch.Tensor], torch.Tensor],
    make_windows: Callable[[int, int, int], torch.Tensor],
    lengths: list[int],
    batch_size: int,
    device: torch.device,
) -> list[torch.Tensor]:
    """Embed every window of several clips exactly once, in batches that span clips."""
    outputs: list[list[torch.Tensor]] = [[] for _ in lengths]
    for batch in _chunks(lengths, batch_size):
        parts = [make_windows(item, start, stop) for item, start, stop in batch]
        windows = parts[0] if len(parts) == 1 else torch.cat(parts)  # no copy for one clip
        embedded = encode(windows.to(device, non_blocking=True)).float()
        offset = 0
        for item, start, stop in batch:
            outputs[item].append(embedded[offset : offset + stop - start])
            offset += stop - start
    return [torch.cat(parts) if parts else torch.empty(0) for parts in outputs]


def similarity_matrices(
    model: SyncModel,
    clips: list[PreparedClip],
    batch_size: int,
    device: torch.device,
    max_offset: int = MAX_OFFSET,
    amp: bool | None = None,
) -> list[torch.Tensor]:
    """S for each clip; visual and audio windows of all clips share model batches.

    `amp` (default: on for CUDA) runs the encoders in half precision (float16 on CUDA,
    bfloat16 on CPU, where it only serves to test the same code path).
    """
    recipe = model.recipe
    crops = [torch.from_numpy(c.crops) for c in clips]
    T = [c.n_windows for c in clips]

    def visual(item: int, start: int, stop: int) -> torch.Tensor:
        return recipe.visual_windows(crops[item], start, stop)

    def audio_(item: int, start: int, stop: int) -> torch.Tensor:
        return recipe.audio_windows(clips[item].features, start - max_offset, stop - start)

    if amp is None:
        amp = device.type == "cuda"
    half = torch.float16 if device.type == "cuda" else torch.bfloat16
    autocast = torch.autocast(device.type, dtype=half) if amp else nullcontext()
    with torch.inference_mode():
        with autocast:
            v = embed_batched(model.embed_visual, visual, T, batch_size, device)
            # Audio windows may be far smaller than visual ones (SyncNet v2: 1 KB against
            # 3 MB); a model can ask for larger audio batches, which use threads better.
            audio_batch = max(batch_size, getattr(model, "audio_batch_size", 0))
            a = embed_batched(
                model.embed_audio, audio_, [t + 2 * max_offset for t in T], audio_batch, device
            )
        return [model.similarity(vi, ai, max_offset) for vi, ai in zip(v, a, strict=True)]


def score_faces(
    model: SyncModel,
    clips: list[PreparedClip],
    batch_size: int,
    device: torch.device,
    max_offset: int = MAX_OFFSET,
    offset_method: str = "mean",
) -> list[dict]:
    """The metric columns of each clip: every face track is scored (in shared batches) and
    the most in-sync one, the speaker, describes the clip; the others are summarised in
    `face_tracks`. One-face clips are scored exactly as before."""
    views = [(c, i, view) for c, clip in enumerate(clips) for i, view in clip.face_views()]
    matrices = similarity_matrices(model, [v for *_, v in views], batch_size, device, max_offset)
    per_clip: list[list[tuple[int, dict]]] = [[] for _ in clips]
    for (c, i, view), S in zip(views, matrices, strict=True):
        per_clip[c].append((i, model.metrics(S, view.valid_windows(), offset_method)))
    return [_speaker(clip, found) for clip, found in zip(clips, per_clip, strict=True)]


def _sync_strength(metrics: dict) -> float:
    """How clearly a face's lips follow the audio: P(sync), or LSE-C for distance models."""
    value = metrics.get("prob_at_offset")
    return value if value is not None else metrics.get("lse_c", float("-inf"))


def _speaker(clip: PreparedClip, found: list[tuple[int, dict]]) -> dict:
    track, metrics = max(found, key=lambda item: _sync_strength(item[1]))
    chosen = clip.tracks[track] if clip.tracks else None
    summary = [
        {
            "track": i,
            "offset_frames": m["offset_frames"],
            "strength": round(float(_sync_strength(m)), 4),
            "face_ratio": round(float(clip.tracks[i].has_face.mean()), 4),
        }
        for i, m in found
    ]
    return metrics | {
        "n_faces": max(1, len(clip.tracks)),
        "face_track": track,
        "face_tracks": json.dumps(summary) if len(clip.tracks) > 1 else None,
        "face_ratio": float(chosen.has_face.mean()) if chosen is not None else None,
    }


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
        "n_frames": clip.n_frames if clip.crops is not None else None,
        "source_fps": clip.source_fps,
        "model": model_id,
        "weights_trained_on": trained_on,
        "synthetic_weights_on_real": provenance.mismatch(trained_on, clip.synthetic),
        "face_detector": clip.detector or None,
        "face_ratio": float(clip.has_face.mean()) if clip.has_face is not None else None,
        "silence_ratio": float(clip.silence.mean()) if clip.silence is not None else None,
    }
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


CPU_BATCH_BYTES = 1 << 30  # activations a default model batch may hold on CPU: 1 GiB


def default_batch_size(model: SyncModel, device: torch.device) -> int:
    """The model's own batch size: on CPU its `cpu_batch_size`, no larger than
    CPU_BATCH_BYTES of activations allow.

    On CPU, batches past a few dozen windows are no faster and only hold memory: the paper
    IC-SyncNet at 256 windows a batch peaked at 6.9 GB and was slower than at 64. On a GPU
    the model's `batch_size` stands (its memory is sized with --batch-size).
    """
    if device.type != "cpu":
        return model.batch_size
    own = getattr(model, "cpu_batch_size", model.batch_size)
    if not isinstance(getattr(model, "network", None), torch.nn.Module):
        return own  # a stand-in model: no network to measure
    return max(1, min(own, CPU_BATCH_BYTES // activation_bytes_per_window(model)))


def activation_bytes_per_window(model: SyncModel) -> int:
    """Bytes one visual window's activations take in the visual encoder's busiest layer.

    Measured by running one blank window with hooks on every leaf module: the largest
    input + output of a single layer. It is a floor of the working set (a residual
    branch keeps one more tensor alive), which CPU_BATCH_BYTES leaves room for.
    """
    recipe = model.recipe
    frames = torch.zeros((audio.WINDOW_FRAMES, *recipe.crop_hw, 3), dtype=torch.uint8)
    busiest = 0

    def measure(module, inputs, output) -> None:
        nonlocal busiest
        tensors = [*inputs, output]
        size = sum(t.nelement() * t.element_size() for t in tensors if torch.is_tensor(t))
        busiest = max(busiest, size)

    leaves = [m for m in model.network.modules() if not list(m.children())]
    hooks = [leaf.register_forward_hook(measure) for leaf in leaves]
    try:
        with torch.inference_mode():
            model.embed_visual(recipe.visual_windows(frames, 0, 1))
    finally:
        for hook in hooks:
            hook.remove()
    return max(1, busiest)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return torch.device(name)


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
) -> RunStats:
    """Score every clip whose (root, path) is not in `done`; `writer.add(row)` as clips finish.

    The executor runs the prepare step (default: in this process); windows of several
    clips share model batches here, in the driver, which is also the only writer.
    offset_method: what decides offset_frames, "mean" (SPEC §6) or "vote" (`sync.vote_offset`).
    """
    from synccurate.executors import LocalExecutor

    batch_size = batch_size or default_batch_size(model, device)
    executor = executor or LocalExecutor(0, device.type)
    stats = RunStats()
    todo = [ref for ref in refs if (ref.root, ref.path) not in done]
    prepared = executor.prepare(todo, model.recipe, detector_name, detect_every)
    model.to(device)
    pending: list[PreparedClip] = []

    trained_on = provenance.of_model(model)["data"]

    def finish(clip: PreparedClip, metrics=None) -> None:
        row = _row(clip, model.model_id, metrics, trained_on)
        writer.add(row)
        stats.count(clip, row)
        if on_clip:
            on_clip(row, stats)

    def run_model() -> None:
        start = time.perf_counter()
        scored = score_faces(model, pending, batch_size, device, max_offset, offset_method)
        stats.seconds["model"] += time.perf_counter() - start
        for clip, metrics in zip(pending, scored, strict=True):
            finish(clip, metrics)
        pending.clear()

    for clip in prepared:
        if clip.status != "ok":
            finish(clip)
            continue
        pending.append(clip)
        del clip  # a scored clip's crops are freed before the next clip is awaited
        if sum(c.n_windows for c in pending) >= batch_size:
            run_model()
    if pending:
        run_model()
    return stats
