"""`synccurate cut` on a self-made clip with a hand-written segments table: durations, the
audio shift measured against the source, copy vs re-encode, resuming, untouched sources."""

from __future__ import annotations

from pathlib import Path

import av
import pandas as pd
import pytest
from test_fix import best_lag, timeline_audio
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.curate.cut import CUT_LOG_NAME, cut_table
from synccurate.io.files import write_table
from synccurate.training import synth

FPS = 25
SEGMENTS = [(0, 0.0, 2.6, 3), (1, 3.0, 5.6, 0)]  # (segment, start_s, end_s, offset_frames)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A 6 s synthetic talking head (libx264: one keyframe, at 0 s), in sync."""
    path = tmp_path_factory.mktemp("clips") / "talk.mp4"
    synth.synth_clip(path, seconds=6.0, seed=3, size=64)
    return path


def segments_table(source: Path, rows=SEGMENTS) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=["segment", "start_s", "end_s", "offset_frames"])
    table["root"], table["path"], table["status"] = str(source.parent), source.name, "ok"
    table["prob_at_offset"], table["offscreen_ratio"] = 0.9, 0.0
    return table.astype({"segment": "Int64", "offset_frames": "Int64"})


def video_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(container.streams.video[0]))


def test_each_segment_is_its_span_with_the_audio_shifted_by_its_offset(source, tmp_path):
    before = (source.stat().st_mtime_ns, source.read_bytes())
    log = cut_table(segments_table(source), tmp_path / "clips")
    assert log["status"].tolist() == ["cut", "cut"]
    assert log["video"].tolist() == ["copied", "reencoded"]  # only 0 s is a keyframe
    reference, rate = timeline_audio(source)
    for (segment, start, end, offset), output in zip(SEGMENTS, log["output"], strict=True):
        output = Path(output)
        assert output.name == f"talk-seg{segment:03d}.mp4"
        assert abs(video_frames(output) - round((end - start) * FPS)) <= 1
        audio, out_rate = timeline_audio(output)
        assert out_rate == rate
        span = reference[round(start * rate) : round(end * rate)]
        lag, strength = best_lag(span, audio[: len(span)], max_lag=rate // 4)
        assert lag == offset * rate // FPS, f"segment {segment}: lag {lag} samples"
        assert strength > 0.8
    assert (source.stat().st_mtime_ns, source.read_bytes()) == before


def test_a_rerun_and_a_run_after_a_kill_write_each_segment_once(source, tmp_path):
    out_dir = tmp_path / "clips"
    table = segments_table(source)

    def killed_after_first(done: int, total: int, row: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cut_table(table, out_dir, progress=killed_after_first)
    first = out_dir / "talk-seg000.mp4"
    written = first.stat().st_mtime_ns
    log = cut_table(table, out_dir)
    assert log["reused"].tolist() == [True, False]
    assert first.stat().st_mtime_ns == written
    stamps = [Path(p).stat().st_mtime_ns for p in log["output"]]
    again = cut_table(table, out_dir)
    assert again["reused"].tolist() == [True, True]
    assert [Path(p).stat().st_mtime_ns for p in again["output"]] == stamps
    assert not [p.name for p in out_dir.iterdir() if p.name.startswith(".")]  # no temp left
    first.unlink()  # an output deleted since is made again, the other still reused
    assert cut_table(table, out_dir)["reused"].tolist() == [False, True]
    assert first.is_file()


def test_a_bad_segment_is_a_row_naming_its_file_and_the_batch_goes_on(source, tmp_path):
    table = segments_table(source)
    missing = table.iloc[[0]].assign(path="gone.mp4")
    log = cut_table(pd.concat([missing, table.iloc[[1]]]), tmp_path / "clips")
    assert log["status"].tolist() == ["missing_input", "cut"]
    assert "gone.mp4" in log["error"].iloc[0] and log["output"].isna().iloc[0]


def test_the_cut_command_cuts_only_the_kept_segments(source, tmp_path):
    segments = write_table(segments_table(source), tmp_path / "segments.parquet")
    kept = write_table(segments_table(source).iloc[[1]], tmp_path / "kept.parquet")
    out_dir = tmp_path / "clips"
    result = CliRunner().invoke(
        app, ["cut", str(segments), "--out-dir", str(out_dir), "--only-kept", str(kept)]
    )
    assert result.exit_code == 0, result.output
    log = pd.read_parquet(out_dir / CUT_LOG_NAME)
    assert log["status"].tolist() == ["skipped_not_kept", "cut"]
    assert sorted(p.name for p in out_dir.glob("*.mp4")) == ["talk-seg001.mp4"]
