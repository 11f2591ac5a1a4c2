"""The filter and fix commands as a user calls them (the library parts have their own tests)."""

import pandas as pd
from test_filtering import CASES, RULES, make_table
from test_fix import best_lag, timeline_audio
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.io import media
from synccurate.io.files import write_table
from synccurate.training import synth


def test_filter_command_writes_kept_and_rejected_and_lists_paths(tmp_path):
    scores = write_table(make_table(str(tmp_path / "clips")), tmp_path / "scores.parquet")
    runner = CliRunner()
    args = [
        "filter",
        str(scores),
        "-o",
        str(tmp_path / "kept.parquet"),
        "--min-prob",
        str(RULES.min_prob),
        "--max-offscreen",
        str(RULES.max_offscreen),
        "--max-abs-offset",
        str(RULES.max_abs_offset),
        "--max-silence",
        str(RULES.max_silence),
        "--rejected",
        str(tmp_path / "rejected.parquet"),
        "--list",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    kept = pd.read_parquet(tmp_path / "kept.parquet")
    rejected = pd.read_parquet(tmp_path / "rejected.parquet")
    expected_kept = {f"sub/{name}" for name, case in CASES.items() if not case[-1]}
    assert set(kept["path"]) == expected_kept
    assert len(kept) + len(rejected) == len(CASES)
    assert rejected.set_index("path").loc["sub/several.mp4", "reject_reason"] == (
        "low_prob,offscreen,silence"
    )
    listed = [line for line in result.stdout.splitlines() if line.endswith(".mp4")]
    assert sorted(listed) == sorted(str(tmp_path / "clips" / p) for p in expected_kept)
    refused = runner.invoke(app, ["filter", str(scores), "-o", str(scores)])
    assert refused.exit_code == 2 and pd.read_parquet(scores).shape[0] == len(CASES)


def test_fix_command_on_one_video_shifts_by_the_offset_and_never_overwrites(tmp_path):
    source = tmp_path / "in sync.mp4"
    synth.synth_clip(source, seconds=2.0, seed=4)
    out = tmp_path / "shifted.mp4"
    runner = CliRunner()
    result = runner.invoke(app, ["fix", str(source), "--offset", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "+120.0 ms" in result.output  # positive offset → the audio is delayed by 3/25 s
    original, rate = timeline_audio(source)
    shifted, _ = timeline_audio(out)
    assert best_lag(original, shifted, max_lag=8000)[0] == 3 * 640  # the file, not the message
    before, after = media.probe(source), media.probe(out)
    assert abs(after.duration_s - before.duration_s) < 0.05
    again = runner.invoke(app, ["fix", str(source), "--offset", "3", "-o", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output
    missing = runner.invoke(app, ["fix", str(source), "-o", str(tmp_path / "x.mp4")])
    assert missing.exit_code == 2
