"""Scoring driver: clips → (decode + faces in workers) → batched IC-SyncNet → scores table.

Reader (discover), step (prepare in worker processes, then embed windows of many
clips per model batch), writer (ScoresTable: atomic, resumable Parquet). Each
stage keeps its own counters so the summary can say where the time went.
"""

from __future__ import annotations

import os
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

from synccurate import audio, faces, media
from synccurate.model import ICSyncNet, stack_windows
from synccurate.store import COLUMNS, rows_to_frame  # noqa: F401  (COLUMNS: re-exported)
from synccurate.sync import MAX_OFFSET, clip_metrics, n_windows, similarity_matrix
from synccurate.tables import write_table

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
    found: list[str] = []

    def unlisted(error: OSError) -> None:
        if error.filename and Path(error.filename) != folder:
            found.append(Path(error.filename).relative_to(folder).as_posix())
        elif error.filename:
            raise error

    for directory, _, names in os.walk(folder, onerror=unlisted):
        for name in names:  # also symlinks whose target is missing
            if Path(name).suffix.lower() in media.VIDEO_EXTENSIONS:
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
    crops: np.ndarray | None = None  # uint8 [n, H, W, 3]
    has_face: np.ndarray | None = None
    mel: np.ndarray | None = None
    silence: np.ndarray | None = None
    detector: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return 0 if self.crops is None else len(self.crops)


_worker_detector: faces.FaceDetector | None = None


def _init_worker(detector_name: str, device: str) -> None:
    global _worker_detector
    import cv2

    torch.set_num_threads(1)  # each worker one core: the pool, not threads, gives parallelism
    cv2.setNumThreads(1)
    _worker_detector = faces.make_detector(detector_name, device=device)


def prepare_clip(
    ref: ClipRef, crop_hw: tuple[int, int], detector=None, detect_every: int = 1
) -> PreparedClip:
    """Decode audio and mouth crops of one clip; never raises for a bad clip."""
    detector = detector or _worker_detector
    clip = PreparedClip(ref, detector=getattr(detector, "name", ""))
    try:
        start = time.perf_counter()
        if reason := unreadable(ref.file):
            raise media.MediaError("decode_error", f"{ref.file}: {reason}")
        info = media.probe(ref.file)
        clip.duration_s, clip.source_fps = info.duration_s, info.source_fps
        if not info.has_video:
            raise media.MediaError("no_video", f"{ref.file}: no video stream")
        if not info.has_audio:
            raise media.MediaError("no_audio", f"{ref.file}: no audio stream")
        samples = media.decode_audio(info)
        clip.mel = audio.log_mel(samples)
        clip.timings["audio"] = time.perf_counter() - start
        start = time.perf_counter()
        track = faces.extract_mouths(info, detector, crop_hw, detect_every=detect_every)
        clip.timings["faces"] = time.perf_counter() - start
        clip.crops, clip.has_face, clip.detector = track.crops, track.has_face, track.detector
        clip.silence = audio.frame_silence(samples, clip.n_frames)
        if n_windows(clip.n_frames) < 1:
            raise media.MediaError(
                "too_short", f"{ref.file}: only {clip.n_frames} frames at 25 fps"
            )
        if clip.has_face.mean() < MIN_FACE_RATIO or not face_windows(clip.has_face).any():
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


def _prepare_in_process(refs, crop_hw, detector_name, device, every) -> Iterator[PreparedClip]:
    detector = faces.make_detector(detector_name, device=device)
    for ref in refs:
        yield prepare_clip(ref, crop_hw, detector, every)


def _prepare_in_workers(
    refs, crop_hw, detector_name, device, every, workers
) -> Iterator[PreparedClip]:
    """Bounded number of clips in flight so memory stays flat for long runs."""
    context = get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(detector_name, device)
    ) as pool:
        queue = iter(refs)
        running: dict = {}
        for ref in queue:
            running[pool.submit(prepare_clip, ref, crop_hw, None, every)] = ref
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
                    running[pool.submit(prepare_clip, next_ref, crop_hw, None, every)] = next_ref


def prepare_clips(
    refs: list[ClipRef],
    crop_hw: tuple[int, int],
    detector_name: str = "auto",
    device: str = "cpu",
    workers: int = 0,
    detect_every: int = 1,
) -> Iterator[PreparedClip]:
    """Prepared clips in completion order, from `workers` processes (0 = in this process)."""
    if workers > 0:
        return _prepare_in_workers(refs, crop_hw, detector_name, device, detect_every, workers)
    return _prepare_in_process(refs, crop_hw, detector_name, device, detect_every)


def face_windows(has_face: np.ndarray) -> np.ndarray:
    """Visual windows whose five frames all have a face."""
    T = n_windows(len(has_face))
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
    model: ICSyncNet,
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
    crops = [torch.from_numpy(c.crops) for c in clips]
    T = [n_windows(c.n_frames) for c in clips]

    def visual(item: int, start: int, stop: int) -> torch.Tensor:
        return stack_windows(crops[item][start : stop + audio.WINDOW_FRAMES - 1])

    def audio_(item: int, start: int, stop: int) -> torch.Tensor:
        windows = audio.audio_windows(clips[item].mel, start - max_offset, stop - start)
        return torch.from_numpy(windows)

    if amp is None:
        amp = device.type == "cuda"
    half = torch.float16 if device.type == "cuda" else torch.bfloat16
    autocast = torch.autocast(device.type, dtype=half) if amp else nullcontext()
    with torch.inference_mode(), autocast:
        v = embed_batched(model.embed_visual, visual, T, batch_size, device)
        a = embed_batched(
            model.embed_audio, audio_, [t + 2 * max_offset for t in T], batch_size, device
        )
    return [similarity_matrix(vi, ai, max_offset) for vi, ai in zip(v, a, strict=True)]


# --- writer ---------------------------------------------------------------------


def _row(clip: PreparedClip, model_id: str, metrics=None) -> dict:
    row = {
        "root": clip.ref.root,
        "path": clip.ref.path,
        "status": clip.status,
        "error": clip.error or None,
        "duration_s": clip.duration_s,
        "n_frames": clip.n_frames if clip.crops is not None else None,
        "source_fps": clip.source_fps,
        "model": model_id,
        "face_detector": clip.detector or None,
        "face_ratio": float(clip.has_face.mean()) if clip.has_face is not None else None,
        "silence_ratio": float(clip.silence.mean()) if clip.silence is not None else None,
    }
    if metrics is not None:
        row |= {
            "offset_frames": metrics.offset_frames,
            "offset_seconds": metrics.offset_seconds,
            "prob_at_offset": metrics.prob_at_offset,
            "offscreen_ratio": metrics.offscreen_ratio,
            "confidence": metrics.confidence,
            "at_search_edge": metrics.at_search_edge,
            "p_t": metrics.p_t.round(4).tolist(),
            "onscreen": metrics.onscreen.tolist(),
            "profile": metrics.profile.round(4).tolist(),
        }
    return row


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
    model: ICSyncNet,
    model_id: str,
    *,
    device: torch.device,
    detector_name: str = "auto",
    batch_size: int = 256,
    workers: int = 0,
    detect_every: int = 1,
    max_offset: int = MAX_OFFSET,
    on_clip: Callable[[dict, RunStats], None] | None = None,
) -> RunStats:
    """Score every clip not yet in `table`; rows are added as clips finish."""
    stats = RunStats()
    todo = [ref for ref in refs if not table.done(ref)]
    crop_hw = (model.config.crop_height, model.config.crop_width)
    detector_device = "cpu" if workers else device.type
    prepared = prepare_clips(todo, crop_hw, detector_name, detector_device, workers, detect_every)
    model.to(device).eval()
    pending: list[PreparedClip] = []

    def finish(clip: PreparedClip, metrics=None) -> None:
        row = _row(clip, model_id, metrics)
        table.add(row)
        stats.clips += 1
        stats.statuses[clip.status] += 1
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
            finish(clip, clip_metrics(S, model.tau, valid=face_windows(clip.has_face)))
        pending.clear()

    for clip in prepared:
        if clip.status != "ok":
            finish(clip)
            continue
        pending.append(clip)
        if sum(n_windows(c.n_frames) for c in pending) >= batch_size:
            run_model()
    if pending:
        run_model()
    table.flush()
    return stats
