"""`--executor ray`: a step (for `score`, decode + faces) on a Ray cluster.

Install the extra (`pip install 'synccurate[ray]'`) on every machine of the cluster, with
the same synccurate version, and make the clips readable at the same path on every node
(a shared file system): only clip paths (`ClipRef`) travel through Ray, never video bytes;
the prepared crops and audio features come back through Ray's object store. The model step
and the Parquet writer stay in the driver (the `synccurate score` process), which uses CUDA
for the model when it has a GPU (`--device auto`), while the Ray workers run the face
detector on CPU.

One machine (a local cluster is started and stopped with the run; `--workers N` CPUs,
0 = all cores)::

    synccurate score clips/ -o scores/ --executor ray --workers 8

A cluster (the head first, then each worker node; the driver runs on any node)::

    ray start --head --port 6379                 # on the head node
    ray start --address HEAD_IP:6379             # on every other node
    synccurate score /shared/clips -o /shared/scores --executor ray --ray-address auto

With `--ray-address`, `--workers N` caps the number of actors (0 = one per CPU of the
cluster). A killed driver takes its actors with it; run the same command again to resume.

Design: a pool of Ray Core actors rather than Ray Data (`from_items(...).map_batches`).
Each actor (1 CPU) sets the step up once (the face detector) and runs it on the clips
sent to it, at most 2 in flight per actor, so memory stays flat and results are
yielded as they complete. Actors give us what Ray Data makes hard on a small machine: the
exact clip a task belongs to, so a clip that crashes its worker process becomes one status
row (Ray Data retries the failing block or fails the whole dataset, and its streaming
executor reserves CPUs for its own operators, which on 2 cores starves the workers), and
an actor task runs in submission order, so the crashing clip is the oldest unfinished one
of the dead actor; the clips queued behind it are sent again to a new actor, none twice.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from synccurate.pipeline.executors.local import one_thread_each

try:
    import ray
    from ray.exceptions import RayActorError
except ImportError as error:  # the CLI prints this one line
    raise ImportError(
        "--executor ray needs the ray extra: pip install 'synccurate[ray]'"
    ) from error

if TYPE_CHECKING:
    from synccurate.pipeline.executors import Step

IN_FLIGHT_PER_ACTOR = 2


@ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)
class StepActor:
    """One CPU worker: the step set up once (the face detector), then run per item."""

    def __init__(self, step: Step):
        one_thread_each()  # one core per actor: the pool gives the parallelism
        step.setup("cpu")
        self.step = step

    def ready(self) -> bool:
        return True

    def run(self, item):
        return self.step(item)


def connect(address: str | None, cpus: int = 0) -> bool:
    """Joins the cluster at `address`, or starts one on this machine with `cpus` CPUs (0 =
    all cores); True when this call started Ray (and must stop it). Nothing when connected."""
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        ray.init(address=address, **quiet)
    else:  # "local": never join some other cluster running on this machine by accident
        cpus = cpus or os.cpu_count() or 1
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, **quiet)
    return True


class RayExecutor:
    """Runs a step on a Ray cluster: an existing one (`address`) or a local one."""

    name = "ray"

    def __init__(self, workers: int = 0, address: str | None = None):
        self.workers = workers
        self.address = address

    def _actor_count(self) -> int:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        return min(self.workers, cpus) if self.workers else cpus

    def run(self, step: Step, items: list) -> Iterator:
        if not items:
            return iter(())
        return self._run(step, items)

    def _run(self, step: Step, items: list) -> Iterator:
        started = connect(self.address, self.workers)
        step_ref = ray.put(step)

        def new_actor():
            return StepActor.remote(step_ref)

        actors = [new_actor() for _ in range(min(self._actor_count(), len(items)))]
        try:
            # A detector that cannot load fails the run here, not once per clip.
            ray.get(actors[0].ready.remote())
            yield from self._schedule(step, actors, deque(items), new_actor)
        finally:
            for actor in actors:
                ray.kill(actor, no_restart=True)
            if started:
                ray.shutdown()

    def _schedule(self, step: Step, actors: list, queue: deque, new_actor) -> Iterator:
        """Keeps every actor busy with ≤ 2 clips; yields clips as they finish."""
        in_flight: list[deque] = [deque() for _ in actors]  # (task, clip) in submission order
        owner: dict = {}  # task → actor index

        def fill(index: int) -> None:
            while queue and len(in_flight[index]) < IN_FLIGHT_PER_ACTOR:
                ref = queue.popleft()
                task = actors[index].run.remote(ref)
                in_flight[index].append((task, ref))
                owner[task] = index

        for index in range(len(actors)):
            fill(index)
        while owner:
            (task,), _ = ray.wait(list(owner), num_returns=1)
            index = owner[task]
            try:
                clip = ray.get(task)
            except RayActorError:
                yield from self._actor_died(step, index, actors, in_flight, owner, queue, new_actor)
            except Exception as error:  # the task failed, its actor lives on
                ref = _forget(task, in_flight[index], owner)
                yield step.failed(ref, str(error).splitlines()[0] or type(error).__name__)
            else:
                _forget(task, in_flight[index], owner)
                yield _owned(clip)
            fill(index)

    def _actor_died(self, step, index, actors, in_flight, owner, queue, new_actor):
        """The oldest unfinished clip of a dead actor killed it; those behind it go again."""
        culprit = None
        retry = []
        for task, ref in list(in_flight[index]):
            _forget(task, in_flight[index], owner)
            try:
                clip = ray.get(task)
            except RayActorError as error:
                if culprit is None:
                    culprit = ref
                    yield step.failed(ref, _first_line(error))
                else:
                    retry.append(ref)
            except Exception as error:
                yield step.failed(ref, _first_line(error))
            else:
                yield _owned(clip)  # finished before the crash: its result outlives the actor
        queue.extendleft(reversed(retry))
        ray.kill(actors[index], no_restart=True)
        actors[index] = new_actor()


def _forget(task, flight: deque, owner: dict):
    """Removes a task from the books; returns its clip."""
    del owner[task]
    for pair in flight:
        if pair[0] == task:
            flight.remove(pair)
            return pair[1]
    raise KeyError(task)


def _owned(result):
    """Arrays of our own: Ray hands back read-only views of its object store (zero-copy),
    which torch must not wrap, and which would pin the object store until the model ran."""
    for name, array in vars(result).items():
        if isinstance(array, np.ndarray) and not array.flags.writeable:
            setattr(result, name, array.copy())
    return result


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
