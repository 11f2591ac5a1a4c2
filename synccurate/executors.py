"""Executors: where the prepare step (decode + faces, `score.prepare_clip`) runs.

The steps know nothing of processes; an executor only schedules them. `local` runs them in
this process (`workers=0`) or in a pool of spawned worker processes; `ray` (module
`synccurate.ray_executor`, optional extra) runs them on a Ray cluster. Each yields prepared
clips in completion order with a bounded number in flight, so memory stays flat however
many clips a run has. The model step and the writer stay in the driver process.
"""

from __future__ import annotations

import os
import pickle
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import TYPE_CHECKING, Protocol

# synccurate.faces (cv2, scipy) is imported where a detector is made: in the workers, or
# here only when clips are prepared in this process.
if TYPE_CHECKING:
    from synccurate import faces
    from synccurate.models.base import InputRecipe
    from synccurate.score import ClipRef, PreparedClip

EXECUTORS = ("local", "ray")
PARENT_CHECK_S = 1.0  # a worker whose driver died exits within this many seconds
PR_SET_PDEATHSIG = 1  # prctl option: signal sent to this process when its parent dies


class Executor(Protocol):
    """Runs the prepare step of every clip; yields PreparedClip in completion order."""

    name: str

    def prepare(
        self, refs: list[ClipRef], recipe: InputRecipe, detector_name: str, detect_every: int
    ) -> Iterator[PreparedClip]: ...


def failed_clip(ref: ClipRef, why: str) -> PreparedClip:
    """The status row of a clip whose worker died (a decoder crash must not end the run)."""
    from synccurate.score import PreparedClip

    return PreparedClip(ref, status="error", error=f"{ref.file}: worker failed: {why}")


_worker_detector: faces.FaceDetector | None = None


def _exit_with_parent(parent: int) -> None:
    """Workers end when the driver does, even when it was SIGKILLed (no cleanup ran)."""
    while True:
        time.sleep(PARENT_CHECK_S)
        if os.getppid() != parent:
            os._exit(1)


def _die_with_parent() -> None:
    """Linux: the kernel SIGKILLs this worker when the driver dies (the watchdog is the rest)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _init_worker(detector_name: str, parent: int) -> None:
    global _worker_detector
    _die_with_parent()  # first: importing torch below can take seconds on a busy machine
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:
        os._exit(1)
    import cv2
    import torch

    from synccurate import faces

    torch.set_num_threads(1)  # each worker one core: the pool, not threads, gives parallelism
    cv2.setNumThreads(1)
    _worker_detector = faces.make_detector(detector_name, device="cpu")


def _prepare_in_worker(ref, recipe, every, spool: str):
    """prepare_clip in a worker; a clip with crops comes back as a file in `spool`.

    Through the result pipe a clip's crops (37 MB for 10 s of 224² frames) would be held
    twice in the driver while unpickled, and once more for each finished clip waiting its
    turn; from a file they are read once, when the driver takes the clip.
    """
    from synccurate.score import prepare_clip

    clip = prepare_clip(ref, recipe, _worker_detector, every)
    if clip.crops is None:
        return clip
    handle, path = tempfile.mkstemp(suffix=".pickle", dir=spool)
    with os.fdopen(handle, "wb") as file:
        pickle.dump(clip, file, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def _unspool(result) -> PreparedClip:
    """The clip a worker returned, read back from its spool file (which is then deleted)."""
    if not isinstance(result, str):
        return result
    try:
        with open(result, "rb") as file:
            return pickle.load(file)  # written by our own worker, in our private folder
    finally:
        os.unlink(result)


class LocalExecutor:
    """This machine: in-process (workers=0) or a pool of spawned processes."""

    name = "local"

    def __init__(self, workers: int = 0, device: str = "cpu"):
        self.workers = workers
        self.device = device  # for the detector when it runs in this process

    def prepare(self, refs, recipe, detector_name, detect_every) -> Iterator[PreparedClip]:
        if self.workers == 0:
            return self._in_process(refs, recipe, detector_name, detect_every)
        return self._in_pool(refs, recipe, detector_name, detect_every)

    def _in_process(self, refs, recipe, detector_name, every) -> Iterator[PreparedClip]:
        from synccurate import faces
        from synccurate.score import prepare_clip

        detector = faces.make_detector(detector_name, device=self.device)
        for ref in refs:
            yield prepare_clip(ref, recipe, detector, every)

    def _in_pool(self, refs, recipe, detector_name, every) -> Iterator[PreparedClip]:
        """At most 2 clips per worker in flight; a worker that dies takes one clip down.

        A crashed worker process breaks the whole pool: every clip then in flight fails
        with BrokenProcessPool and nothing says which one crashed. So a new pool is made,
        and those clips (the suspects) run again one at a time, alone: one that breaks the
        pool again while alone is the culprit and becomes a status row; then the rest go on.
        """
        queue, suspects = deque(refs), deque()
        with tempfile.TemporaryDirectory(prefix="synccurate-clips-") as spool:
            while queue or suspects:
                yield from self._until_broken(queue, suspects, recipe, detector_name, every, spool)

    def _until_broken(self, queue, suspects, recipe, detector_name, every, spool):
        """Runs clips from `suspects` (alone) then `queue` in one pool, until it breaks."""
        context = get_context("spawn")  # fork deadlocks under torch's threads
        with ProcessPoolExecutor(
            # never more workers than clips: starting one costs ~2 s (it imports torch)
            min(self.workers, len(queue) + len(suspects)),
            mp_context=context,
            initializer=_init_worker,
            initargs=(detector_name, os.getpid()),
        ) as pool:
            running: dict = {}
            alone = None  # the suspect running by itself

            while True:
                if suspects and not running:
                    alone = suspects.popleft()
                    running[pool.submit(_prepare_in_worker, alone, recipe, every, spool)] = alone
                while queue and not suspects and len(running) < 2 * self.workers:
                    ref = queue.popleft()
                    running[pool.submit(_prepare_in_worker, ref, recipe, every, spool)] = ref
                if not running:
                    return
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                    done, _ = wait(running)  # the pool is gone: every future ends now
                broken = False
                for future in done:
                    ref = running.pop(future)
                    error = future.exception()
                    if error is None:
                        yield _unspool(future.result())
                    elif isinstance(error, BrokenProcessPool) and ref != alone:
                        suspects.append(ref)
                        broken = True
                    else:  # the culprit, or an error that is not a dead worker
                        yield failed_clip(ref, str(error) or type(error).__name__)
                        broken = broken or isinstance(error, BrokenProcessPool)
                    if ref == alone:
                        alone = None
                if broken:
                    return


def make_executor(
    name: str = "local", *, workers: int = 0, device: str = "cpu", ray_address: str | None = None
) -> Executor:
    if name == "local":
        return LocalExecutor(workers, device)
    if name == "ray":
        from synccurate.ray_executor import RayExecutor

        return RayExecutor(workers=workers, address=ray_address)
    raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
