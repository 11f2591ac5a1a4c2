"""The scoring commands: score, compact, manifest, shards."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from synccurate.cli.common import (
    DETECT_EVERY,
    MAX_OFFSET,
    MODEL_HELP,
    WEIGHTS_HELP,
    Detector,
    Device,
    Executor,
    LibraryDefault,
    ModelKind,
    OffsetMethod,
    Precision,
    ShotDetectorName,
    console,
    fail,
    load_model_or_fail,
    say,
    terminated_as_exit,
    warn,
)

if TYPE_CHECKING:
    from synccurate.models.base import SyncModel
    from synccurate.pipeline.driver import RunStats
    from synccurate.pipeline.run import ScoreOptions

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
        DETECT_EVERY,
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
    workers: str = typer.Option(
        "auto",
        metavar="<auto|int>",
        help="Processes decoding and cropping (0 = in-process). auto: none for pre-cropped "
        "clips (--face-detector none) or fewer than 16 clips, else one per CPU, at most 4. "
        "With --executor ray and no --ray-address, the CPUs of the Ray instance started for the "
        "run (auto or 0 = all cores).",
    ),
    max_offset: int = typer.Option(MAX_OFFSET, min=1, max=60, help="Search ±this many frames."),
    retry_failed: bool = typer.Option(False, help="Score again the clips whose status is not ok."),
    shard: str | None = typer.Option(
        None,
        help="Score only shard K of N, as K/N (0-based), for parallel jobs; all shards may "
        "write into the same -o folder (`synccurate shards` shows which are unfinished).",
    ),
    executor: Executor = typer.Option(
        Executor.local,
        help="Where clips are scored: here (decoding and cropping in local processes), or "
        "whole by model actors on a Ray cluster (pip install 'synccurate[ray]'; docs/cluster.md).",
    ),
    ray_address: str | None = typer.Option(
        None, help="Ray cluster to join (default: start a local one); with --executor ray."
    ),
    model_actors: int | None = typer.Option(
        None,
        min=1,
        help="With --executor ray: Ray actors that hold the model and score whole clips into "
        "-o (default: one per GPU of the cluster, else 1; on CPU each takes one core).",
    ),
    part_seconds: float = typer.Option(
        LibraryDefault("synccurate.store.parts:SECONDS_PER_PART"),
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
    timeline: Path | None = typer.Option(
        None,
        help="Also write each clip's offset over time here: a folder of Parquet parts, one "
        "row per clip and stretch (offset, vote share, probability or LSE-C, on-screen), "
        "resumed like -o.",
    ),
    segment_seconds: float = typer.Option(
        LibraryDefault("synccurate.pipeline.timeline:SEGMENT_SECONDS"),
        min=1.0,
        help="Length of one stretch of the offset over time (the timeline and the drift_* / "
        "offset_* columns).",
    ),
    chunk_seconds: float = typer.Option(
        LibraryDefault("synccurate.pipeline.prepare:CHUNK_SECONDS"),
        min=2.0,
        help="A clip longer than this is decoded, cropped and embedded this many seconds at a "
        "time, so memory stays flat however long it is (the numbers are the same).",
    ),
    segments: Path | None = typer.Option(
        None,
        help="Also write each clip's speaker segments here: a folder of Parquet parts, one "
        "row per stretch of one shot where one face speaks in sync (its own offset, "
        "why it ended), resumed like -o; `synccurate cut` makes clips of them "
        "(docs/segments.md).",
    ),
    max_gap_seconds: float = typer.Option(
        LibraryDefault("synccurate.pipeline.segments:MAX_GAP_SECONDS"),
        min=0.0,
        help="Pauses in a speaker's in-sync evidence up to this long stay in one segment.",
    ),
    min_segment_seconds: float = typer.Option(
        LibraryDefault("synccurate.pipeline.segments:MIN_SEGMENT_SECONDS"),
        min=0.2,
        help="Shorter speaker segments are left out.",
    ),
    max_segment_seconds: float = typer.Option(
        LibraryDefault("synccurate.pipeline.segments:MAX_SEGMENT_SECONDS"),
        min=1.0,
        help="Longer speaker segments are split.",
    ),
    segment_threshold: float | None = typer.Option(
        None,
        help="Window evidence of a speaking face: p_t for probability models (default 0.5), "
        "the frame-wise confidence for SyncNet v2 (default 3).",
    ),
    shot_detector: ShotDetectorName = typer.Option(
        ShotDetectorName.auto,
        help="How shot cuts are found on the face detection's frames (PySceneDetect); no "
        "face track crosses a cut. auto: content with --segments, else none (n_shots null).",
    ),
    shot_threshold: float | None = typer.Option(
        None, help="The shot detector's threshold, in its own units (default: its own)."
    ),
    precision: Precision = typer.Option(
        Precision.auto,
        help="The encoders' arithmetic. auto: fp16 autocast on CUDA, fp32 on CPU (upstream's "
        "numbers). bf16: 1.5-2.4x faster on CPU; offsets and LSE-C differences in "
        "docs/models.md.",
    ),
) -> None:
    from synccurate.pipeline.run import ScoreOptions
    from synccurate.pipeline.segments import SegmentOptions

    if not paths and manifest_path is None:
        fail("give folders or video files to score, or --manifest")
    net = load_model_or_fail(model, weights)
    if workers != "auto" and not (workers.isdigit()):
        fail(f"--workers: auto or a whole number >= 0, not {workers!r}")
    options = ScoreOptions(
        output,
        paths=paths or (),
        manifest=manifest_path,
        shard=shard,
        retry_failed=retry_failed,
        seconds_per_part=part_seconds,
        device=device.value,
        executor=executor.value,
        workers=None if workers == "auto" else int(workers),
        ray_address=ray_address,
        model_actors=model_actors,
        model_kind=model.value if model else None,
        weights=weights,
        detector=face_detector.value,
        detect_every=detect_every,
        batch_size=batch_size,
        max_offset=max_offset,
        offset_method=offset_method.value,
        timeline=timeline,
        segment_seconds=segment_seconds,
        chunk_seconds=chunk_seconds,
        segments=segments,
        segment_options=SegmentOptions(
            segment_threshold, max_gap_seconds, min_segment_seconds, max_segment_seconds
        ),
        shot_detector=None if shot_detector.value == "none" else shot_detector.value,
        shot_threshold=shot_threshold,
        precision=precision.value,
    )
    score_with_progress(net, options, progress)


def score_with_progress(net: SyncModel, options: ScoreOptions, progress: bool = True) -> None:
    """Score with a progress bar, each problem clip as it comes, and a summary at the end."""
    from synccurate.pipeline.run import open_run

    try:
        run = open_run(net, options)
    except (FileNotFoundError, ValueError, ImportError) as error:
        fail(str(error))
    found, todo = len(run.refs), len(run.todo)
    say(
        f"{found} clips found, {found - todo} already scored, {todo} to score "
        f"with {net.model_id} on {run.device}"
    )
    if run.warning:
        warn(run.warning)
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

    def advance(row: dict, stats: RunStats) -> None:
        wall = max(stats.wall, 1e-6)
        rate = f"{stats.clips / wall:.2f} clips/s, {stats.video_seconds / wall:.1f} s video/s"
        bar.update(task, advance=1, rate=rate)
        if row["status"] != "ok":
            error = escape(str(row["error"]))
            bar.console.print(f"[yellow]{row['status']}[/yellow] {error}", highlight=False)

    with terminated_as_exit(), bar:
        task = bar.add_task("score", total=todo, rate="")
        stats = run.score(on_clip=advance, on_warning=warn)
    _print_score_summary(stats, options.output)
    for note in stats.notes:
        warn(note)
    closing = run.closing_warning(stats)
    if closing:
        warn(closing)


def _print_score_summary(stats: RunStats, output: Path) -> None:
    """Clips per status, video seconds scored and where the time went."""
    summary = Table(title=escape(f"scored {stats.clips} clips in {stats.wall:.1f} s → {output}"))
    summary.add_column("status")
    summary.add_column("clips", justify="right")
    for status, count in stats.statuses.most_common():
        summary.add_row(status, str(count))
    wall = max(stats.wall, 1e-6)
    summary.add_row(
        "video scored", f"{stats.video_seconds:.1f} s ({stats.video_seconds / wall:.1f} s/s)"
    )
    for stage in ("audio", "faces", "decode", "model"):  # decode: long clips' chunks
        if stats.seconds[stage]:
            summary.add_row(f"time in {stage}", f"{stats.seconds[stage]:.1f} s")
    console.print(summary)


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
    say(f"{folder}: {parts} parts → {target.name if target else 'none'} ({rows} rows)")


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
    say(f"{output}: {len(table)} clips")


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
    table = Table(title=escape(f"{folder}: {len(status)} shards"))
    for column in ("state", "shards", "clips with a row"):
        table.add_column(column, justify="left" if column == "state" else "right")
    for state in ("finished", "unfinished", "missing"):
        group = [s for s in status if s.state == state]
        done, clips = sum(s.done for s in group), sum(s.clips for s in group)
        table.add_row(state, str(len(group)), f"{done}/{clips}")
    console.print(table)
    typer.echo(",".join(str(s.index) for s in status if s.state != "finished"))
