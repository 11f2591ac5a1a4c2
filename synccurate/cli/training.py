"""The training commands: synth, train, eval, demo."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from synccurate.cli.common import (
    ALLOW_SYNTHETIC_HELP,
    MODEL_HELP,
    WEIGHTS_HELP,
    Detector,
    Device,
    LibraryDefault,
    ModelKind,
    console,
    fail,
    load_model_or_fail,
    say,
    warn,
)
from synccurate.cli.scoring import score_with_progress


def _setting(name: str) -> LibraryDefault:
    """The default of a `train` option: that field of `TrainSettings`."""
    return LibraryDefault(f"synccurate.training.train:TrainSettings.{name}")


def synth(
    out_dir: Path = typer.Argument(..., help="Folder for the clips and manifest.parquet."),
    n: int = typer.Option(10, min=1, help="Number of clips."),
    seconds: float = typer.Option(4.0, min=0.5, help="Length of each clip."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same clips."),
    offset: int = typer.Option(0, help="True offset of every clip (SPEC sign: + = audio leads)."),
    offset_range: int | None = typer.Option(
        None, help="Draw offsets uniformly from ±this instead."
    ),
    offscreen: float = typer.Option(0.0, min=0, max=0.95, help="Off-screen speech fraction."),
    offscreen_every: int = typer.Option(0, min=0, help="Only every k-th clip gets it (0 = all)."),
    silence_every: int = typer.Option(0, min=0, help="Every k-th clip is mostly silence."),
    stutter_every: int = typer.Option(0, min=0, help="Every k-th clip has frozen/repeated frames."),
    size: int = typer.Option(96, min=48, help="Frame size in pixels (square face crops)."),
    partial_shift: int = typer.Option(
        0, help="Shift the audio of one stretch of each clip by this many frames more."
    ),
    partial_fraction: float = typer.Option(
        0.0, min=0, max=0.95, help="Length of that stretch, as a fraction of the clip."
    ),
    drift: float = typer.Option(
        0.0, help="The offset grows by this many ms a minute (+ = the audio leads more and more)."
    ),
    offset_step: str | None = typer.Option(
        None,
        metavar="SECONDS:FRAMES",
        help="From SECONDS on, the offset is FRAMES larger (an edit), e.g. 120:6.",
    ),
    workers: int = typer.Option(LibraryDefault("synccurate.pipeline.run:MAX_WORKERS"), min=1),
) -> None:
    """Generate synthetic talking-face clips with exact ground truth (manifest.parquet)."""
    from synccurate.training import synth as synthesis

    try:
        step = synthesis.parse_offset_step(offset_step) if offset_step else None
        manifest = synthesis.synth_dataset(
            out_dir,
            n=n,
            seconds=seconds,
            seed=seed,
            offset_frames=None if offset_range is not None else offset,
            offset_range=offset_range,
            offscreen_fraction=offscreen,
            offscreen_every=offscreen_every,
            silence_every=silence_every,
            stutter_every=stutter_every,
            size=size,
            partial_shift_frames=partial_shift,
            partial_shift_fraction=partial_fraction,
            drift_ms_per_min=drift,
            offset_step=step,
            workers=workers,
        )
    except (ValueError, OSError) as error:
        fail(str(error))
    say(f"wrote {len(manifest)} clips and {out_dir / synthesis.MANIFEST_NAME}")


TRAIN_INPUT_HELP = (
    "Training clips, all in sync: folders of videos, a folder written by `fix` (exactly the "
    "clips its log lists), or a scores / kept table (.parquet) from `score` / `filter` (its "
    "root + path columns, rows with status ok)."
)


def train(
    videos: list[Path] = typer.Argument(..., help=TRAIN_INPUT_HELP),
    out_dir: Path = typer.Option(
        Path("runs/train"), "-o", "--out-dir", help="Checkpoints go here."
    ),
    cache: Path | None = typer.Option(None, help="Crop + mel cache (default OUT_DIR/cache)."),
    config: str | None = typer.Option(
        None, help="Model size: tiny, small (default) or paper; with --init, the init's."
    ),
    init: Path | None = typer.Option(
        None,
        help="Start from these IC-SyncNet weights (fine-tune / warm start), e.g. the bundled "
        "weights/icsyncnet-small.safetensors; their config is used.",
    ),
    epochs: int = typer.Option(
        _setting("epochs"), min=0, help="Epochs with DropBlock (paper: 600)."
    ),
    tune_epochs: int = typer.Option(
        _setting("tune_epochs"), min=0, help="Drop-and-tune epochs, BN only (paper: 50)."
    ),
    steps_per_epoch: int = typer.Option(
        _setting("steps_per_epoch"), min=0, help="0 = one pass over the training windows."
    ),
    batch_size: int = typer.Option(_setting("batch_size"), min=2),
    lr: float = typer.Option(_setting("lr")),
    tune_lr: float | None = typer.Option(
        None, help="Learning rate of the tune phase (default lr)."
    ),
    hard: int = typer.Option(_setting("n_hard"), min=0, help="Hard negatives per positive (N_h)."),
    easy: int = typer.Option(_setting("n_easy"), min=0, help="Easy negatives per positive (N_e)."),
    lam: float = typer.Option(
        _setting("lam"), min=0, max=1, help="Weight of the easy negatives (λ)."
    ),
    run_length: int = typer.Option(
        _setting("run_length"),
        min=1,
        help="Consecutive positives per clip in a batch (they share audio windows).",
    ),
    cosine: bool = typer.Option(False, help="Cosine learning-rate decay over the main phase."),
    val_fraction: float = typer.Option(_setting("val_fraction"), min=0, max=0.5),
    face_detector: Detector = typer.Option(Detector.none, help="For the cache; none = face crops."),
    workers: int = typer.Option(0, min=0, help="Processes building the cache."),
    device: Device = typer.Option(Device.auto),
    seed: int = typer.Option(_setting("seed")),
    resume: bool = typer.Option(True, help="Continue from OUT_DIR/last.safetensors if present."),
    allow_synthetic_weights: bool = typer.Option(False, help=ALLOW_SYNTHETIC_HELP),
) -> None:
    """Train IC-SyncNet with the BBCE loss and drop-and-tune (SPEC §4).

    Multi-GPU / multi-node: `torchrun --nproc-per-node 8 -m synccurate train …` (the
    batch is split over the processes; rank 0 builds the cache while the others wait).
    The weights record what they were trained on (`trained_on` in their JSON: synthetic
    when every clip is a `synth` clip, else real).
    """
    from synccurate.models.weights import WeightsError
    from synccurate.training.runs import train_on_clips
    from synccurate.training.train import TrainSettings

    settings = TrainSettings(
        epochs=epochs,
        tune_epochs=tune_epochs,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        lr=lr,
        tune_lr=tune_lr or lr,
        n_hard=hard,
        n_easy=easy,
        lam=lam,
        run_length=run_length,
        cosine=cosine,
        val_fraction=val_fraction,
        seed=seed,
    )
    try:
        final = train_on_clips(
            videos,
            out_dir,
            settings,
            cache=cache,
            config=config,
            init=init,
            detector=face_detector.value,
            workers=workers,
            device=device.value,
            resume=resume,
            allow_synthetic_weights=allow_synthetic_weights,
            log=say,
            warn=warn,
        )
    except (FileNotFoundError, ValueError, WeightsError) as error:
        fail(str(error))
    if final:
        say(f"trained weights: {final} (use with --weights, or copy into weights/)")


EVAL_SHIFTS_HELP = (
    "Evaluate every clip with its audio windows shifted by each of these frame counts "
    "(comma-separated; + = audio advanced, so the truth becomes truth + shift). Exact: done on "
    "the audio window index, nothing is re-encoded. Default: -8,-3,0,4,9 for clips and "
    "tables, 0 with --manifest. Shift 0 alone is the paper's protocol."
)


def _parse_shifts(text: str) -> tuple[int, ...]:
    """--shifts as frame counts, or one error line saying what is expected."""
    try:
        shifts = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        fail(f"--shifts {text}: expected whole frame counts separated by commas, e.g. -8,-3,0,4,9")
    if not shifts or max(abs(s) for s in shifts) > 30:
        fail(f"--shifts {text}: give one or more shifts within ±30 frames")
    return shifts


def eval_(
    paths: list[Path] = typer.Argument(
        None,
        help="Test clips: folders of in-sync clips (or a folder written by `fix`), or "
        "scores / kept tables (.parquet) whose offset_frames are taken as the truth.",
    ),
    manifest: Path | None = typer.Option(None, help="A manifest.parquet with true_offset_frames."),
    shifts: str | None = typer.Option(None, help=EVAL_SHIFTS_HELP),
    model: ModelKind | None = typer.Option(None, help=MODEL_HELP),
    weights: Path | None = typer.Option(None, help=WEIGHTS_HELP),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write results JSON here."),
    face_detector: Detector = typer.Option(Detector.none),
    device: Device = typer.Option(Device.auto),
    batch_size: int | None = typer.Option(
        None, min=1, help="Default: the model's own, bounded on CPU as for score."
    ),
    workers: int = typer.Option(0, min=0),
) -> None:
    """Offset accuracy for clip lengths 5 … 15 frames (±1 frame tolerance, ±15 search; SPEC §8),
    per clip length and per shift of the audio."""
    from synccurate.training.runs import evaluate_clips

    if not paths and manifest is None:
        fail("give test clips (folders or tables) or --manifest")
    chosen = None if shifts is None else _parse_shifts(shifts)
    net = load_model_or_fail(model, weights)
    try:
        results = evaluate_clips(
            net,
            paths or [],
            manifest,
            shifts=chosen,
            device=device.value,
            detector=face_detector.value,
            batch_size=batch_size,
            workers=workers,
            output=output,
            warn=warn,
        )
    except (FileNotFoundError, ValueError, KeyError) as error:
        fail(str(error))
    _print_accuracy(results)


def _print_accuracy(results: dict) -> None:
    """The accuracy table (per clip length; per shift when there are several), then what
    was left out."""
    by_shift = results["accuracy_by_shift"] if len(results["shifts"]) > 1 else {}
    table = Table(
        title=f"accuracy of {results['model']} on {results['n_clips']} clips (±1 frame)",
        caption="per audio shift in frames (+ = audio advanced): the columns +N"
        if by_shift
        else None,
    )
    table.add_column("clip length (frames)" if not by_shift else "length")
    table.add_column("all shifts" if by_shift else "accuracy", justify="right")
    table.add_column("sub-clips", justify="right")
    for shift in by_shift:
        table.add_column(f"{int(shift):+d}", justify="right")

    def shown(accuracy):
        return "n/a" if accuracy is None else f"{accuracy:.1%}"

    for length, accuracy in results["accuracy"].items():
        cells = [shown(by_shift[shift][length]) for shift in by_shift]
        table.add_row(length, shown(accuracy), str(results["n_subclips"][length]), *cells)
    console.print(table)
    for error in results["failed_clips"]:
        console.print(f"[yellow]skipped[/yellow] {escape(str(error))}", highlight=False)
    if results["skipped_shifts"]:
        console.print(
            f"[yellow]{len(results['skipped_shifts'])} clip × shift pairs skipped[/yellow]: the "
            f"shifted truth lies beyond ±{results['max_offset']} "
            f"(e.g. {escape(str(results['skipped_shifts'][0]))})",
            highlight=False,
        )
    if results["synthetic_weights_on_real"]:
        from synccurate.models import provenance

        warn(
            provenance.warning_line(
                results["model"], results["non_synth_clips"], results["n_clips"], "clips evaluated"
            )
        )


def demo(
    folder: Path = typer.Argument(Path("example"), help="Where the example clips and table go."),
    weights: Path | None = typer.Option(None),
    device: Device = typer.Option(Device.auto),
) -> None:
    """Generate example clips with known shifts (and an off-screen speaker), score, compare."""
    from synccurate.pipeline.run import ScoreOptions
    from synccurate.store.readers import read_scores
    from synccurate.training import demo as example

    truth = example.make_example_clips(folder)
    table_path = folder / "scores.parquet"
    net = load_model_or_fail(None, weights)
    # The example clips are face crops already: no detector, every frame.
    options = ScoreOptions(
        table_path,
        paths=[folder / "clips"],
        retry_failed=True,
        device=device.value,
        workers=0,
        detector=Detector.none.value,
        detect_every=1,
    )
    score_with_progress(net, options)
    comparison = example.compare(read_scores(table_path), truth)
    table = Table(title="scores vs ground truth (offset: + = audio leads, in frames of 1/25 s)")
    for column in comparison.columns:
        table.add_column(column, justify="left" if column in ("clip", "status") else "right")
    for row in comparison.itertuples(index=False):
        table.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row))
    Console(width=None if sys.stdout.isatty() else 120).print(table)
