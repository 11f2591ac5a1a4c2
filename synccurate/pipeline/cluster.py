"""`--executor ray`: whole clips scored on a Ray cluster, by actors that hold the model.

Each model actor (one GPU each when the cluster has GPUs, else one CPU) loads the weights
itself, from the same path on its own node, and checks that they are the run's (same
`model_id`). It is handed a few clips at a time (`CLIPS_PER_TASK`), prepares them in its
own process (decode, faces), embeds them, computes the metrics and appends the rows to
its own `PartsWriter` in the `-o` folder: every writer has a run id of its own
(`<run id>-a<n>`), so the part names of two actors never collide. Only small reports
travel back: per clip its key and status, per task the `RunStats`; no crop reaches the
driver, and the driver never runs the network.

The driver feeds the tasks through a `ray.util.ActorPool`, calls `on_clip` for each clip
reported (the progress bar) and sums the stats. Faults:

- An actor that dies (its process or its node) loses the rows it had not published yet.
  The driver reads which clips the parts of this run already hold (only this run's part
  names), sends the others again, and starts a replacement actor. A clip is never in two
  rows: a row is either in a published part or lost with the dead actor's hidden
  temporary file.
- The clips of the task that was running when its actor died may have killed it (a
  decoder crash). Those it published before dying are read from its parts, counted and
  announced; each of the others goes again alone; one on which two actors in a row die alone
  (one of them may have been dead already: killed, its node lost) becomes an `error`
  row, written by the driver ("…: worker failed: …").
- A killed driver takes its actors with it (they belong to its job); their unpublished
  rows are lost, and the same command resumes from the published parts.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import torch

from synccurate.io import audio
from synccurate.io.inputs import ClipRef
from synccurate.models import load_model
from synccurate.models.base import SyncModel
from synccurate.pipeline import driver
from synccurate.pipeline.batching import resolve_device
from synccurate.pipeline.executors.ray import connect, ray  # without ray: one ImportError line
from synccurate.pipeline.prepare import PrepareStep
from synccurate.store.parts import PartsWriter
from synccurate.store.readers import list_parts
from synccurate.store.schema import TableSchema

ActorDiedError = ray.exceptions.ActorDiedError

CLIPS_PER_TASK = 8  # clips per actor call: a model batch's worth of windows, fair sharing
ACTOR_CPUS = 1  # each actor prepares its clips in its own process, on one core
ACTOR_START_S = 120.0  # an actor not ready by then (no free node, weights missing) is dropped
CULPRIT_DEATHS = 2  # a clip alone on this many actors that died is the one killing them
ACTOR_NAME_PREFIX = "synccurate-scorer-"  # + the actor's writer run id
REPORTED = ("root", "path", "status", "error", "synthetic_weights_on_real", "n_frames")

Key = tuple[str, str]


@dataclass(frozen=True)
class ModelSource:
    """Where each actor loads the model from, and the id the loaded weights must have."""

    kind: str | None  # None: read off the weights file, as `load_model` does
    weights: Path | None  # None: $SYNCCURATE_WEIGHTS or the bundled weights on that node
    model_id: str
    workdir: Path  # the driver's: clip roots and paths may be relative to it


@dataclass(frozen=True)
class OutputPlan:
    """What an actor needs to open its own writer into a folder the driver opened."""

    folder: Path
    metadata: dict
    shard: str | None
    table: TableSchema
    seconds_per_part: float

    @classmethod
    def of(cls, writer: PartsWriter, shard: str | None) -> OutputPlan:
        return cls(writer.folder, writer.metadata, shard, writer.table, writer.seconds_per_part)

    def open(self, run_id: str) -> PartsWriter:
        return PartsWriter(
            self.folder,
            metadata=self.metadata,
            shard=self.shard,
            run_id=run_id,
            seconds_per_part=self.seconds_per_part,
            table=self.table,
        )


@dataclass
class TaskReport:
    """What an actor sends back for one task: no crops, no metrics, only the books."""

    actor_id: str
    rows: list[dict]  # the REPORTED columns of each clip's row
    stats: driver.RunStats
    published: bool  # every row this actor has written is in a published part


def merge_stats(total: driver.RunStats, part: driver.RunStats) -> None:
    """Adds the counters of `part` (one actor's task) to `total`; `total` keeps its clock."""
    total.clips += part.clips
    total.video_seconds += part.video_seconds
    total.statuses.update(part.statuses)
    total.seconds.update(part.seconds)
    total.synthetic_on_real += part.synthetic_on_real


class PreparedOnce:
    """An in-process executor that sets the prepare step up (the face detector) once per
    actor, not once per task; a step with other settings is set up anew."""

    name = "local"

    def __init__(self, device: str):
        self.device = device
        self.step: PrepareStep | None = None

    def run(self, step: PrepareStep, items: list) -> Iterator:
        if step != self.step:
            step.setup(self.device)
            self.step = step
        return (self.step(item) for item in items)


class _FailedExecutor:
    """Gives each clip its step's `failed` result: the status row of a clip whose actor died."""

    name = "failed"

    def __init__(self, why: str):
        self.why = why

    def run(self, step, items: list) -> Iterator:
        return (step.failed(item, self.why) for item in items)


class ModelActor:
    """Holds the model on its node and scores whole clips into its own parts."""

    def __init__(
        self,
        source: ModelSource,
        run_id: str,
        scores: OutputPlan,
        sides: dict[str, OutputPlan],
        device: str,
    ):
        # Ray starts workers in the driver's folder on its node only; elsewhere relative clip
        # roots, weights and outputs would name other files (a shared file system is assumed).
        os.chdir(source.workdir)
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            torch.set_num_threads(ACTOR_CPUS)
        self.model = load_model(source.kind, source.weights)
        if self.model.model_id != source.model_id:
            raise ValueError(
                f"{source.weights or 'the default weights'} on this node are "
                f"{self.model.model_id}, the run scores with {source.model_id}: every node "
                "needs the same weights file at the same path"
            )
        self.actor_id = ray.get_runtime_context().get_actor_id()
        self.writer = scores.open(run_id)
        self.side_writers = {name: plan.open(run_id) for name, plan in sides.items()}
        self.prepare = PreparedOnce(self.device.type)

    def ready(self) -> str:
        return self.actor_id

    def score(self, refs: list[ClipRef], settings: dict) -> TaskReport:
        rows: list[dict] = []

        def note(row: dict, _stats: driver.RunStats) -> None:
            rows.append({name: row.get(name) for name in REPORTED})

        stats = driver.score_clips(
            refs,
            self.writer,
            self.model,
            device=self.device,
            executor=self.prepare,
            on_clip=note,
            side_writers=self.side_writers,
            **settings,
        )
        return TaskReport(self.actor_id, rows, stats, self._published())

    def flush(self) -> TaskReport:
        """Publishes every row written so far (the run's end)."""
        for writer in self._writers():
            writer.flush()
        return TaskReport(self.actor_id, [], driver.RunStats(), self._published())

    def _published(self) -> bool:
        return all(writer.pending == 0 for writer in self._writers())

    def _writers(self) -> list[PartsWriter]:
        return [self.writer, *self.side_writers.values()]


@dataclass
class _Task:
    refs: list[ClipRef]
    alone: bool = False  # a suspect of a crash, sent by itself
    deaths: int = 0  # actors that died while it was theirs, alone


@dataclass
class ClusterScorer:
    """`driver.score_clips` with the same call, run by model actors on a Ray cluster.

    `run.open_run` builds it for `--executor ray`; the call's `executor` and `device`
    are the driver's and do not apply (each actor prepares in-process and picks its own
    device); the other keyword settings are passed on to every actor's `score_clips`.
    """

    source: ModelSource
    device: str = "auto"  # each actor resolves it on its node ("auto": CUDA when given a GPU)
    model_actors: int | None = None  # None: one per GPU of the cluster, else 1
    address: str | None = None  # None: a local cluster for the run
    local_cpus: int = 0  # CPUs of that local cluster (0 = all cores)
    shard: str | None = None

    def __call__(
        self,
        refs: list[ClipRef],
        writer: PartsWriter,
        model: SyncModel,
        *,
        done: set[Key] | frozenset = frozenset(),
        on_clip: Callable[[dict, driver.RunStats], None] | None = None,
        side_writers: dict[str, PartsWriter] | None = None,
        executor=None,  # the driver's: the actors prepare their own clips
        device: torch.device | None = None,  # the driver's: each actor resolves its own
        **settings,
    ) -> driver.RunStats:
        todo = [ref for ref in refs if (ref.root, ref.path) not in done]
        stats = driver.RunStats()
        if not todo:
            return stats
        started = connect(self.address, self.local_cpus)
        sides = side_writers or {}
        dispatch = _Dispatch(self, writer, sides, model, settings, stats, on_clip)
        try:
            dispatch.run(todo)
        finally:
            dispatch.stop()
            if started:
                ray.shutdown()
        return stats

    def actor_resources(self) -> tuple[int, dict]:
        """How many actors, and the resources each asks for."""
        gpus = 0 if self.device == "cpu" else int(ray.cluster_resources().get("GPU", 0))
        if self.device == "cuda" and not gpus:
            raise ValueError("--device cuda: the Ray cluster has no GPU")
        if gpus:
            return min(self.model_actors or gpus, gpus), {"num_gpus": 1, "num_cpus": ACTOR_CPUS}
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)) // ACTOR_CPUS)
        return min(self.model_actors or 1, cpus), {"num_gpus": 0, "num_cpus": ACTOR_CPUS}


@dataclass
class _Dispatch:
    """One run's books on the driver: tasks queued and in flight, rows not yet published."""

    scorer: ClusterScorer
    writer: PartsWriter  # the driver's: only for the rows of clips that killed their actor
    side_writers: dict[str, PartsWriter]  # the driver's, as the scores' writer
    model: SyncModel
    settings: dict
    stats: driver.RunStats
    on_clip: Callable[[dict, driver.RunStats], None] | None
    queue: deque[_Task] = field(default_factory=deque)
    actors: dict[str, object] = field(default_factory=dict)  # actor id → handle
    in_flight: dict[str, _Task] = field(default_factory=dict)  # actor id → its task
    unpublished: dict[str, list[tuple[ClipRef, dict]]] = field(default_factory=dict)
    rescoring: set[Key] = field(default_factory=set)  # reported once, lost, sent again
    started_actors: int = 0

    def run(self, todo: list[ClipRef]) -> None:
        per_task = max(1, min(CLIPS_PER_TASK, len(todo) // (2 * self._start_pool(len(todo)))))
        self._enqueue(todo, per_task)
        while self.queue:
            self._drain()
            self._flush_all()  # an actor that died since its last task sends clips again

    def stop(self) -> None:
        for handle in self.actors.values():
            ray.kill(handle, no_restart=True)

    # --- actors ---

    def _start_pool(self, clips: int) -> int:
        count, self.resources = self.scorer.actor_resources()
        self._start_actors(min(count, clips))
        if not self.actors:
            raise RuntimeError(
                f"no model actor started within {ACTOR_START_S:.0f} s "
                f"(each asks for {self.resources}); the cluster: {ray.cluster_resources()}"
            )
        asked = min(self.scorer.model_actors or 0, clips)
        if len(self.actors) < asked:
            self.stats.notes.append(
                f"--model-actors {asked}: {len(self.actors)} ran (each asks for "
                f"{self.resources}; the cluster has {_room(ray.cluster_resources())})"
            )
        self.pool = ray.util.ActorPool(list(self.actors.values()))
        return len(self.actors)

    def _start_actors(self, count: int) -> list:
        """Starts `count` actors; those ready in time join the books, the others are killed.

        An actor that fails while loading (weights missing or different on its node)
        fails the run with its own message.
        """
        scores = OutputPlan.of(self.writer, self.scorer.shard)
        sides = {
            name: OutputPlan.of(side, self.scorer.shard) for name, side in self.side_writers.items()
        }
        remote = ray.remote(max_restarts=0, max_task_retries=0, **self.resources)(ModelActor)
        handles = []
        for _ in range(count):
            self.started_actors += 1
            run_id = f"{self.writer.run_id}-a{self.started_actors:03d}"
            named = remote.options(name=f"{ACTOR_NAME_PREFIX}{run_id}")  # `ray list actors`
            handles.append(
                named.remote(self.scorer.source, run_id, scores, sides, self.scorer.device)
            )
        ready, late = ray.wait(
            [handle.ready.remote() for handle in handles], num_returns=count, timeout=ACTOR_START_S
        )
        started = []
        for handle, probe in zip(handles, [*ready, *late], strict=True):
            if probe in late:
                ray.kill(handle, no_restart=True)
                continue
            try:
                actor_id = ray.get(probe)
            except ActorDiedError as error:
                raise RuntimeError(f"a model actor could not start: {_cause(error)}") from None
            self.actors[actor_id] = handle
            started.append(handle)
        return started

    def _replace(self) -> None:
        for handle in self._start_actors(1):
            self.pool.push(handle)
        if not self.actors:
            raise RuntimeError(
                "every model actor died and none could be started again; run the same "
                "command to resume once the cluster has room"
            )

    # --- tasks ---

    def _enqueue(self, refs: list[ClipRef], per_task: int = CLIPS_PER_TASK) -> None:
        for start in range(0, len(refs), per_task):
            self.queue.append(_Task(refs[start : start + per_task]))

    def _submit(self, task: _Task) -> None:
        def send(actor, task: _Task):
            actor_id = next(key for key, handle in self.actors.items() if handle == actor)
            self.in_flight[actor_id] = task
            return actor.score.remote(task.refs, self.settings)

        self.pool.submit(send, task)

    def _drain(self) -> None:
        """Until every queued task is scored: one task per idle actor, reports as they come."""
        while self.queue or self.pool.has_next():
            while self.queue and self.pool.has_free():
                self._submit(self.queue.popleft())
            try:
                report = self.pool.get_next_unordered()
            except ActorDiedError as error:
                self._died(error.actor_id, _cause(error))
            else:
                self._take(report)

    def _take(self, report: TaskReport) -> None:
        task = self.in_flight.pop(report.actor_id)
        refs = {(ref.root, ref.path): ref for ref in task.refs}
        held = self.unpublished.setdefault(report.actor_id, [])
        held += [(refs[row["root"], row["path"]], row) for row in report.rows]
        if report.published:
            held.clear()
        merge_stats(self.stats, report.stats)
        for row in report.rows:
            self._announce(row)

    def _announce(self, row: dict) -> None:
        """on_clip once per clip, also for a clip scored again after its actor died."""
        key = (row["root"], row["path"])
        if key in self.rescoring:
            self.rescoring.discard(key)
        elif self.on_clip:
            self.on_clip(row, self.stats)

    def _flush_all(self) -> None:
        for actor_id, handle in list(self.actors.items()):
            try:
                report = ray.get(handle.flush.remote())
            except ActorDiedError as error:
                self._died(actor_id, _cause(error))
            else:
                if report.published:
                    self.unpublished.pop(actor_id, None)

    def _died(self, actor_id: str | None, why: str) -> None:
        """An actor is gone: its unpublished clips go again, its running task's one by one."""
        if actor_id not in self.actors:
            raise RuntimeError(f"a model actor died and Ray did not say which: {why}")
        del self.actors[actor_id]
        task = self.in_flight.pop(actor_id, None)
        lost = self.unpublished.pop(actor_id, [])
        # Ray reports the death before the process is surely gone; the parts are read once
        # the replacement is up (seconds later), so a last part published while dying counts.
        self._replace()
        kept = self._published_keys()
        again = [(ref, row) for ref, row in lost if (ref.root, ref.path) not in kept]
        for _, row in again:
            self._uncount(row)
        self._enqueue([ref for ref, _ in again])
        if task is not None:
            # Published by the actor as it died, never reported: the driver's books too.
            landed = {(ref.root, ref.path) for ref in task.refs} & kept
            for row in _rows_of_run(self.writer.folder, self.writer.run_id, landed):
                self._count(row)
                self._announce(row)
            suspects = [ref for ref in task.refs if (ref.root, ref.path) not in kept]
            if task.alone and task.deaths + 1 >= CULPRIT_DEATHS:
                self._failed(suspects, why)
            elif task.alone:  # its actor may have been dead already (killed, node lost)
                self.queue.appendleft(_Task(suspects, alone=True, deaths=task.deaths + 1))
            else:
                self.queue.extendleft(_Task([ref], alone=True) for ref in reversed(suspects))

    def _count(self, row: dict, sign: int = 1) -> None:
        self.stats.clips += sign
        self.stats.statuses[row["status"]] += sign
        self.stats.synthetic_on_real += sign * bool(row["synthetic_weights_on_real"])
        self.stats.video_seconds += sign * (row["n_frames"] or 0) / audio.VIDEO_FPS

    def _uncount(self, row: dict) -> None:
        """Takes back a reported row that died unpublished with its actor (scored again)."""
        self._count(row, -1)
        self.rescoring.add((row["root"], row["path"]))

    def _failed(self, refs: list[ClipRef], why: str) -> None:
        """Status rows, from the driver, for clips that killed their actor alone."""
        settings = {k: v for k, v in self.settings.items() if k != "batch_size"}
        part = driver.score_clips(
            refs,
            self.writer,
            self.model,
            device=torch.device("cpu"),
            executor=_FailedExecutor(why),
            batch_size=1,  # never used: no clip reaches the model
            side_writers=self.side_writers,
            on_clip=lambda row, _stats: self._announce(row),
            **settings,
        )
        merge_stats(self.stats, part)

    def _published_keys(self) -> set[Key]:
        """Clips with a row in a part this run published (in every side table too)."""
        writers = [self.writer, *self.side_writers.values()]
        found = [_keys_of_run(w.folder, self.writer.run_id) for w in writers]
        return set.intersection(*found)


def _parts_of_run(folder: Path, run_id: str) -> list[Path]:
    """The parts whose names hold `run_id` (its actors' too)."""
    return [part for part in list_parts(folder) if f"-{run_id}-" in part.name]


def _keys_of_run(folder: Path, run_id: str) -> set[Key]:
    """(root, path) of the rows in the parts of this run."""
    keys: set[Key] = set()
    for part in _parts_of_run(folder, run_id):
        table = pq.read_table(part, columns=["root", "path"])
        keys.update(zip(table["root"].to_pylist(), table["path"].to_pylist(), strict=True))
    return keys


def _rows_of_run(folder: Path, run_id: str, keys: set[Key]) -> list[dict]:
    """The REPORTED columns of the rows of `keys` in the parts of this run."""
    rows = []
    for part in _parts_of_run(folder, run_id) if keys else []:
        table = pq.read_table(part, columns=list(REPORTED)).to_pylist()
        rows += [row for row in table if (row["root"], row["path"]) in keys]
    return rows


def _room(resources: dict) -> str:
    return ", ".join(f"{resources.get(name, 0):g} {name}" for name in ("CPU", "GPU"))


def _cause(error: ActorDiedError) -> str:
    """The first line of what killed an actor that says something."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    informative = [line for line in lines if not line.startswith(("The actor died", "class_"))]
    return (informative or lines or [type(error).__name__])[0]
