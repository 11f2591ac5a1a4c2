"""The curation commands: filter, fix, cut, plot, report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from synccurate.cli.common import (
    ALLOW_SYNTHETIC_HELP,
    DETECT_EVERY,
    MAX_OFFSET,
    MODEL_HELP,
    REFERENCE_HELP,
    RELATIVE_TO_HELP,
    WEIGHTS_HELP,
    Detector,
    Device,
    LibraryDefault,
    ModelKind,
    RelativeTo,
    console,
    fail,
    load_model_or_fail,
    say,
    warn,
)

if TYPE_CHECKING:
    from synccurate.curate.runs import TableFix


def filter_(
    scores: Path = typer.Argument(
        ..., exists=True, help="Scores folder (or single-file table) from `score`."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Parquet table of the kept clips."),
    min_prob: float = typer.Option(
        LibraryDefault("synccurate.curate.filtering:DEFAULT_MIN_PROB"),
        help="Keep clips with prob_at_offset ≥ this (0.5 = the model's tipping point).",
    ),
    max_offscreen: float = typer.Option(
        LibraryDefault("synccurate.curate.filtering:DEFAULT_MAX_OFFSCREEN"),
        help="Keep clips with offscreen_ratio ≤ this (above 0.2 someone else talks a lot).",
    ),
    max_abs_offset: int | None = typer.Option(None, help="Also drop clips with |offset| > this."),
    min_lse_c: float = typer.Option(
        LibraryDefault("synccurate.curate.filtering:DEFAULT_MIN_LSE_C"),
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
    max_drift_ms_per_min: float | None = typer.Option(
        None,
        min=0.0,
        help="Also drop clips whose offset drifts by more than this many ms a minute "
        "(drift_ms_per_min; clips too short to measure a drift pass).",
    ),
    max_offset_spread: int | None = typer.Option(
        None,
        min=0,
        help="Also drop clips whose confident stretches disagree by more than this many "
        "frames (offset_max - offset_min: drift or an edit).",
    ),
    min_face_px: float | None = typer.Option(
        None,
        min=0.0,
        help="Also drop clips whose speaker's face is smaller than this many source pixels "
        "high (face_px, median box height).",
    ),
    max_abs_yaw: float | None = typer.Option(
        None,
        min=0.0,
        help="Also drop clips whose speaker's head is turned more than this many degrees "
        "(|yaw_deg|; CenterFace rows only, others have no yaw and pass).",
    ),
    max_jitter: float | None = typer.Option(
        None,
        min=0.0,
        help="Also drop clips whose face box moves more than this many face heights a frame "
        "(track_jitter, median).",
    ),
    min_speech_ratio: float | None = typer.Option(
        None,
        min=0.0,
        max=1.0,
        help="Also drop clips with a voiced share of frames below this (speech_ratio).",
    ),
    max_frozen_ratio: float | None = typer.Option(
        None,
        min=0.0,
        max=1.0,
        help="Also drop clips in which more than this share of the face's frames repeat "
        "the previous one (frozen_ratio: stutter, a low frame rate made 25 fps).",
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
    from synccurate.curate import filtering, runs

    rules = filtering.FilterRules(
        min_prob=min_prob,
        max_offscreen=max_offscreen,
        max_abs_offset=max_abs_offset,
        max_silence=max_silence,
        drop_at_search_edge=drop_edge,
        min_lse_c=min_lse_c,
        max_lse_d=max_lse_d,
        max_drift_ms_per_min=max_drift_ms_per_min,
        max_offset_spread=max_offset_spread,
        min_face_px=min_face_px,
        max_abs_yaw=max_abs_yaw,
        max_jitter=max_jitter,
        min_speech_ratio=min_speech_ratio,
        max_frozen_ratio=max_frozen_ratio,
    )
    try:
        result = runs.filter_scores(
            scores,
            output,
            rules,
            rejected=rejected,
            relative_to=relative_to.value,
            reference_offset=reference_offset,
            allow_synthetic_weights=allow_synthetic_weights,
            warn=warn,
        )
    except (ValueError, OSError) as error:
        fail(str(error))
    table, kept, dropped, rules = result.table, result.kept, result.rejected, result.rules
    reference, how = rules.reference_offset, result.how
    filtering.render_summary(filtering.summarize(table, kept, dropped, rules), console)
    say(f"in sync = offset {reference:+d} ({how})")
    if link_to:
        report = filtering.link_to(kept, link_to, mirror_from=table)
        say(
            f"links in {link_to}: {len(report.created)} created, "
            f"{len(report.existing)} already there, "
            f"{len(report.conflicts)} conflicts"
        )
        for conflict in report.conflicts:
            console.print(f"[yellow]conflict[/yellow] {escape(str(conflict))}", highlight=False)
    if list_:
        for path in filtering.kept_paths(kept):
            typer.echo(path)


def fix(
    source: Path = typer.Argument(
        ..., exists=True, help="A scores folder or table (.parquet) or one video."
    ),
    out_dir: Path | None = typer.Option(None, help="Folder for fixed clips (with a scores table)."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Output video (with one video)."
    ),
    offset: int | None = typer.Option(None, help="Offset in frames to repair (with one video)."),
    min_abs_offset: int = typer.Option(
        LibraryDefault("synccurate.curate.fix:MIN_ABS_OFFSET"),
        min=0,
        help="Clips with |offset| below this are copied.",
    ),
    only_kept: Path | None = typer.Option(None, help="Fix only the clips in this `filter` output."),
    link_unshifted: bool = typer.Option(False, help="Link instead of copying unshifted clips."),
    jobs: int = typer.Option(
        LibraryDefault("synccurate.curate.fix:JOBS"),
        min=1,
        help="Clips encoded in parallel.",
    ),
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
    A clip whose offset drifts (drift_ms_per_min) is resampled along its offset line so
    start, middle and end are in sync; a clip whose offset steps (an edit) is skipped
    with its reason.
    """
    from synccurate.curate import runs

    if not source.is_dir() and source.suffix.lower() != ".parquet":
        _fix_one_video(source, output, offset, relative_to, reference_offset)
        return
    if out_dir is None:
        fail("fixing a scores table needs --out-dir DIR")
    try:
        table_fix = runs.open_fix(
            source,
            out_dir,
            only_kept=only_kept,
            relative_to=relative_to.value,
            reference_offset=reference_offset,
            allow_synthetic_weights=allow_synthetic_weights,
            warn=warn,
        )
    except (ValueError, OSError) as error:
        fail(str(error))
    _fix_with_progress(
        table_fix,
        only_kept,
        min_abs_offset=min_abs_offset,
        link_unshifted=link_unshifted,
        jobs=jobs,
    )


def _fix_one_video(
    source: Path,
    output: Path | None,
    offset: int | None,
    relative_to: RelativeTo,
    reference_offset: int | None,
) -> None:
    """One video: its audio shifted by the offset given, less the reference (`fix.fix_clip`)."""
    from synccurate.curate import fix as fixing

    if offset is None or output is None:
        fail("fixing one video needs --offset N and -o OUT")
    if relative_to != RelativeTo.zero:
        fail("--relative-to dataset needs a scores table; give --reference-offset N")
    if output.exists():
        fail(f"{output}: already exists; choose another output")
    try:
        result = fixing.fix_clip(source, output, offset - (reference_offset or 0))
    except (fixing.MediaError, ValueError, OSError) as error:
        fail(str(error))
    say(
        f"{output}: audio shifted by {result['applied_shift_s'] * 1000:+.1f} ms "
        f"({result['applied_shift_samples']:+d} samples at {result['sample_rate']} Hz)"
    )


def _fix_with_progress(
    table_fix: TableFix,
    only_kept: Path | None,
    *,
    min_abs_offset: int,
    link_unshifted: bool,
    jobs: int,
) -> None:
    """Fix a table's clips with a progress bar, each problem clip as it comes, then the counts."""
    from synccurate.curate import fix as fixing
    from synccurate.curate.runs import QUIET_STATUSES

    reference = table_fix.reference
    console.print(
        f"in sync = offset {reference:+d} ({table_fix.how}): shift = offset − ({reference:+d})",
        highlight=False,
    )
    used = table_fix.other_references()
    if used:
        console.print(
            f"[yellow]note:[/yellow] {escape(str(only_kept))} was filtered with offsets "
            f"relative to {', '.join(f'{u:+d}' for u in used)}, fixing relative to {reference:+d}",
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
        task = bar.add_task("fix", total=len(table_fix.scores))

        def advance(done: int, total: int, row: dict) -> None:
            bar.update(task, completed=done)
            if row["status"] not in QUIET_STATUSES:
                bar.console.print(
                    f"[yellow]{row['status']}[/yellow] {escape(str(row['error']))}", highlight=False
                )

        try:
            log = table_fix.run(
                min_abs_offset=min_abs_offset,
                link_unshifted=link_unshifted,
                jobs=jobs,
                progress=advance,
            )
        except ValueError as error:
            fail(str(error))
    out_dir = table_fix.out_dir
    counts = Table(title=escape(f"fix → {out_dir} (log: {out_dir / fixing.LOG_NAME})"))
    counts.add_column("status")
    counts.add_column("clips", justify="right")
    for status, count in log["status"].value_counts().items():
        counts.add_row(str(status), str(count))
    console.print(counts)


def cut(
    segments: Path = typer.Argument(
        ..., exists=True, help="Segments folder (or table) of speaker segments."
    ),
    out_dir: Path = typer.Option(..., "--out-dir", help="Folder for the segment clips."),
    only_kept: Path | None = typer.Option(
        None, help="Cut only the segments in this `filter` output of the segments table."
    ),
) -> None:
    """Write each speaker segment as a clip, its audio shifted by the segment's offset.

    The audio is shifted exactly as `fix` shifts it; the video stream is copied when the
    segment starts on a keyframe and re-encoded otherwise. Resumable: a rerun skips the
    segments already cut (log: OUT_DIR/cuts.parquet); one bad segment never stops the batch.
    """
    from synccurate.curate import runs
    from synccurate.curate.cut import CUT_LOG_NAME, DONE_STATUS

    def report_problem(done: int, total: int, row: dict) -> None:
        if row["status"] not in (DONE_STATUS, "skipped_not_kept"):
            console.print(f"[yellow]{row['status']}[/yellow] {escape(str(row['error']))}")

    try:
        log = runs.cut_segments(segments, out_dir, only_kept=only_kept, progress=report_problem)
    except (ValueError, OSError) as error:
        fail(str(error))
    counts = Table(title=escape(f"cut → {out_dir} (log: {out_dir / CUT_LOG_NAME})"))
    for column in ("status", "video", "segments"):
        counts.add_column(column, justify="right" if column == "segments" else "left")
    for (status, video), count in log.groupby(["status", "video"], dropna=False).size().items():
        counts.add_row(str(status), video if isinstance(video, str) else "", str(count))
    console.print(counts)


def plot(
    clips: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="Video files."),
    out_dir: Path = typer.Option(Path("."), "-o", "--out-dir", help="PNG files go here."),
    model: ModelKind | None = typer.Option(None, help=MODEL_HELP),
    weights: Path | None = typer.Option(None, help=WEIGHTS_HELP),
    face_detector: Detector = typer.Option(Detector.auto),
    detect_every: int = typer.Option(DETECT_EVERY, min=1, help="As for `score` (same default)."),
    device: Device = typer.Option(Device.auto),
    max_offset: int = typer.Option(MAX_OFFSET, min=1, max=60),
) -> None:
    """Draw each clip's sync map (similarity over time × offset, offset profile, p_t timeline)."""
    from synccurate.curate.sync_maps import draw_sync_maps
    from synccurate.io import inputs
    from synccurate.pipeline import batching
    from synccurate.pipeline.run import synthetic_weights_warning

    net = load_model_or_fail(model, weights)
    try:
        torch_device = batching.resolve_device(device.value)
    except ValueError as error:
        fail(str(error))
    refs = inputs.discover(clips)
    warned = synthetic_weights_warning(net, refs)
    if warned:
        warn(warned)
    for drawn in draw_sync_maps(
        net,
        refs,
        out_dir,
        device=torch_device,
        detector=face_detector.value,
        detect_every=detect_every,
        max_offset=max_offset,
    ):
        if drawn.target is None:
            console.print(f"[yellow]{drawn.status}[/yellow] {escape(drawn.error)}", highlight=False)
            continue
        note = " (synthetic-only weights: meaningless)" if drawn.meaningless else ""
        say(f"{drawn.target}: offset {drawn.offset_frames:+d}{note}")
    if warned:
        warn(warned)


def report(
    scores: Path = typer.Argument(
        ..., exists=True, help="Scores table (.parquet) or a folder of Parquet parts."
    ),
    output: Path = typer.Option(Path("report.html"), "-o", "--output", help="HTML file to write."),
    worst: int = typer.Option(10, min=0, help="Clips in each worst-clips list."),
    thumbnails: bool = typer.Option(
        True, help="Show each listed clip's middle frame (decodes those clips)."
    ),
    reference: Path | None = typer.Option(
        None,
        exists=True,
        help="Another scores table to compare with (the real clips of generated ones, or "
        "another run): per-model means side by side, per-clip differences (this − reference) "
        "for the clips in both, matched by their relative path.",
    ),
) -> None:
    """Write one self-contained HTML page about a whole scores table: statuses and errors,
    per-model means, metric histograms, drift, kept share against the filter thresholds,
    and the worst clips; with --reference, compared with another table."""
    from synccurate.curate import report as reporting

    try:
        summary = reporting.write_report(
            scores, output, worst=worst, with_thumbnails=thumbnails, reference=reference
        )
    except (FileNotFoundError, ValueError, OSError) as error:
        fail(str(error))
    size = f"({output.stat().st_size / 1024:.0f} KiB)"
    if summary.get("kind") == "segments":  # its counts are segments: the lines below say so
        console.print(f"{output}: a segments report {size}", highlight=False)
    else:
        kept = summary["thresholds"]
        console.print(
            f"{output}: {summary['n_clips']:,} clips, {summary['n_ok']:,} ok, "
            f"{kept['kept_at_defaults']:,} kept at the filter defaults {size}",
            highlight=False,
        )
    for line in reporting.console_lines(summary):
        console.print(line, highlight=False, markup=False)
