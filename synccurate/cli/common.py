"""What every command shares: the console, error and warning lines, option choices, help texts.

Nothing here imports torch or pandas: `synccurate --help` reads every command's options,
so the option defaults that live in heavy library modules are read lazily (`LibraryDefault`).
"""

from __future__ import annotations

import importlib
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)


class LibraryDefault:
    """An option default read from the library module that owns it, when first needed.

    `where` is "module:NAME" (or "module:Class.field" for a dataclass field's default).
    Click calls a callable default only when the option is not given, and a command's help
    shows str() of it: each default keeps one name, in the library, whose module is imported
    when the command runs or shows its help, not when `synccurate --help` lists the commands.
    """

    def __init__(self, where: str) -> None:
        self.where = where

    def __call__(self) -> Any:
        module, _, name = self.where.partition(":")
        value = importlib.import_module(module)
        for attribute in name.split("."):
            value = getattr(value, attribute)
        return value

    def __str__(self) -> str:
        return str(self())


# Shared by `score` and `plot`.
DETECT_EVERY = LibraryDefault("synccurate.pipeline.run:DETECT_EVERY")
MAX_OFFSET = LibraryDefault("synccurate.models.sync:MAX_OFFSET")


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class ModelKind(str, Enum):
    icsyncnet = "icsyncnet"
    syncnet_v2 = "syncnet-v2"
    wav2lip_expert = "wav2lip-expert"


class Executor(str, Enum):
    local = "local"
    ray = "ray"


class OffsetMethod(str, Enum):
    mean = "mean"
    vote = "vote"


class RelativeTo(str, Enum):
    zero = "zero"
    dataset = "dataset"


class Precision(str, Enum):
    """The encoders' arithmetic (pipeline.batching.PRECISIONS)."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class ShotDetectorName(str, Enum):
    """PySceneDetect's detectors (faces.shots.SHOT_DETECTORS), none, or auto (content
    when segments are asked for, else none)."""

    auto = "auto"
    content = "content"
    adaptive = "adaptive"
    threshold = "threshold"
    none = "none"


class Detector(str, Enum):
    auto = "auto"
    face_alignment = "face-alignment"
    centerface = "centerface"
    opencv = "opencv"
    none = "none"


MODEL_HELP = (
    "Model kind; default: read off --weights (IC-SyncNet when no --weights is given). "
    "See docs/models.md."
)
WEIGHTS_HELP = (
    "Weights file: IC-SyncNet .safetensors (+ .json), syncnet_v2.model, lipsync_expert.pth, "
    "or one converted by `synccurate weights import`. Default: $SYNCCURATE_WEIGHTS, then the "
    "bundled weights/ (IC-SyncNet, synthetic-only). Never downloaded."
)
RELATIVE_TO_HELP = (
    "What counts as in sync: zero (offset 0), or dataset = the data set's own offset, the mode "
    "of offset_frames over its confident clips (a data set shifted as a whole)."
)
REFERENCE_HELP = "Take this offset (frames) as in sync instead."
ALLOW_SYNTHETIC_HELP = (
    "Go on with a table whose clips were scored by weights trained on synthetic clips only "
    "although they are not synth clips (their numbers mean nothing)."
)


def say(text: str) -> None:
    """One line of plain text: file names and errors may hold brackets, which rich would
    otherwise read as markup and drop ("synccurate[ray]", a file called "[red].mp4")."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def fail(message: str) -> NoReturn:
    """One red error line, exit code 2."""
    console.print(
        f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True
    )  # one line
    raise typer.Exit(2)


def warn(line: str) -> None:
    """One prominent warning line (bold yellow on a terminal, plain text in a log)."""
    console.print(f"[bold yellow]{escape(line)}[/bold yellow]", highlight=False, soft_wrap=True)


@contextmanager
def terminated_as_exit() -> Iterator[None]:
    """SIGTERM (Slurm's time limit, `kill`, a container stop) ends the run like Ctrl-C:
    the writer publishes the rows already scored instead of losing them (exit code 143)."""

    def stop(signum, frame) -> None:
        raise SystemExit(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def load_model_or_fail(kind: ModelKind | None, weights: Path | None):
    """The chosen model, or one clear error line naming the file and what was expected."""
    from synccurate.models import load_model
    from synccurate.models.weights import WeightsError

    try:
        return load_model(kind.value if kind else None, weights)
    except (FileNotFoundError, ValueError, WeightsError) as error:
        fail(str(error))
