"""One scoring run, as `synccurate score` makes it: clip list → shard → output → executor → driver.

`open_run` does everything that can refuse the run before a clip is read (a bad shard, an
output over an input clip or pinned to another model, Ray not installed), so the caller can
report it as one error line; `ScoreRun.score` then scores. What the user sees (progress,
warnings, the summary) stays with the caller, fed through small callbacks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow
import torch

from synccurate.faces.shots import DEFAULT_SHOT_DETECTOR
from synccurate.io import inputs
from synccurate.io.inputs import ClipRef
from synccurate.models import provenance
from synccurate.models.base import SyncModel
from synccurate.models.sync import MAX_OFFSET
from synccurate.pipeline import batching, driver
from synccurate.pipeline.executors import Executor, make_executor
from synccurate.pipeline.prepare import CHUNK_SECONDS
from synccurate.pipeline.segments import SegmentOptions
from synccurate.pipeline.timeline import SEGMENT_SECONDS
from synccurate.store import parts
from synccurate.store.folder import parse_shard
from synccurate.store.manifest import read_manifest
from synccurate.store.schema import SEGMENTS, TIMELINE

DETECT_EVERY = 4  # frames per face detection: a quarter of the cost, no measured loss on real clips
MAX_WORKERS = 4  # worker processes `--workers auto` starts at most: one per CPU
POOL_MIN_CLIPS = 16  # fewer clips than this are scored faster without a worker pool
SYNTH_CHECK_SAMPLE = 64  # clips whose synth tag is read before the run starts


@dataclass(frozen=True)
class ScoreOptions:
    """What to score and how; each default is the one of `synccurate score`."""

    output: Path  # scores folder, created or resumed
    paths: Sequence[Path] = ()  # folders or video files, walked here …
    manifest: Path | None = None  # … or the clip list of `synccurate manifest`
    shard: str | None = None  # "K/N": only shard K of N
    retry_failed: bool = False
    seconds_per_part: float = parts.SECONDS_PER_PART
    device: str = "auto"
    executor: str = "local"
    workers: int | None = None  # worker processes; None: `workers_for` chooses
    ray_address: str | None = None
    model_actors: int | None = None  # with executor "ray": None = one per GPU, else 1
    model_kind: str | None = None  # with executor "ray": what each model actor loads …
    weights: Path | None = None  # … from this file, as `models.load_model` reads them
    detector: str = "auto"
    detect_every: int = DETECT_EVERY
    batch_size: int | None = None  # None: the model's own (`batching.default_batch_size`)
    max_offset: int = MAX_OFFSET
    offset_method: str = "mean"
    timeline: Path | None = None  # also write each clip's offset over time here
    segment_seconds: float = SEGMENT_SECONDS  # one timeline stretch
    chunk_seconds: float = CHUNK_SECONDS  # a longer clip is scored in chunks this long
    segments: Path | None = None  # also write each clip's speaker segments here …
    segment_options: SegmentOptions = SegmentOptions()  # … cut this way
    # "auto": the default detector when segments are asked for, else none. Tracks never
    # cross a cut, so with cuts the row's face_ratio is the speaker's shot's; without
    # segments it stays SPEC's fraction of the clip's frames with the face.
    shot_detector: str | None = "auto"  # None: shots are not looked for
    shot_threshold: float | None = None  # None: the detector's own
    precision: str = "auto"  # the encoders' arithmetic (batching.PRECISIONS)

    @property
    def shots(self) -> str | None:
        """The shot detector this run uses (None: shots are not looked for)."""
        if self.shot_detector == "auto":
            return DEFAULT_SHOT_DETECTOR if self.segments is not None else None
        return self.shot_detector


@dataclass
class ScoreRun:
    """A run ready to score: its clips listed, its output open, its executor built."""

    model: SyncModel
    options: ScoreOptions
    refs: list[ClipRef]  # every clip of the run (of its shard)
    todo: list[ClipRef]  # those without a row in the output yet
    done: set[tuple[str, str]]
    device: torch.device
    writer: parts.PartsWriter
    side_writers: dict[str, parts.PartsWriter]  # table name → writer (driver.SIDE_TABLES)
    executor: Executor
    warning: str | None  # synthetic-only weights meet real clips (read off the first clips)
    # What scores the clips: `driver.score_clips` here, or a callable taking the same
    # arguments (`pipeline.cluster.ClusterScorer`: model actors on a Ray cluster).
    score_clips: Callable[..., driver.RunStats] = driver.score_clips

    def score(
        self,
        on_clip: Callable[[dict, driver.RunStats], None] | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> driver.RunStats:
        """Score the clips to do; the writer publishes every row scored, also when interrupted.

        on_warning hears once of synthetic-only weights meeting a real clip that the early
        check (`warning`) did not see; on_clip hears of every row written.
        """
        warned = self.warning

        def clip_done(row: dict, stats: driver.RunStats) -> None:
            nonlocal warned
            if row.get("synthetic_weights_on_real") and not warned:  # beyond the clips checked
                what = f"clips so far ({row['path']})"
                warned = provenance.warning_line(self.model.model_id, 1, 1, what)
                if on_warning:
                    on_warning(warned)
            if on_clip:
                on_clip(row, stats)

        options = self.options
        with ExitStack() as writers, _model_threads(self.device, self.executor):
            for writer in (self.writer, *self.side_writers.values()):
                writers.enter_context(writer)
            return self.score_clips(
                self.refs,
                self.writer,
                self.model,
                done=self.done,
                executor=self.executor,
                device=self.device,
                detector_name=options.detector,
                detect_every=options.detect_every,
                batch_size=options.batch_size,
                max_offset=options.max_offset,
                on_clip=clip_done,
                offset_method=options.offset_method,
                segment_seconds=options.segment_seconds,
                chunk_seconds=options.chunk_seconds,
                segment_options=options.segment_options,
                shot_detector=options.shots,
                shot_threshold=options.shot_threshold,
                precision=options.precision,
                side_writers=self.side_writers,
            )

    def closing_warning(self, stats: driver.RunStats) -> str | None:
        """The last word on clips scored by synthetic-only weights that are not synth clips."""
        if not stats.synthetic_on_real:
            return None
        return (
            provenance.warning_line(self.model.model_id, stats.synthetic_on_real, stats.clips)
            + f" The table marks them ({provenance.SYNTHETIC_ON_REAL_COLUMN} = true)."
        )


def open_run(model: SyncModel, options: ScoreOptions) -> ScoreRun:
    """List the clips, open the output and build the executor; nothing is scored yet.

    Raises FileNotFoundError, ValueError or ImportError (Ray missing) for a run that
    cannot start.
    """
    refs = _clip_list(options.paths, options.manifest)
    if options.shard:
        index, count = parse_shard(options.shard)
        refs = inputs.shard(refs, index, count)
    device = batching.resolve_device(options.device)
    if options.output.resolve() in {ref.file.resolve() for ref in refs}:
        raise ValueError(f"{options.output}: the output would overwrite an input clip")
    pinned = {"model": model.model_id, "max_offset": options.max_offset}
    # The writer's Arrow buffers come and go with every part. With the system allocator
    # a long run's memory stays flat; pyarrow's default pool (mimalloc) kept growing:
    # +16 % from 1k to 100k rows against +9 % (benchmarks/writer_scale.py, part c).
    pyarrow.set_memory_pool(pyarrow.system_memory_pool())
    writer, done = parts.open_output(
        options.output,
        pinned,
        shard=options.shard,
        retry_failed=options.retry_failed,
        seconds_per_part=options.seconds_per_part,
    )
    side_writers = {}
    sides = {
        "timeline": (options.timeline, TIMELINE, {"segment_seconds": options.segment_seconds}),
        "segments": (options.segments, SEGMENTS, _segment_pins(options.segment_options)),
    }
    for name, (folder, table, pins) in sides.items():
        if folder is None:
            continue
        if folder.resolve() in {
            options.output.resolve(),
            *(w.folder.resolve() for w in side_writers.values()),
        }:
            raise ValueError(f"{folder}: the {name} needs a folder of its own")
        side_writers[name], side_done = parts.open_output(
            folder,
            pinned | pins,
            shard=options.shard,
            retry_failed=options.retry_failed,
            seconds_per_part=options.seconds_per_part,
            table=table,
        )
        done &= side_done  # a clip killed between its tables is scored again
    todo = [ref for ref in refs if (ref.root, ref.path) not in done]
    workers = workers_for(options.workers, options.detector, len(todo))
    executor = make_executor(
        options.executor,
        workers=workers,
        device="cpu" if workers else device.type,
        ray_address=options.ray_address,
    )
    warning = synthetic_weights_warning(model, todo, SYNTH_CHECK_SAMPLE)
    return ScoreRun(
        model,
        options,
        refs,
        todo,
        done,
        device,
        writer,
        side_writers,
        executor,
        warning,
        _cluster_scorer(model, options) if options.executor == "ray" else driver.score_clips,
    )


def _cluster_scorer(model: SyncModel, options: ScoreOptions) -> Callable[..., driver.RunStats]:
    """Model actors on a Ray cluster score whole clips into the output (pipeline.cluster)."""
    from synccurate.pipeline.cluster import ClusterScorer, ModelSource

    return ClusterScorer(
        ModelSource(options.model_kind, options.weights, model.model_id, Path.cwd()),
        device=options.device,
        model_actors=options.model_actors,
        address=options.ray_address,
        local_cpus=options.workers or 0,
        shard=options.shard,
    )


@contextmanager
def _model_threads(device: torch.device, executor: Executor):
    """On CPU beside local worker processes, the model's threads leave each worker a core.

    Oversubscribed, OpenMP threads spin against the workers: 32 real clips, 2 cores, 2
    workers took 27.8 s (model 20.2 s) with the model on 2 threads, 20.9 s (model 6.0 s)
    on one.
    """
    workers = getattr(executor, "workers", 0) if executor.name == "local" else 0
    if device.type != "cpu" or not workers:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) - workers))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def workers_for(requested: int | None, detector: str, clips: int, cpus: int | None = None) -> int:
    """The worker processes of a run: `requested`, or for None the number that pays.

    Pre-cropped clips (detector "none") are decoded faster than a worker starts (it
    imports torch, ~2 s) and ships its crops back: on the 9 pre-cropped clips of
    benchmarks/anchor_compare.py in-process scoring was 17.8-21.4x upstream's speed, with
    2 workers 11.5x. With a face detector, detection is most of the time and one worker
    per CPU (at most MAX_WORKERS) pays once there are clips enough to cover the pool's
    start: on 2 cores the 8 real clips of ../shared/fixtures/real took 6.9-7.2 s in
    process against 7.7-8.2 s with 2 workers, 32 of them 21.2 s against 20.8 s (and
    100 MB less in the model's process).
    """
    if requested is not None:
        return requested
    if detector == "none" or clips < POOL_MIN_CLIPS:
        return 0
    return min(MAX_WORKERS, cpus or os.cpu_count() or 1)


def _segment_pins(options: SegmentOptions) -> dict:
    """What a segments folder is pinned to: segments cut another way are another table."""
    return {
        "max_gap_seconds": options.max_gap_seconds,
        "min_segment_seconds": options.min_seconds,
        "max_segment_seconds": options.max_seconds,
        "segment_threshold": options.threshold,
    }


def _clip_list(paths: Sequence[Path], manifest: Path | None) -> list[ClipRef]:
    """The clips to score: the manifest's, or those found under `paths` (walked here)."""
    if manifest is not None:
        return read_manifest(manifest)
    return inputs.discover(paths)


def synthetic_weights_warning(
    model: SyncModel, refs: list[ClipRef], sample: int | None = None
) -> str | None:
    """The warning line when synthetic-only weights meet clips that are not `synth` clips.

    Reads only the container headers of `refs` (the first `sample` of them): the rows of a
    run record every clip, this is the early word.
    """
    from synccurate.io import media  # PyAV: kept out of the model process until needed

    if not provenance.synthetic_only(model) or not refs:
        return None
    checked = refs if sample is None else refs[:sample]
    n_real = sum(media.is_synth_file(ref.file) is False for ref in checked)
    if not n_real:
        return None
    what = "clips" if len(checked) == len(refs) else f"clips checked (of {len(refs)})"
    return provenance.warning_line(model.model_id, n_real, len(checked), what)
