"""Scoring driver: clips → (decode + faces in workers) → batched sync model → scores table.

Reader (discover), step (prepare in worker processes with the model's weight-free
input recipe, then embed windows of many clips per model batch), writer
(ScoresTable: atomic, resumable Parquet). Any model kind of `synccurate.models`
runs through the same path. Each stage keeps its own counters so the summary can
say where the time went.
"""

from __future__ import annotations

import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from synccurate import audio, faces, media, provenance
from synccurate.models.base import InputRecipe, SyncModel
from synccurate.sync import MAX_OFFSET
from synccurate.tables import write_table

MIN_FACE_RATIO = 0.5  # below this fraction of frames with a face the clip is `no_face`

COLUMNS = {
    "root": "string",
    "path": "string",
    "status": "string",
    "error": "string",
    "duration_s": "float64",
    "n_frames": "Int64",
    "source_fps": "float64",
    "offset_frames": "Int64",
    "offset_seconds": "float64",
    "prob_at_offset": "float64",
    "offscreen_ratio": "float64",
    "confidence": "float64",
    "lse_d": "float64",
    "lse_c": "float64",
    "face_ratio": "float64",
    "silence_ratio": "float64",
    "at_search_edge": "boolean",
    "vote_offset": "Int64",
    "vote_share": "float64",
    "offset_method": "string",
    "model": "string",
    "weights_trained_on": "string",  # synthetic / real / unknown (provenance)
    "synthetic_weights_on_real": "boolean",  # synthetic-only weights on a non-synth clip
    "face_detector": "string",
    "p_t": "object",
    "onscreen": "object",
    "profile": "object",
    "fconf": "object",
}


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
    """Video files under the given folders (recursively) plus files named directly."""
    refs: list[ClipRef] = []
    for given in paths:
        path = Path(given).resolve()
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and file.suffix.lower() in media.VIDEO_EXTENSIONS:
                    refs.append(ClipRef(str(path), file.relative_to(path).as_posix()))
        elif path.exists():
            refs.append(ClipRef(str(path.parent), path.name))
        else:
            raise FileNotFoundError(f"{given}: no such file or folder")
    return list(dict.fromkeys(refs))


def shard(refs: list[ClipRef], index: int, count: int) -> list[ClipRef]:
    """The clips of shard `index` of `count`, by a stable hash of the relative path.

    Independent jobs (a Slurm array, several machines) each take one shard and write
    their own table; the same clip always lands in the same shard.
    """
    if not 0 <= index < count:
        raise ValueError(f"--shard {index}/{count}: the index must be in 0 … {count - 1}")
    return [ref for ref in refs if zlib.crc32(ref.path.encode()) % count == index]


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
    synthetic: bool | None = None  # a `synccurate synth` clip (its tag); None = not probed

    @property
    def n_frames(self) -> int:
        return 0 if self.crops is None else len(self.crops)

    def valid_windows(self) -> np.ndarray:
        """The scored visual windows whose five frames all show the face."""
        return face_windows(self.has_face, self.n_windows)


_worker_detector: faces.FaceDetector | None = None


def _init_worker(detector_name: str, device: str) -> None:
    global _worker_detector
    import cv2

    torch.set_num_threads(1)  # each worker one core: the pool, not threads, gives parallelism
    cv2.setNumThreads(1)
    _worker_detector = faces.make_detector(detector_name, device=device)


def prepare_clip(
    ref: ClipRef, recipe: InputRecipe, detector=None, detect_every: int = 1
) -> PreparedClip:
    """Decode audio and the model's crops of one clip; never raises for a bad clip."""
    detector = detector or _worker_detector
    clip = PreparedClip(ref, detector=getattr(detector, "name", ""))
    try:
        start = time.perf_counter()
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
        track = faces.extract_mouths(info, detector, recipe, detect_every=detect_every)
        clip.timings["faces"] = time.perf_counter() - start
        clip.crops, clip.has_face, clip.detector = track.crops, track.has_face, track.detector
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


def _prepare_in_process(refs, recipe, detector_name, device, every) -> Iterator[PreparedClip]:
    detector = faces.make_detector(detector_name, device=device)
    for ref in refs:
        yield prepare_clip(ref, recipe, detector, every)


def _prepare_in_workers(
    refs, recipe, detector_name, device, every, workers
) -> Iterator[PreparedClip]:
    """Bounded number of clips in flight so memory stays flat for long runs."""
    context = get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(detector_name, device)
    ) as pool:
        queue = iter(refs)
        running: dict = {}
        for ref in queue:
            running[pool.submit(prepare_clip, ref, recipe, None, every)] = ref
            if len(running) >= 2 * workers:
                break
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                ref = running.pop(future)
                try:
                    yield future.result()
                except Exception as error:  # a worker that died (e.g. a decoder crash)
                    yield PreparedClip(
                        ref, status="error", error=f"{ref.file}: worker failed: {error}"
                    )
                next_ref = next(queue, None)
                if next_ref is not None:
                    running[pool.submit(prepare_clip, next_ref, recipe, None, every)] = next_ref


def prepare_clips(
    refs: list[ClipRef],
    recipe: InputRecipe,
    detector_name: str = "auto",
    device: str = "cpu",
    workers: int = 0,
    detect_every: int = 1,
) -> Iterator[PreparedClip]:
    """Prepared clips in completion order, from `workers` processes (0 = in this process)."""
    if workers > 0:
        return _prepare_in_workers(refs, recipe, detector_name, device, detect_every, workers)
    return _prepare_in_process(refs, recipe, detector_name, device, detect_every)


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
        windows = torch.cat([make_windows(item, start, stop) for item, start, stop in batch])
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
            a = embed_batched(
                model.embed_audio, audio_, [t + 2 * max_offset for t in T], batch_size, device
            )
        return [model.similarity(vi, ai, max_offset) for vi, ai in zip(v, a, strict=True)]


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


def rows_to_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.astype({k: v for k, v in COLUMNS.items() if v != "object"})


class ScoresTable:
    """The output table: loaded on start (resume), rewritten atomically as rows arrive."""

    def __init__(
        self,
        path: Path,
        flush_every_s: float = 2.0,
        retry_failed: bool = False,
        model_id: str | None = None,
    ):
        self.path = path
        self.flush_every_s = flush_every_s
        self.rows: dict[tuple[str, str], dict] = {}
        self._last_flush = 0.0
        if path.exists():
            try:
                existing = pd.read_parquet(path)
            except Exception as error:
                raise ValueError(
                    f"{path}: exists and is not a readable Parquet table ({error})"
                ) from error
            missing = {"root", "path", "status"} - set(existing.columns)
            if missing:
                raise ValueError(
                    f"{path}: exists but is not a scores table (no {sorted(missing)} column)"
                )
            others = set(existing.loc[existing["status"] == "ok", "model"].dropna()) - {model_id}
            if model_id and others:
                raise ValueError(
                    f"{path}: already holds scores of {', '.join(sorted(others))}, not {model_id}; "
                    "write to another table so models are not mixed"
                )
            for row in existing.to_dict("records"):
                if retry_failed and row["status"] != "ok":
                    continue
                self.rows[(row["root"], row["path"])] = row

    def done(self, ref: ClipRef) -> bool:
        return (ref.root, ref.path) in self.rows

    def add(self, row: dict) -> None:
        self.rows[(row["root"], row["path"])] = row
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_table(rows_to_frame(list(self.rows.values())), self.path)
        self._last_flush = time.monotonic()


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return torch.device(name)


def score_clips(
    refs: list[ClipRef],
    table: ScoresTable,
    model: SyncModel,
    *,
    device: torch.device,
    detector_name: str = "auto",
    batch_size: int | None = None,
    workers: int = 0,
    detect_every: int = 1,
    max_offset: int = MAX_OFFSET,
    on_clip: Callable[[dict, RunStats], None] | None = None,
    offset_method: str = "mean",
) -> RunStats:
    """Score every clip not yet in `table`; rows are added as clips finish.

    offset_method: what decides offset_frames, "mean" (SPEC §6) or "vote" (`sync.vote_offset`).
    """
    batch_size = batch_size or model.batch_size
    stats = RunStats()
    todo = [ref for ref in refs if not table.done(ref)]
    detector_device = "cpu" if workers else device.type
    prepared = prepare_clips(
        todo, model.recipe, detector_name, detector_device, workers, detect_every
    )
    model.to(device)
    pending: list[PreparedClip] = []

    trained_on = provenance.of_model(model)["data"]

    def finish(clip: PreparedClip, metrics=None) -> None:
        row = _row(clip, model.model_id, metrics, trained_on)
        table.add(row)
        stats.clips += 1
        stats.statuses[clip.status] += 1
        stats.synthetic_on_real += bool(row["synthetic_weights_on_real"])
        stats.video_seconds += clip.n_frames / audio.VIDEO_FPS
        for name, seconds in clip.timings.items():
            stats.seconds[name] += seconds
        if on_clip:
            on_clip(row, stats)

    def run_model() -> None:
        start = time.perf_counter()
        matrices = similarity_matrices(model, pending, batch_size, device, max_offset)
        stats.seconds["model"] += time.perf_counter() - start
        for clip, S in zip(pending, matrices, strict=True):
            finish(clip, model.metrics(S, clip.valid_windows(), offset_method))
        pending.clear()

    for clip in prepared:
        if clip.status != "ok":
            finish(clip)
            continue
        pending.append(clip)
        if sum(c.n_windows for c in pending) >= batch_size:
            run_model()
    if pending:
        run_model()
    table.flush()
    return stats
