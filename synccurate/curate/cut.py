"""`synccurate cut`: each speaker segment (a segments table) written as a clip of its own,
its audio shifted by the segment's offset so that the clip is in sync.

The audio is made by `fix`'s own code: the source's samples on the video timeline
(`fix.decode_timeline`), delayed by exactly round(offset / 25 × rate) samples (`fix._shift`,
+ = the audio leads, SPEC §6), then the segment's [start_s, end_s) of that, encoded in the
source's codec family and verified against what was intended (`fix._encode_until_aligned`).
The video stream is copied when the segment starts on a keyframe (within half a frame) and
re-encoded otherwise (a copy must start at a keyframe); the log says which.

Resumable like `fix`: the log (out_dir/cuts.parquet) is written atomically after every
segment; a rerun skips segments the log records as cut with the same source, span and
offset whose output still exists. Outputs are written to a temporary name and renamed;
sources are only read. One bad segment becomes a log row with its status and a one-line
reason naming the file; the batch goes on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import av
import numpy as np
import pandas as pd

from synccurate.curate import fix
from synccurate.curate.filtering import clip_path, mirror_paths
from synccurate.io.audio import VIDEO_FPS
from synccurate.io.files import write_table
from synccurate.io.media import MediaError

CUT_LOG_NAME = "cuts.parquet"
KEY_COLUMNS = ("root", "path", "segment")  # a segment of the segments table
DONE_STATUS = "cut"
KEYFRAME_TOLERANCE_S = 0.5 / VIDEO_FPS  # a start this close to a keyframe is on it (20 ms)
# Video of a segment that does not start on a keyframe: H.264 at a visually lossless
# quality (CRF 18), the fast preset (the encode is a small part of the work).
REENCODE_VIDEO = ("-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p")
LOG_COLUMNS = {
    "root": "string",
    "path": "string",
    "segment": "Int64",
    "input": "string",
    "start_s": "float64",
    "end_s": "float64",
    "offset_frames": "Int64",  # the shift applied: the audio delayed by this / 25 s
    "applied_shift_samples": "Int64",
    "output": "string",
    "video": "string",  # "copied" (the stream, bit for bit) or "reencoded"
    "check_lag_samples": "Int64",
    "status": "string",  # "cut", or why not: missing_input, no_audio, encode_error, …
    "error": "string",
    "reused": "boolean",
}


def keyframe_times(path: Path, video_start_s: float) -> np.ndarray:
    """Presentation times of the video's keyframes, seconds after its first frame."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [
            float(packet.pts * packet.time_base) - video_start_s
            for packet in container.demux(stream)
            if packet.is_keyframe and packet.pts is not None
        ]
    return np.array(sorted(times))


def cut_segment(
    src: str | Path, dst: str | Path, start_s: float, end_s: float, offset_frames: int
) -> dict:
    """Write `dst`: the source's [start_s, end_s) (seconds after its first video frame) with
    its audio delayed by offset_frames / 25 s, as `fix_clip` shifts it.

    Returns {applied_shift_samples, video: "copied" | "reencoded", check_lag_samples}.
    Raises FixError / MediaError (.status: missing_input, no_video, no_audio, refused,
    decode_error, encode_error) on failure.
    """
    src, dst = Path(src), Path(dst)
    if not 0 <= start_s < end_s:
        raise fix.FixError("refused", f"{src}: segment {start_s}–{end_s} s is empty")
    info = fix._check_fixable(src, dst)
    source, rate = fix.decode_timeline(src, info)
    shift, shifted, _ = fix._shift(source, rate, int(offset_frames), None)
    piece = shifted[round(start_s * rate) : round(end_s * rate)]
    if not len(piece):
        raise fix.FixError("no_audio", f"{src}: no audio between {start_s} and {end_s} s")
    timing = fix._timing(src, info)
    keyframes = keyframe_times(src, timing.video_from_file_start_s)
    on_keyframe = bool(len(keyframes)) and np.abs(keyframes - start_s).min() <= KEYFRAME_TOLERANCE_S
    plan = fix.plan_audio_codec(info)
    channels = int(info.audio_channels)
    encode_args = [
        *("-y", "-ss", f"{timing.video_from_file_start_s + start_s:.6f}"),
        *("-i", fix.ffmpeg_path_arg(src), *fix._raw_input(rate, channels)),
        *("-map", "0:v:0", "-map", "1:a:0", "-map_metadata", "0"),
        *(("-c:v", "copy") if on_keyframe else REENCODE_VIDEO),
        *("-c:a", plan.encoder, *plan.options, "-ar", str(rate), "-ac", str(channels)),
        # frames, not -t: a copied stream cut by time keeps the B-frames past the end
        *("-frames:v", str(max(1, round((end_s - start_s) * (info.source_fps or VIDEO_FPS))))),
    ]
    dst.parent.mkdir(parents=True, exist_ok=True)
    temp = fix._temp_beside(dst)
    try:
        _, check = fix._encode_until_aligned(encode_args, piece, temp, dst.name, verify=True)
        fix._publish(temp, dst)
    finally:
        temp.unlink(missing_ok=True)
    return {
        "applied_shift_samples": int(shift),
        "video": "copied" if on_keyframe else "reencoded",
        "check_lag_samples": check,
    }


def output_names(segments: pd.DataFrame) -> list[str]:
    """Each segment's clip inside the output folder: the source's mirrored path (as `fix`
    lays clips out) with "-segNNN" before its extension."""
    names = []
    for mirrored, segment in zip(mirror_paths(segments), segments["segment"], strict=True):
        clip = PurePosixPath(mirrored)
        names.append(str(clip.with_name(f"{clip.stem}-seg{int(segment):03d}{clip.suffix}")))
    return names


def _text(value) -> str | None:
    return None if value is None or pd.isna(value) else str(value)


def _read_log(path: Path) -> dict[str, dict]:
    """The previous log's rows by output, or nothing when there is none (or it is damaged)."""
    try:
        previous = pd.read_parquet(path) if path.is_file() else None
    except Exception:  # a damaged log means redoing the work, not failing
        previous = None
    if previous is None:
        return {}
    return {str(row["output"]): row for row in previous.to_dict("records") if _text(row["output"])}


def _reusable(before: dict | None, row: dict) -> bool:
    """The previous log cut this same segment (source, span, offset) and its output is there."""
    return (
        before is not None
        and before.get("status") == DONE_STATUS
        and before.get("input") == row["input"]
        and math.isclose(before["start_s"], row["start_s"], abs_tol=1e-9)
        and math.isclose(before["end_s"], row["end_s"], abs_tol=1e-9)
        and int(before["offset_frames"]) == row["offset_frames"]
        and Path(row["output"]).is_file()
    )


def _kept_keys(only_kept: pd.DataFrame | None) -> set[tuple[str, str, int]] | None:
    if only_kept is None:
        return None
    columns = [only_kept[name] for name in KEY_COLUMNS]
    return {(str(r), str(p), int(s)) for r, p, s in zip(*columns, strict=True)}


def _log_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(LOG_COLUMNS)).astype(LOG_COLUMNS)


def _failure(error: Exception) -> dict:
    """A log row's status and one-line reason for a segment that could not be cut."""
    if isinstance(error, MediaError):
        return {"status": error.status, "error": (str(error).splitlines() or [error.status])[0]}
    return {"status": "error", "error": f"{type(error).__name__}: {error}".splitlines()[0]}


def cut_table(
    segments: pd.DataFrame,
    out_dir: str | Path,
    *,
    only_kept: pd.DataFrame | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
) -> pd.DataFrame:
    """Cut every ok segment of a segments table into `out_dir`; write and return the log.

    Per row of `segments` (key root, path, segment): a clip out_dir/<mirrored
    path>-segNNN.<ext> (`output_names`) with the audio shifted by the segment's
    offset_frames (`cut_segment`), or a log row saying why not (skipped_not_ok,
    skipped_not_kept when `only_kept`, a filter output of the table, lacks it; the
    failure's status). Rows without a segment (clips that could not be scored) are left
    out. See the module docstring for resuming; `progress(done, total, row)` after each.
    """
    out_dir = fix._check_out_dir(segments, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / CUT_LOG_NAME
    previous = _read_log(log_path)
    segments = segments[segments["segment"].notna()]
    wanted = _kept_keys(only_kept)
    names = output_names(segments)
    rows: list[dict] = []
    for i, (record, name) in enumerate(zip(segments.to_dict("records"), names, strict=True)):
        rows.append(_cut_one(record, out_dir / name, wanted, previous))
        write_table(_log_frame(rows), log_path)  # after every segment: a rerun skips it
        if progress is not None:
            progress(i + 1, len(segments), rows[-1])
    log = _log_frame(rows)
    write_table(log, log_path)
    return log


def _cut_one(record: dict, target: Path, wanted: set | None, previous: dict[str, dict]) -> dict:
    """The log row of one segment: reused, skipped, cut, or failed."""
    source = clip_path(_text(record.get("root")), str(record["path"]))
    offset = record.get("offset_frames")
    row = dict.fromkeys(LOG_COLUMNS) | {
        "root": _text(record.get("root")),
        "path": str(record["path"]),
        "segment": int(record["segment"]),
        "input": str(source),
        "start_s": float(record["start_s"]),
        "end_s": float(record["end_s"]),
        "offset_frames": None if pd.isna(offset) else int(offset),
        "output": str(target),
        "reused": False,
    }
    key = (str(row["root"]), row["path"], row["segment"])
    if wanted is not None and key not in wanted:
        return row | {"status": "skipped_not_kept", "output": None}
    if _text(record.get("status")) != "ok" or row["offset_frames"] is None:
        reason = f"{source}: segment {row['segment']} has no offset"
        return row | {"status": "skipped_not_ok", "error": reason, "output": None}
    before = previous.get(str(target))
    if _reusable(before, row):
        return {name: before.get(name) for name in LOG_COLUMNS} | {"reused": True}
    try:
        made = cut_segment(source, target, row["start_s"], row["end_s"], row["offset_frames"])
    except Exception as error:  # one segment never stops the batch
        return row | _failure(error) | {"output": None}
    return row | made | {"status": DONE_STATUS}


__all__ = ["CUT_LOG_NAME", "LOG_COLUMNS", "cut_segment", "cut_table", "output_names"]
