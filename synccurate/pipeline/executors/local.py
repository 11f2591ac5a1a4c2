"""The local executor: a step in this process (`workers=0`) or in a pool of spawned workers.

A worker that crashes (a decoder's segfault) must not end the run: the pool is made again
and the item that broke it alone becomes its step's `failed` result.
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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synccurate.pipeline.executors import Step

PARENT_CHECK_S = 1.0  # a worker whose driver died exits within this many seconds
PR_SET_PDEATHSIG = 1  # prctl option: signal sent to this process when its parent dies

_worker_step: Step | None = None  # the step this worker runs, set up once


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


def _init_worker(step: Step, parent: int) -> None:
    global _worker_step
    _die_with_parent()  # first: importing torch below can take seconds on a busy machine
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:
        os._exit(1)
    one_thread_each()
    step.setup("cpu")
    _worker_step = step


def one_thread_each() -> None:
    """Each worker one core: the pool, not threads, gives the parallelism."""
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def _run_in_worker(item, spool: str) -> str:
    """The step on one item in a worker; the result comes back as a file in `spool`.

    Through the result pipe a clip's crops (37 MB for 10 s of 224² frames) would be held
    twice in the driver while unpickled, and once more for each finished clip waiting its
    turn; from a file they are read once, when the driver takes the clip.
    """
    result = _worker_step(item)
    handle, path = tempfile.mkstemp(suffix=".pickle", dir=spool)
    with os.fdopen(handle, "wb") as file:
        pickle.dump(result, file, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def _unspool(path: str):
    """The result a worker wrote, read back from its spool file (which is then deleted)."""
    try:
        with open(path, "rb") as file:
            return pickle.load(file)  # written by our own worker, in our private folder
    finally:
        os.unlink(path)


class LocalExecutor:
    """This machine: in-process (workers=0) or a pool of spawned processes."""

    name = "local"

    def __init__(self, workers: int = 0, device: str = "cpu"):
        self.workers = workers
        self.device = device  # for the step's models when it runs in this process

    def run(self, step: Step, items: list) -> Iterator:
        if self.workers == 0:
            return self._in_process(step, items)
        return self._in_pool(step, items)

    def _in_process(self, step: Step, items: list) -> Iterator:
        step.setup(self.device)
        for item in items:
            yield step(item)

    def _in_pool(self, step: Step, items: list) -> Iterator:
        """At most 2 items per worker in flight; a worker that dies takes one item down.

        A crashed worker process breaks the whole pool: every item then in flight fails
        with BrokenProcessPool and nothing says which one crashed. So a new pool is made,
        and those items (the suspects) run again one at a time, alone: one that breaks the
        pool again while alone is the culprit and becomes its step's `failed` result; then
        the rest go on.
        """
        queue, suspects = deque(items), deque()
        with tempfile.TemporaryDirectory(prefix="synccurate-clips-") as spool:
            while queue or suspects:
                yield from self._until_broken(step, queue, suspects, spool)

    def _until_broken(self, step: Step, queue: deque, suspects: deque, spool: str) -> Iterator:
        """Runs items from `suspects` (alone) then `queue` in one pool, until it breaks."""
        context = get_context("spawn")  # fork deadlocks under torch's threads
        with ProcessPoolExecutor(
            # never more workers than items: starting one costs ~2 s (it imports torch)
            min(self.workers, len(queue) + len(suspects)),
            mp_context=context,
            initializer=_init_worker,
            initargs=(step, os.getpid()),
        ) as pool:
            running: dict = {}
            alone = None  # the suspect running by itself

            while True:
                if suspects and not running:
                    alone = suspects.popleft()
                    running[pool.submit(_run_in_worker, alone, spool)] = alone
                while queue and not suspects and len(running) < 2 * self.workers:
                    item = queue.popleft()
                    running[pool.submit(_run_in_worker, item, spool)] = item
                if not running:
                    return
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                    done, _ = wait(running)  # the pool is gone: every future ends now
                broken = False
                for future in done:
                    item = running.pop(future)
                    error = future.exception()
                    if error is None:
                        yield _unspool(future.result())
                    elif isinstance(error, BrokenProcessPool) and item != alone:
                        suspects.append(item)
                        broken = True
                    else:  # the culprit, or an error that is not a dead worker
                        yield step.failed(item, str(error) or type(error).__name__)
                        broken = broken or isinstance(error, BrokenProcessPool)
                    if item == alone:
                        alone = None
                if broken:
                    return
