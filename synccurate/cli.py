"""Command-line interface: thin Typer wrappers around the pipeline modules."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(
    help="Measure and repair audio-video sync of talking-head clips with IC-SyncNet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console(stderr=True)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Detector(str, Enum):
    auto = "auto"
    face_alignment = "face-alignment"
    opencv = "opencv"
    none = "none"


def fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(2)


SCORE_HELP = """Score every video under PATHS and write one Parquet row per clip.

Columns (see docs/reading-scores.md):

- [b]offset_frames[/b] / offset_seconds: audio-video offset. [b]Positive = the audio leads[/b]
  (is early): the sound of frame t is heard at frame t - offset. A clip whose audio was
  delayed by 200 ms reports -5; advanced by 200 ms reports +5. `synccurate fix` delays the
  audio by offset_seconds to repair it.
- [b]prob_at_offset[/b]: probability (0-1) that the clip is in sync once shifted by the offset.
- [b]offscreen_ratio[/b]: fraction of the clip where the speech does not match the visible
  mouth (someone off screen talking, dubbing).
- confidence (SyncNet-style max - median), face_ratio, silence_ratio, at_search_edge (the
  offset hit ±max-offset, so the true offset may lie beyond), model, status and error
  (ok / no_face / no_audio / no_video / too_short / decode_error), per-window p_t and onscreen.

Reruns resume: clips already in the table are skipped, so an interrupted run can be restarted
with the same command.
"""


@app.command(help=SCORE_HELP)
def score(
    paths: list[Path] = typer.Argument(..., help="Folders (searched recursively) or video files."),
    output: Path = typer.Option(..., "-o", "--output", help="Parquet table to write or resume."),
    weights: Path | None = typer.Option(
        None, help="Checkpoint (.safetensors with .json beside it). Default: $SYNCCURATE_WEIGHTS, "
        "then the bundled weights/."
    ),
    face_detector: Detector = typer.Option(
        Detector.auto, help="auto picks face-alignment when its weights are cached, else opencv; "
        "none = the frames are already face crops."
    ),
    device: Device = typer.Option(Device.auto, help="auto uses CUDA when present."),
    batch_size: int = typer.Option(256, min=1, help="Windows per model batch (across clips)."),
    workers: int = typer.Option(
        min(4, os.cpu_count() or 1), min=0, help="Processes decoding and cropping (0 = in-process)."
    ),
    max_offset: int = typer.Option(15, min=1, max=60, help="Search ±this many frames."),
    retry_failed: bool = typer.Option(False, help="Score again the clips whose status is not ok."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    from synccurate import model as model_lib
    from synccurate import score as scoring

    try:
        refs = scoring.discover(paths)
        checkpoint = model_lib.find_weights(weights)
        net, sidecar = model_lib.load_checkpoint(checkpoint)
        torch_device = scoring.resolve_device(device.value)
        table = scoring.ScoresTable(output, retry_failed=retry_failed)
    except (FileNotFoundError, ValueError, model_lib.WeightsError) as error:
        fail(str(error))
    if output.resolve() in {ref.file.resolve() for ref in refs}:
        fail(f"{output}: the output would overwrite an input clip")
    todo = sum(not table.done(ref) for ref in refs)
    console.print(
        f"{len(refs)} clips found, {len(refs) - todo} already scored, {todo} to score "
        f"with {sidecar['model_id']} on {torch_device}",
        highlight=False,
    )
    bar = Progress(
        TextColumn("scoring"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} clips"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not progress,
    )

    def advance(row: dict, stats: scoring.RunStats) -> None:
        wall = max(stats.wall, 1e-6)
        rate = f"{stats.clips / wall:.2f} clips/s, {stats.video_seconds / wall:.1f} s video/s"
        bar.update(task, advance=1, rate=rate)
        if row["status"] != "ok":
            bar.console.print(f"[yellow]{row['status']}[/yellow] {row['error']}", highlight=False)

    with bar:
        task = bar.add_task("score", total=todo, rate="")
        stats = scoring.score_clips(
            refs,
            table,
            net,
            sidecar["model_id"],
            device=torch_device,
            detector_name=face_detector.value,
            batch_size=batch_size,
            workers=workers,
            max_offset=max_offset,
            on_clip=advance,
        )
    _print_score_summary(stats, table, output)


def _print_score_summary(stats, table, output: Path) -> None:
    summary = Table(title=f"scored {stats.clips} clips in {stats.wall:.1f} s → {output}")
    summary.add_column("status")
    summary.add_column("clips", justify="right")
    for status, count in stats.statuses.most_common():
        summary.add_row(status, str(count))
    wall = max(stats.wall, 1e-6)
    summary.add_row("video scored", f"{stats.video_seconds:.1f} s ({stats.video_seconds / wall:.1f} s/s)")
    for stage in ("audio", "faces", "model"):
        if stats.seconds[stage]:
            summary.add_row(f"time in {stage}", f"{stats.seconds[stage]:.1f} s")
    console.print(summary)
