"""Executors: where a step runs on every item (datatrove's executors, for one step).

An executor is given the step as a value and runs it on each item: in this process or a
pool of spawned workers (`local`), or on a Ray cluster (`ray`, optional extra). It yields
results in completion order with a bounded number in flight, so memory stays flat however
many items a run has. Executors import nothing from the steps they run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

EXECUTORS = ("local", "ray")


class Step(Protocol):
    """A picklable unit of work: set up once per worker, then called on each item."""

    def setup(self, device: str = "cpu") -> None:
        """Loads what is heavy (a face detector) in the worker that will run the step."""

    def __call__(self, item: Any) -> Any:
        """The result for one item; never raises for a bad item."""

    def failed(self, item: Any, why: str) -> Any:
        """The result for an item whose worker process died while running it."""


class Executor(Protocol):
    """Runs a step on every item; yields the results in completion order."""

    name: str

    def run(self, step: Step, items: list) -> Iterator[Any]: ...


def make_executor(
    name: str = "local", *, workers: int = 0, device: str = "cpu", ray_address: str | None = None
) -> Executor:
    if name == "local":
        from synccurate.pipeline.executors.local import LocalExecutor

        return LocalExecutor(workers, device)
    if name == "ray":
        from synccurate.pipeline.executors.ray import RayExecutor

        return RayExecutor(workers=workers, address=ray_address)
    raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
