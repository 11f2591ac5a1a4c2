"""A recording cut off mid-stream (a copy that stopped, a disk that filled up) is scored as far
as it goes and says where it broke, instead of passing for a shorter clip that is "ok".

The files are real truncations: a synthetic clip remuxed with its index at the start (MP4 with
`+faststart`, and MKV), then cut at half of its bytes. Their headers still declare the whole
duration; frames decode up to the cut, then ffmpeg reports "partial file" (MP4) or "File ended
prematurely" (MKV) and exits 0, so the break is only visible by comparing what decoded with
what the container declares.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import av
import pytest
from scoring_cli import run_score

from synccurate.io import media
from synccurate.io.audio import VIDEO_FPS
from synccurate.store.readers import read_scores, read_timeline
from synccurate.training import synth

CLIP_SECONDS = 50.0  # long enough for several stretches on each side of the cut
TRUE_OFFSET_FRAMES = 3  # the stretches before the cut must find it
SEGMENT_SECONDS = 5.0  # timeline stretch length: about five stretches before the cut
KEPT_BYTES_FRACTION = 0.5  # the copy keeps this share of the file's bytes
TRUNCATED_STATUS = "truncated"
# Where the cut lands in time depends on the bytes per second around it; half of the bytes of
# a steady synthetic clip is close to half of its duration.
BREAK_FRACTION_RANGE = (0.35, 0.65)
BREAK_TOLERANCE_S = 1.0  # how close a reported break time must be to the measured one
REMUX_OPTIONS = {"mp4": ["-movflags", "+faststart"], "mkv": []}


def file_state(path: Path) -> tuple[str, int, int]:
    """Content hash, size and modification time: what "the input is untouched" means."""
    stat = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), stat.st_size, stat.st_mtime_ns


def last_video_packet_end_s(path: Path) -> float:
    """Where the video stream really ends: the end of its last demuxed packet, in seconds.

    Independent of how `score` decodes; the frames it scores must reach about this far.
    """
    end = 0.0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.pts is not None:
                end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    return end


def numbers_in(text: str) -> list[float]:
    return [float(number) for number in re.findall(r"\d+(?:\.\d+)?", text)]


@pytest.fixture(scope="module")
def source_clip(tmp_path_factory) -> Path:
    """One synthetic pre-cropped clip, written once for every container."""
    path = tmp_path_factory.mktemp("source") / "talk.mp4"
    synth.synth_clip(path, seconds=CLIP_SECONDS, seed=11, offset_frames=TRUE_OFFSET_FRAMES)
    return path


def remuxed(source: Path, container: str, folder: Path) -> Path:
    """The clip in `container`, index at the front, streams copied bit for bit."""
    path = folder / f"whole.{container}"
    media.run_ffmpeg(
        ["-y", "-i", str(source), "-c", "copy", *REMUX_OPTIONS[container], str(path)],
        what=f"remux to {container}",
    )
    return path


def truncated_copy(whole: Path, folder: Path) -> Path:
    """The first KEPT_BYTES_FRACTION of `whole`'s bytes, under the same extension."""
    data = whole.read_bytes()
    path = folder / f"cut{whole.suffix}"
    path.write_bytes(data[: int(len(data) * KEPT_BYTES_FRACTION)])
    return path


@pytest.fixture(params=sorted(REMUX_OPTIONS))
def truncated(request, source_clip: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "clips"
    folder.mkdir()
    whole = remuxed(source_clip, request.param, tmp_path)
    return truncated_copy(whole, folder)


def test_truncated_file_is_scored_up_to_the_break_and_says_where(
    truncated: Path, tmp_path: Path
) -> None:
    before = file_state(truncated)
    folder_before = sorted(truncated.parent.iterdir())
    declared_s = media.probe(truncated).duration_s  # the header still declares it all
    break_s = last_video_packet_end_s(truncated)
    assert BREAK_FRACTION_RANGE[0] * declared_s < break_s < BREAK_FRACTION_RANGE[1] * declared_s

    scores, timeline = tmp_path / "scores", tmp_path / "timeline"
    result = run_score(
        truncated,
        scores,
        "--timeline",
        str(timeline),
        "--segment-seconds",
        str(SEGMENT_SECONDS),
    )
    assert result.exit_code == 0, result.output
    assert file_state(truncated) == before, "scoring must never modify its input"
    assert sorted(truncated.parent.iterdir()) == folder_before, "nor write next to it"

    row = read_scores(scores).set_index("path").loc[truncated.name]
    # The frames decoded before the break were scored, not dropped with the file.
    assert row["n_frames"] == pytest.approx(break_s * VIDEO_FPS, abs=BREAK_TOLERANCE_S * VIDEO_FPS)

    # Not passed off as a shorter, healthy clip: the status says it broke, the error says where
    # (the second or the frame it stopped at) against what the container declared.
    assert row["status"] == TRUNCATED_STATUS, (row["status"], row["error"])
    error = str(row["error"]).replace(str(truncated), "")
    mentioned = numbers_in(error)
    says_where = [
        abs(n - break_s) <= BREAK_TOLERANCE_S
        or abs(n - break_s * VIDEO_FPS) <= BREAK_TOLERANCE_S * VIDEO_FPS
        for n in mentioned
    ]
    assert any(says_where), error
    assert any(abs(n - declared_s) <= BREAK_TOLERANCE_S for n in mentioned), error

    # The stretches before the break are in the timeline, and they are real scores.
    stretches = read_timeline(timeline)
    stretches = stretches[(stretches["path"] == truncated.name) & stretches["stretch"].notna()]
    assert len(stretches) >= int(break_s // SEGMENT_SECONDS) - 1, stretches
    assert stretches["start_s"].min() == pytest.approx(0.0, abs=SEGMENT_SECONDS)
    assert stretches["end_s"].max() <= break_s + BREAK_TOLERANCE_S
    assert stretches["end_s"].max() >= break_s - 2 * SEGMENT_SECONDS
    assert stretches["offset_frames"].median() == TRUE_OFFSET_FRAMES


def test_whole_remuxed_file_is_ok(source_clip: Path, tmp_path: Path) -> None:
    """The control: the same containers uncut are healthy clips (no false "truncated")."""
    folder = tmp_path / "clips"
    folder.mkdir()
    wholes = [remuxed(source_clip, container, folder) for container in sorted(REMUX_OPTIONS)]
    result = run_score(folder, tmp_path / "scores")
    assert result.exit_code == 0, result.output
    rows = read_scores(tmp_path / "scores").set_index("path")
    for whole in wholes:
        row = rows.loc[whole.name]
        assert row["status"] == "ok", (whole.name, row["error"])
        assert row["n_frames"] == round(CLIP_SECONDS * VIDEO_FPS)
