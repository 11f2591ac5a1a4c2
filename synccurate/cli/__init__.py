"""Command-line interface: thin Typer wrappers around the pipeline modules."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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


class ModelKind(str, Enum):
    icsyncnet = "icsyncnet"
    syncnet_v2 = "syncnet-v2"
    wav2lip_expert = "wav2lip-expert"


MODEL_HELP = (
    "Model kind; default: read off --weights (IC-SyncNet when no --weights is given). "
    "See docs/models.md."
)
WEIGHTS_HELP = (
    "Weights file: IC-SyncNet .safetensors (+ .json), syncnet_v2.model, lipsync_expert.pth, "
    "or one converted by `synccurate weights import`. Default: $SYNCCURATE_WEIGHTS, then the "
    "bundled weights/ (IC-SyncNet, synthetic-only). Never downloaded."
)


def load_model_or_fail(kind: ModelKind | None, weights: Path | None):
    """The chosen model, or one clear error line naming the file and what was expected."""
    from synccurate.models import load_model
    from synccurate.models.weights import WeightsError

    try:
        return load_model(kind.value if kind else None, weights)
    except (FileNotFoundError, ValueError, WeightsError) as error:
        fail(str(error))


class Executor(str, Enum):
    local = "local"
    ray = "ray"


class OffsetMethod(str, Enum):
    mean = "mean"
    vote = "vote"


class RelativeTo(str, Enum):
    zero = "zero"
    dataset = "dataset"


RELATIVE_TO_HELP = (
    "What counts as in sync: zero (offset 0), or dataset = the data set's own offset, the mode "
    "of offset_frames over its confident clips (a data set shifted as a whole)."
)
REFERENCE_HELP = "Take this offset (frames) as in sync instead."


class Detector(str, Enum):
    auto = "auto"
    face_alignment = "face-alignment"
    centerface = "centerface"
    opencv = "opencv"
    none = "none"


def fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)  # one line
    raise typer.Exit(2)


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


def warn(line: str) -> None:
    """One prominent warning line (bold yellow on a terminal, plain text in a log)."""
    console.print(f"[bold yellow]{line}[/bold yellow]", highlight=False, soft_wrap=True)


SYNTH_CHECK_SAMPLE = 64  # clips whose synth tag `score` reads before it starts


def synthetic_weights_warning(net, refs, sample: int | None = None) -> str | None:
    """The warning line when synthetic-only weights meet clips that are not `synth` clips.

    Reads only the container headers of `refs` (the first `sample` of them): the rows of a
    run record every clip, this is the early word.
    """
    from synccurate.io import media
    from synccurate.models import provenance

    if not provenance.synthetic_only(net) or not refs:
        return None
    checked = refs if sample is None else refs[:sample]
    n_real = sum(media.is_synth_file(ref.file) is False for ref in checked)
    if not n_real:
        return None
    what = "clips" if len(checked) == len(refs) else f"clips checked (of {len(refs)})"
    return provenance.warning_line(net.model_id, n_real, len(checked), what)


ALLOW_SYNTHETIC_HELP = (
    "Go on with a table whose clips were scored by weights trained on synthetic clips only "
    "although they are not synth clips (their numbers mean nothing)."
)


def refuse_synthetic_scores(table, name, allow: bool) -> None:
    """filter / fix / train: one line refusing a table of meaningless scores, unless allowed."""
    from synccurate.models import provenance

    refusal = provenance.refusal(table, str(name))
    if refusal and not allow:
        fail(refusal)
    if refusal:
        warn(f"WARNING ({provenance.ALLOW_FLAG}): {refusal.split(', so ')[0]}")


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
  (ok / no_face / no_audio / no_video / too_short / decode_error / error), per-window p_t
  and onscreen.
- vote_offset / vote_share: ModEFormer's per-window vote for the offset and the share of face
  windows voting for it (--offset-method vote makes it decide offset_frames).
- lse_d / lse_c / fconf (--model syncnet-v2): LSE-D (min mean distance, lower = better),
  LSE-C (median - min, higher = better) and the frame-wise confidence; a distance model has
  no probability, so prob_at_offset and offscreen_ratio are null (docs/models.md).

Reruns resume: clips already in the table are skipped, so an interrupted run can be restarted
with the same command.
"""


@app.command(help=SCORE_HELP)
def score(
    paths: list[Path] = typer.Argument(
        None, help="Folders (searched recursively) or video files (or give --manifest)."
    ),
    output: Path = typer.Option(
        ...,
        "-o",
        "--output",
        help="Scores folder of Parquet parts, created or resumed (a legacy single-file "
        "table there is migrated into a folder of the same name first).",
    ),
    manifest_path: Path | None = typer.Option(
        None,
        "--manifest",
        exists=True,
        dir_okay=False,
        help="Clip list from `synccurate manifest` instead of walking PATHS (walk once, "
        "score with many jobs).",
    ),
    model: ModelKind | None = typer.Option(None, help=MODEL_HELP),
    weights: Path | None = typer.Option(None, help=WEIGHTS_HELP),
    face_detector: Detector = typer.Option(
        Detector.auto,
        help="auto picks face-alignment when its weights are cached, else centerface; "
        "none = the frames are already face crops.",
    ),
    detect_every: int = typer.Option(
        4,
        min=1,
        help="Run the face detector on every n-th frame and interpolate between them; 1 = "
        "every frame (4: a quarter of the detection cost, no measured loss on real clips).",
    ),
    device: Device = typer.Option(Device.auto, help="auto uses CUDA when present."),
    batch_size: int | None = typer.Option(
        None,
        min=1,
        help="Windows per model batch, shared across clips. Default: the model's own "
        "on a GPU (256 IC-SyncNet, 64 Wav2Lip expert, 16 SyncNet v2); on CPU 64, 64 and 4, "
        "lowered further until a batch's activations fit in 1 GiB.",
    ),
    workers: int = typer.Option(
        min(4, os.cpu_count() or 1),
        min=0,
        help="Processes decoding and cropping (0 = in-process); with --executor ray, "
        "Ray actors (0 = one per CPU of the cluster).",
    ),
    max_offset: int = typer.Option(15, min=1, max=60, help="Search ±this many frames."),
    retry_failed: bool = typer.Option(False, help="Score again the clips whose status is not ok."),
    shard: str | None = typer.Option(
        None,
        help="Score only shard K of N, as K/N (0-based), for parallel jobs; all shards may "
        "write into the same -o folder (`synccurate shards` shows which are unfinished).",
    ),
    executor: Executor = typer.Option(
        Executor.local,
        help="Where decoding and face cropping run: local processes, or a Ray cluster "
        "(pip install 'synccurate[ray]').",
    ),
    ray_address: str | None = typer.Option(
        None, help="Ray cluster to join (default: start a local one); with --executor ray."
    ),
    part_seconds: float = typer.Option(
        60.0,
        min=0.0,
        help="Publish a Parquet part at least this often (seconds): a crash loses at most "
        "this much work; readers see only published parts.",
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    offset_method: OffsetMethod = typer.Option(
        OffsetMethod.mean,
        help="What decides offset_frames: mean = argmax of the mean profile (SPEC §6); "
        "vote = the per-window vote (ModEFormer). Both are stored (vote_offset).",
    ),
) -> None:
    import pyarrow

    from synccurate.io import inputs
    from synccurate.models import provenance
    from synccurate.pipeline import batching, executors
    from synccurate.pipeline import driver as scoring
    from synccurate.store import parts as store

    if not paths and manifest_path is None:
        fail("give folders or video files to score, or --manifest")
    net = load_model_or_fail(model, weights)
    try:
        refs = _clip_list(paths, manifest_path)
        if shard:
            index, count = store.parse_shard(shard)
            refs = inputs.shard(refs, index, count)
        torch_device = batching.resolve_device(device.value)
        if output.resolve() in {ref.file.resolve() for ref in refs}:
            raise ValueError(f"{output}: the output would overwrite an input clip")
        pinned = {"model": net.model_id, "max_offset": max_offset}
        # The writer's Arrow buffers come and go with every part. With the system allocator
        # a long run's memory stays flat; pyarrow's default pool (mimalloc) kept growing:
        # +16 % from 1k to 100k rows against +9 % (benchmarks/writer_scale.py, part c).
        pyarrow.set_memory_pool(pyarrow.system_memory_pool())
        writer, done = store.open_output(
            output, pinned, shard=shard, retry_failed=retry_failed, seconds_per_part=part_seconds
        )
        runner = executors.make_executor(
            executor.value,
            workers=workers,
            device="cpu" if workers else torch_device.type,
            ray_address=ray_address,
        )
    except (FileNotFoundError, ValueError, ImportError) as error:
        fail(str(error))
    todo_refs = [ref for ref in refs if (ref.root, ref.path) not in done]
    todo = len(todo_refs)
    console.print(
        f"{len(refs)} clips found, {len(refs) - todo} already scored, {todo} to score "
        f"with {net.model_id} on {torch_device}",
        highlight=False,
    )
    warned = synthetic_weights_warning(net, todo_refs, SYNTH_CHECK_SAMPLE)
    if warned:
        warn(warned)
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
        nonlocal warned
        if row.get("synthetic_weights_on_real") and not warned:  # beyond the clips checked
            warned = provenance.warning_line(net.model_id, 1, 1, f"clips so far ({row['path']})")
            warn(warned)
        if row["status"] != "ok":
            bar.console.print(f"[yellow]{row['status']}[/yellow] {row['error']}", highlight=False)

    with terminated_as_exit(), bar, writer:
        task = bar.add_task("score", total=todo, rate="")
        stats = scoring.score_clips(
            refs,
            writer,
            net,
            done=done,
            executor=runner,
            device=torch_device,
            detector_name=face_detector.value,
            detect_every=detect_every,
            batch_size=batch_size,
            max_offset=max_offset,
            on_clip=advance,
            offset_method=offset_method.value,
        )
    _print_score_summary(stats, output)
    if stats.synthetic_on_real:
        warn(
            provenance.warning_line(net.model_id, stats.synthetic_on_real, stats.clips)
            + f" The table marks them ({provenance.SYNTHETIC_ON_REAL_COLUMN} = true)."
        )


def _clip_list(paths: list[Path] | None, manifest_path: Path | None) -> list:
    """The clips to score: the manifest's, or those found under PATHS (walked here)."""
    from synccurate.io import inputs

    if manifest_path is not None:
        from synccurate.store.manifest import read_manifest

        return read_manifest(manifest_path)
    return inputs.discover(paths)


def _print_score_summary(stats, output: Path) -> None:
    summary = Table(title=f"scored {stats.clips} clips in {stats.wall:.1f} s → {output}")
    summary.add_column("status")
    summary.add_column("clips", justify="right")
    for status, count in stats.statuses.most_common():
        summary.add_row(status, str(count))
    wall = max(stats.wall, 1e-6)
    summary.add_row(
        "video scored", f"{stats.video_seconds:.1f} s ({stats.video_seconds / wall:.1f} s/s)"
    )
    for stage in ("audio", "faces", "model"):
        if stats.seconds[stage]:
            summary.add_row(f"time in {stage}", f"{stats.seconds[stage]:.1f} s")
    console.print(summary)


@app.command()
def compact(
    folder: Path = typer.Argument(..., exists=True, file_okay=False, help="A scores folder."),
) -> None:
    """Rewrite a scores folder as one part, keeping the latest row of each clip.

    Safe while jobs still write into the folder: parts published meanwhile are left alone.
    """
    from synccurate.store import readers

    try:
        parts, rows, target = readers.compact(folder)
    except (ValueError, OSError) as error:
        fail(str(error))
    console.print(f"{folder}: {parts} parts → {target.name if target else 'none'} ({rows} rows)")


@app.command()
def manifest(
    paths: list[Path] = typer.Argument(..., help="Folders (searched recursively) or video files."),
    output: Path = typer.Option(..., "-o", "--output", help="Manifest table to write."),
) -> None:
    """Walk PATHS once and write root, path, size, mtime of every clip (for many jobs)."""
    from synccurate.store.manifest import write_manifest

    try:
        table = write_manifest(paths, output)
    except (FileNotFoundError, ValueError, OSError) as error:
        fail(str(error))
    console.print(f"{output}: {len(table)} clips", highlight=False)


@app.command()
def shards(
    folder: Path = typer.Argument(..., help="The scores folder the shard jobs write into."),
    manifest_path: Path = typer.Option(
        ..., "--manifest", exists=True, dir_okay=False, help="Manifest from `manifest`."
    ),
    count: int | None = typer.Option(
        None, min=1, help="Shard count N (default: the one recorded in the folder)."
    ),
) -> None:
    """Say which shards are finished, unfinished or missing; print the ones to run again.

    stdout: the unfinished and missing shard indices, e.g. 3,7 (for sbatch --array=…).
    """
    from synccurate.store.manifest import shard_status

    try:
        status = shard_status(folder, manifest_path, count)
    except (FileNotFoundError, ValueError, OSError) as error:
        fail(str(error))
    table = Table(title=f"{folder}: {len(status)} shards")
    for column in ("state", "shards", "clips with a row"):
        table.add_column(column, justify="left" if column == "state" else "right")
    for state in ("finished", "unfinished", "missing"):
        group = [s for s in status if s.state == state]
        done, clips = sum(s.done for s in group), sum(s.clips for s in group)
        table.add_row(state, str(len(group)), f"{done}/{clips}")
    console.print(table)
    typer.echo(",".join(str(s.index) for s in status if s.state != "finished"))


@app.command("filter")
def filter_(
    scores: Path = typer.Argument(
        ..., exists=True, help="Scores folder (or single-file table) from `score`."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Parquet table of the kept clips."),
    min_prob: float = typer.Option(
        0.5, help="Keep clips with prob_at_offset ≥ this (0.5 = the model's tipping point)."
    ),
    max_offscreen: float = typer.Option(
        0.2, help="Keep clips with offscreen_ratio ≤ this (above 0.2 someone else talks a lot)."
    ),
    max_abs_offset: int | None = typer.Option(None, help="Also drop clips with |offset| > this."),
    min_lse_c: float = typer.Option(
        3.0,
        help="SyncNet v2 rows (no probability): keep lse_c ≥ this (3 = LatentSync's bar, "
        "used with --max-abs-offset 6). Ignored for probability models.",
    ),
    max_lse_d: float | None = typer.Option(
        None, help="SyncNet v2 rows: also drop clips with lse_d > this."
    ),
    max_silence: float | None = typer.Option(
        None, help="Also drop clips with silence_ratio > this."
    ),
    drop_edge: bool = typer.Option(
        False,
        help="Also drop clips whose offset is at the search edge (true offset may be beyond).",
    ),
    rejected: Path | None = typer.Option(None, help="Also write the rejected rows, with reasons."),
    list_: bool = typer.Option(
        False, "--list", help="Print kept clip paths, one per line, on stdout."
    ),
    link_to: Path | None = typer.Option(None, help="Make a folder of symlinks to the kept clips."),
    relative_to: RelativeTo = typer.Option(
        RelativeTo.zero, "--offset-relative-to", "--relative-to", help=RELATIVE_TO_HELP
    ),
    reference_offset: int | None = typer.Option(None, help=REFERENCE_HELP),
    allow_synthetic_weights: bool = typer.Option(False, help=ALLOW_SYNTHETIC_HELP),
) -> None:
    """Keep the clips that are in sync enough; say why each other clip was rejected."""
    from synccurate.curate import filtering
    from synccurate.io.files import write_table

    try:
        table = filtering.load_scores(scores)
        refuse_synthetic_scores(table, scores, allow_synthetic_weights)
        reference, how = filtering.resolve_reference(table, relative_to.value, reference_offset)
        rules = filtering.FilterRules(
            min_prob=min_prob,
            max_offscreen=max_offscreen,
            max_abs_offset=max_abs_offset,
            max_silence=max_silence,
            drop_at_search_edge=drop_edge,
            reference_offset=reference,
            min_lse_c=min_lse_c,
            max_lse_d=max_lse_d,
        )
        for written in (output, rejected):
            if written and scores.is_dir() and written.resolve().is_relative_to(scores.resolve()):
                raise ValueError(f"{written}: inside the scores folder {scores}; write elsewhere")
        table = filtering.load_scores(scores)
        kept, dropped = filtering.apply_filter(table, rules)
        write_table(kept, output, protect=[scores])
        if rejected:
            write_table(dropped, rejected, protect=[scores, output])
    except (ValueError, OSError) as error:
        fail(str(error))
    filtering.render_summary(filtering.summarize(table, kept, dropped, rules), console)
    console.print(f"in sync = offset {reference:+d} ({how})", highlight=False)
    if link_to:
        report = filtering.link_to(kept, link_to, mirror_from=table)
        console.print(
            f"links in {link_to}: {report.created} created, {report.existing} already there, "
            f"{len(report.conflicts)} conflicts",
            highlight=False,
        )
        for conflict in report.conflicts:
            console.print(f"[yellow]conflict[/yellow] {conflict}", highlight=False)
    if list_:
        for path in filtering.kept_paths(kept):
            typer.echo(path)


@app.command()
def fix(
    source: Path = typer.Argument(
        ..., exists=True, help="A scores folder or table (.parquet) or one video."
    ),
    out_dir: Path | None = typer.Option(None, help="Folder for fixed clips (with a scores table)."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Output video (with one video)."
    ),
    offset: int | None = typer.Option(None, help="Offset in frames to repair (with one video)."),
    min_abs_offset: int = typer.Option(1, min=0, help="Clips with |offset| below this are copied."),
    only_kept: Path | None = typer.Option(None, help="Fix only the clips in this `filter` output."),
    link_unshifted: bool = typer.Option(False, help="Link instead of copying unshifted clips."),
    jobs: int = typer.Option(1, min=1, help="Clips encoded in parallel."),
    relative_to: RelativeTo = typer.Option(
        RelativeTo.zero, "--relative-to", "--offset-relative-to", help=RELATIVE_TO_HELP
    ),
    reference_offset: int | None = typer.Option(None, help=REFERENCE_HELP),
    allow_synthetic_weights: bool = typer.Option(False, help=ALLOW_SYNTHETIC_HELP),
) -> None:
    """Shift each clip's audio by its offset (positive offset → delay the audio) so it is in sync.

    The video stream is copied bit for bit; the audio is re-encoded in the source's codec
    family, shifted by an exact number of samples; the duration is kept. With a reference
    offset (--relative-to dataset, --reference-offset N) the shift is offset − reference.
    """
    from synccurate.curate import filtering
    from synccurate.curate import fix as fixing

    if not source.is_dir() and source.suffix.lower() != ".parquet":
        if offset is None or output is None:
            fail("fixing one video needs --offset N and -o OUT")
        if relative_to != RelativeTo.zero:
            fail("--relative-to dataset needs a scores table; give --reference-offset N")
        offset -= reference_offset or 0
        if output.exists():
            fail(f"{output}: already exists; choose another output")
        try:
            result = fixing.fix_clip(source, output, offset)
        except (fixing.MediaError, ValueError, OSError) as error:
            fail(str(error))
        console.print(
            f"{output}: audio shifted by {result['applied_shift_s'] * 1000:+.1f} ms "
            f"({result['applied_shift_samples']:+d} samples at {result['sample_rate']} Hz)",
            highlight=False,
        )
        return
    if out_dir is None:
        fail("fixing a scores table needs --out-dir DIR")
    if source.is_dir() and out_dir.resolve().is_relative_to(source.resolve()):
        fail(f"{out_dir}: inside the scores folder {source}; write elsewhere")
    try:
        scores = filtering.load_scores(source)
        refuse_synthetic_scores(scores, source, allow_synthetic_weights)
        kept = filtering.load_scores(only_kept) if only_kept else None
        reference, how = filtering.resolve_reference(scores, relative_to.value, reference_offset)
    except (ValueError, OSError) as error:
        fail(str(error))
    console.print(
        f"in sync = offset {reference:+d} ({how}): shift = offset − ({reference:+d})",
        highlight=False,
    )
    if kept is not None and filtering.REFERENCE_COLUMN in kept.columns:
        used = set(kept[filtering.REFERENCE_COLUMN].dropna().astype(int))
        if used - {reference}:
            console.print(
                f"[yellow]note:[/yellow] {only_kept} was filtered with offsets relative to "
                f"{', '.join(f'{u:+d}' for u in sorted(used))}, fixing relative to {reference:+d}",
                highlight=False,
            )
    bar = Progress(
        TextColumn("fixing"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} clips"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    with bar:
        task = bar.add_task("fix", total=len(scores))

        def advance(done: int, total: int, row: dict) -> None:
            bar.update(task, completed=done)
            if row["status"] not in fixing.DONE_STATUSES + ("skipped_not_ok", "skipped_not_kept"):
                bar.console.print(
                    f"[yellow]{row['status']}[/yellow] {row['error']}", highlight=False
                )

        try:
            log = fixing.fix_table(
                scores,
                out_dir,
                min_abs_offset=min_abs_offset,
                reference_offset=reference,
                only_kept=kept,
                link_unshifted=link_unshifted,
                jobs=jobs,
                progress=advance,
            )
        except ValueError as error:
            fail(str(error))
    counts = Table(title=f"fix → {out_dir} (log: {out_dir / fixing.LOG_NAME})")
    counts.add_column("status")
    counts.add_column("clips", justify="right")
    for status, count in log["status"].value_counts().items():
        counts.add_row(str(status), str(count))
    console.print(counts)


@app.command()
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
    workers: int = typer.Option(min(4, os.cpu_count() or 1), min=1),
) -> None:
    """Generate synthetic talking-face clips with exact ground truth (manifest.parquet)."""
    from synccurate.training import synth as synthesis

    try:
        manifest = synthesis.synth_dataset(
            out_dir,
            n=n,
            seconds=seconds,
            seed=seed,
            offset_frames=None if offset_range is not None else offset,
            offset_range=offset_range,
            offscreen_fraction=offscreen,
            offscreen_every=offscreen_every,
            silence_heavy=silence_every > 0,
            silence_every=silence_every,
            stutter=stutter_every > 0,
            stutter_every=stutter_every,
            size=size,
            partial_shift_frames=partial_shift,
            partial_shift_fraction=partial_fraction,
            workers=workers,
        )
    except (ValueError, OSError) as error:
        fail(str(error))
    console.print(f"wrote {len(manifest)} clips and {out_dir / synthesis.MANIFEST_NAME}")


TRAIN_INPUT_HELP = (
    "Training clips, all in sync: folders of videos, a folder written by `fix` (exactly the "
    "clips its log lists), or a scores / kept table (.parquet) from `score` / `filter` (its "
    "root + path columns, rows with status ok)."
)


@app.command()
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
    epochs: int = typer.Option(600, min=0, help="Epochs with DropBlock (paper: 600)."),
    tune_epochs: int = typer.Option(50, min=0, help="Drop-and-tune epochs, BN only (paper: 50)."),
    steps_per_epoch: int = typer.Option(0, min=0, help="0 = one pass over the training windows."),
    batch_size: int = typer.Option(256, min=2),
    lr: float = typer.Option(1e-4),
    tune_lr: float | None = typer.Option(
        None, help="Learning rate of the tune phase (default lr)."
    ),
    hard: int = typer.Option(15, min=0, help="Hard negatives per positive (N_h)."),
    easy: int = typer.Option(15, min=0, help="Easy negatives per positive (N_e)."),
    lam: float = typer.Option(0.1, min=0, max=1, help="Weight of the easy negatives (λ)."),
    run_length: int = typer.Option(
        8, min=1, help="Consecutive positives per clip in a batch (they share audio windows)."
    ),
    cosine: bool = typer.Option(False, help="Cosine learning-rate decay over the main phase."),
    val_fraction: float = typer.Option(0.05, min=0, max=0.5),
    face_detector: Detector = typer.Option(Detector.none, help="For the cache; none = face crops."),
    workers: int = typer.Option(0, min=0, help="Processes building the cache."),
    device: Device = typer.Option(Device.auto),
    seed: int = typer.Option(0),
    resume: bool = typer.Option(True, help="Continue from OUT_DIR/last.safetensors if present."),
    allow_synthetic_weights: bool = typer.Option(False, help=ALLOW_SYNTHETIC_HELP),
) -> None:
    """Train IC-SyncNet with the BBCE loss and drop-and-tune (SPEC §4).

    Multi-GPU / multi-node: `torchrun --nproc-per-node 8 -m synccurate train …` (the
    batch is split over the processes; rank 0 builds the cache while the others wait).
    The weights record what they were trained on (`trained_on` in their JSON: synthetic
    when every clip is a `synth` clip, else real).
    """
    from synccurate.models import icsyncnet as model_lib
    from synccurate.pipeline import batching
    from synccurate.training import cliplist
    from synccurate.training import train as training

    if config is not None and config not in model_lib.CONFIGS:
        fail(f"--config {config}: choose one of {', '.join(model_lib.CONFIGS)}")
    cache = cache or out_dir / "cache"
    settings = training.TrainSettings(
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
    rank0 = int(os.environ.get("RANK", "0")) == 0
    try:
        if init is not None:
            _, model_config = training.init_config(init, config)
        else:
            model_config = model_lib.CONFIGS[config or "small"]
        listed = cliplist.resolve(videos)
        for path, table in listed.tables:
            refuse_synthetic_scores(table, path, allow_synthetic_weights)
        _warn_offsets(listed)
        if rank0:
            added = training.build_cache(
                listed.refs,
                cache,
                model_config,
                detector=face_detector.value,
                workers=workers,
                log=console.print,
            )
            console.print(
                f"{len(listed.clips)} clips listed; cache {cache}: {added} clips added",
                highlight=False,
            )
        if epochs + tune_epochs == 0:
            return
        final = training.train(
            cache,
            out_dir,
            model_config if init is None else config,
            settings,
            device=batching.resolve_device(device.value),
            resume=resume,
            log=console.print,
            init=init,
            clips=listed.refs,
        )
    except (FileNotFoundError, ValueError, model_lib.WeightsError) as error:
        fail(str(error))
    if rank0:
        console.print(f"trained weights: {final} (use with --weights, or copy into weights/)")


def _warn_offsets(listed) -> None:
    """Clips a table says are out of sync teach a wrong pairing: say how many (fix them first)."""
    off = [c for c in listed.clips if c.offset is not None and abs(c.offset) > 1]
    if off:
        warn(
            f"WARNING: {len(off)} of {len(listed.clips)} listed clips have |offset| > 1 in their "
            f"table (e.g. {off[0].ref.path}: {off[0].offset:+d}); training takes every clip as in "
            "sync: run `synccurate fix` on them and train on its output folder"
        )


EVAL_SHIFTS_HELP = (
    "Evaluate every clip with its audio windows shifted by each of these frame counts "
    "(comma-separated; + = audio advanced, so the truth becomes truth + shift). Exact: done on "
    "the audio window index, nothing is re-encoded. Default: -8,-3,0,4,9 for clips and "
    "tables, 0 with --manifest. Shift 0 alone is the paper's protocol."
)


def _parse_shifts(text: str) -> tuple[int, ...]:
    try:
        shifts = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        fail(f"--shifts {text}: expected whole frame counts separated by commas, e.g. -8,-3,0,4,9")
    if not shifts or max(abs(s) for s in shifts) > 30:
        fail(f"--shifts {text}: give one or more shifts within ±30 frames")
    return shifts


@app.command("eval")
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
    from synccurate.pipeline import batching
    from synccurate.training import evaluate

    if not paths and manifest is None:
        fail("give test clips (folders or tables) or --manifest")
    if shifts is None:
        chosen = (0,) if manifest is not None else evaluate.REAL_CLIP_SHIFTS
    else:
        chosen = _parse_shifts(shifts)
    net = load_model_or_fail(model, weights)
    try:
        refs, offsets = evaluate.load_truth(paths or [], manifest)
        warned = synthetic_weights_warning(net, refs)
        if warned:
            warn(warned)
        results = evaluate.evaluate(
            net,
            refs,
            offsets,
            device=batching.resolve_device(device.value),
            detector=face_detector.value,
            batch_size=batch_size,
            workers=workers,
            shifts=chosen,
        )
    except (FileNotFoundError, ValueError, KeyError) as error:
        fail(str(error))
    by_shift = results["accuracy_by_shift"] if len(chosen) > 1 else {}
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
        console.print(f"[yellow]skipped[/yellow] {error}", highlight=False)
    if results["skipped_shifts"]:
        console.print(
            f"[yellow]{len(results['skipped_shifts'])} clip × shift pairs skipped[/yellow]: the "
            f"shifted truth lies beyond ±{results['max_offset']} "
            f"(e.g. {results['skipped_shifts'][0]})",
            highlight=False,
        )
    if results["synthetic_weights_on_real"]:
        from synccurate.models import provenance

        warn(
            provenance.warning_line(
                results["model"], results["non_synth_clips"], results["n_clips"], "clips evaluated"
            )
        )
    if output:
        evaluate.write_json_atomic(results, output)


@app.command()
def plot(
    clips: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="Video files."),
    out_dir: Path = typer.Option(Path("."), "-o", "--out-dir", help="PNG files go here."),
    model: ModelKind | None = typer.Option(None, help=MODEL_HELP),
    weights: Path | None = typer.Option(None, help=WEIGHTS_HELP),
    face_detector: Detector = typer.Option(Detector.auto),
    detect_every: int = typer.Option(4, min=1, help="As for `score` (same default)."),
    device: Device = typer.Option(Device.auto),
    max_offset: int = typer.Option(15, min=1, max=60),
) -> None:
    """Draw each clip's sync map (similarity over time × offset, offset profile, p_t timeline)."""
    from synccurate.curate.plot import plot_sync_map
    from synccurate.io import inputs
    from synccurate.models import provenance
    from synccurate.pipeline import batching, prepare
    from synccurate.pipeline import driver as scoring

    net = load_model_or_fail(model, weights)
    try:
        torch_device = batching.resolve_device(device.value)
    except ValueError as error:
        fail(str(error))
    refs = inputs.discover(clips)
    warned = synthetic_weights_warning(net, refs)
    if warned:
        warn(warned)
    net.to(torch_device)
    trained_on = provenance.of_model(net)["data"]
    for clip in prepare.prepare_clips(
        refs, net.recipe, face_detector.value, detect_every=detect_every
    ):
        if clip.status != "ok":
            console.print(f"[yellow]{clip.status}[/yellow] {clip.error}", highlight=False)
            continue
        # The same numbers as `score` writes: the speaker's face, the face mask applied.
        batch = scoring.default_batch_size(net, torch_device)
        (metrics,) = scoring.score_faces(net, [clip], batch, torch_device, max_offset)
        view = dict(clip.face_views())[metrics["face_track"]]
        (S,) = scoring.similarity_matrices(net, [view], batch, torch_device, max_offset)
        name = Path(clip.ref.path).with_suffix("").as_posix().replace("/", "__")
        target = out_dir / f"{name}.syncmap.png"
        title = f"{clip.ref.path} ({net.model_id})"
        meaningless = provenance.mismatch(trained_on, clip.synthetic)
        if meaningless:
            title += " — SYNTHETIC-ONLY WEIGHTS ON A REAL CLIP: MEANINGLESS"
        plot_sync_map(S.cpu().numpy(), metrics, title, target)
        note = " (synthetic-only weights: meaningless)" if meaningless else ""
        console.print(f"{target}: offset {metrics['offset_frames']:+d}{note}", highlight=False)
    if warned:
        warn(warned)


weights_app = typer.Typer(help="Convert and inspect model weights files.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")


@weights_app.command("import")
def weights_import(
    checkpoint: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="syncnet_v2.model or lipsync_expert.pth."
    ),
    out_dir: Path = typer.Option(..., "-o", "--out-dir", help="Folder for the converted files."),
) -> None:
    """Convert a PyTorch pickle checkpoint to safetensors + a JSON sidecar (kind, checksums,
    preprocessing). The pickle is read with the weights-only unpickler; a file that needs
    code to load is refused and nothing in it runs. Later loads never touch pickle."""
    from synccurate.models.checkpoints import import_checkpoint
    from synccurate.models.weights import WeightsError

    try:
        path = import_checkpoint(checkpoint, out_dir)
    except WeightsError as error:
        fail(str(error))
    typer.echo(str(path))  # the file to pass to --weights


@app.command()
def report(
    scores: Path = typer.Argument(
        ..., exists=True, help="Scores table (.parquet) or a folder of Parquet parts."
    ),
    output: Path = typer.Option(Path("report.html"), "-o", "--output", help="HTML file to write."),
    worst: int = typer.Option(10, min=0, help="Clips in each worst-clips list."),
    thumbnails: bool = typer.Option(
        True, help="Show each listed clip's middle frame (decodes those clips)."
    ),
) -> None:
    """Write one self-contained HTML page about a whole scores table: statuses and errors,
    metric histograms, kept share against the filter thresholds, and the worst clips."""
    from synccurate.curate import report as reporting

    try:
        summary = reporting.write_report(scores, output, worst=worst, with_thumbnails=thumbnails)
    except (FileNotFoundError, ValueError, OSError) as error:
        fail(str(error))
    kept = summary["thresholds"]
    console.print(
        f"{output}: {summary['n_clips']:,} clips, {summary['n_ok']:,} ok, "
        f"{kept['kept_at_defaults']:,} kept at the filter defaults "
        f"({output.stat().st_size / 1024:.0f} KiB)",
        highlight=False,
    )


@app.command()
def demo(
    folder: Path = typer.Argument(Path("example"), help="Where the example clips and table go."),
    weights: Path | None = typer.Option(None),
    device: Device = typer.Option(Device.auto),
) -> None:
    """Generate example clips with known shifts (and an off-screen speaker), score, compare."""
    from synccurate.training import demo as example

    truth = example.make_example_clips(folder)
    table_path = folder / "scores.parquet"
    score(
        paths=[folder / "clips"],
        output=table_path,
        model=None,
        weights=weights,
        face_detector=Detector.none,
        detect_every=1,
        device=device,
        batch_size=None,
        workers=0,
        max_offset=15,
        retry_failed=True,
        shard=None,
        executor=Executor.local,
        ray_address=None,
        manifest_path=None,
        part_seconds=60.0,
        progress=True,
        offset_method=OffsetMethod.mean,
    )
    from synccurate.store.readers import read_scores

    comparison = example.compare(read_scores(table_path), truth)
    table = Table(title="scores vs ground truth (offset: + = audio leads, in frames of 1/25 s)")
    for column in comparison.columns:
        table.add_column(column, justify="left" if column in ("clip", "status") else "right")
    for row in comparison.itertuples(index=False):
        table.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row))
    Console(width=None if sys.stdout.isatty() else 120).print(table)
