"""The bundled weights on synthetic clips with known truth: score, eval, fix round trip."""

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.io.inputs import discover
from synccurate.models.icsyncnet import ICSyncNetModel
from synccurate.models.weights import find_weights
from synccurate.training import evaluate, synth

SHIFTS = (-10, -4, 0, 3, 8)


def _score(folder, out):
    result = CliRunner().invoke(
        app,
        [
            "score",
            str(folder),
            "-o",
            str(out),
            "--workers",
            "0",
            "--no-progress",
            "--face-detector",
            "none",
        ],
    )
    assert result.exit_code == 0, result.output
    return pd.read_parquet(out).set_index("path")


@pytest.fixture(scope="module")
def shifted_clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shifted")
    for i, shift in enumerate(SHIFTS):
        synth.synth_clip(
            folder / f"shift_{shift:+d}.mp4", seconds=6.0, seed=700 + i, offset_frames=shift
        )
    synth.synth_clip(folder / "offscreen.mp4", seconds=6.0, seed=800, offscreen_fraction=0.4)
    return folder


def test_bundled_weights_find_known_offsets_and_offscreen(shifted_clips, tmp_path):
    table = _score(shifted_clips, tmp_path / "scores.parquet")
    assert table["model"].str.startswith("icsyncnet-small@").all()
    for shift in SHIFTS:
        row = table.loc[f"shift_{shift:+d}.mp4"]
        assert row.status == "ok"
        assert row.offset_frames == shift  # exact: the bundled model gets these right
        assert row.prob_at_offset > 0.5
    assert table.loc["shift_+0.mp4", "offscreen_ratio"] < 0.1
    assert abs(table.loc["offscreen.mp4", "offscreen_ratio"] - 0.4) <= 0.15


def test_score_fix_score_round_trip(shifted_clips, tmp_path):
    scores_path = tmp_path / "scores.parquet"
    _score(shifted_clips, scores_path)
    result = CliRunner().invoke(
        app, ["fix", str(scores_path), "--out-dir", str(tmp_path / "fixed")]
    )
    assert result.exit_code == 0, result.output
    fixed = _score(tmp_path / "fixed", tmp_path / "fixed_scores.parquet")
    for shift in SHIFTS:
        assert fixed.loc[f"shift_{shift:+d}.mp4", "offset_frames"] == 0


def test_eval_on_held_out_clips_meets_the_accuracy_bar(tmp_path):
    """A smaller version of the weights/README.md measurement (seed 2 was never trained on)."""
    synth.synth_dataset(tmp_path, n=40, seconds=4.0, seed=2, workers=2)
    model = ICSyncNetModel.load(find_weights())
    refs, offsets = evaluate.load_truth([], tmp_path / synth.MANIFEST_NAME)
    results = evaluate.evaluate(model, refs, offsets, device=torch.device("cpu"))
    assert results["n_clips"] == 40
    assert results["accuracy"]["15"] >= 0.95
    assert results["accuracy"]["5"] >= 0.70
    assert results["n_subclips"]["5"] == 40 * (100 - 4)
    assert len(discover([tmp_path])) == 40


def test_plot_writes_a_sync_map_png(shifted_clips, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "plot",
            str(shifted_clips / "shift_+3.mp4"),
            "-o",
            str(tmp_path),
            "--face-detector",
            "none",
        ],
    )
    assert result.exit_code == 0, result.output
    png = tmp_path / "shift_+3.syncmap.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "offset +3" in result.output


def test_demo_scores_the_examples_next_to_their_truth(tmp_path):
    result = CliRunner().invoke(app, ["demo", str(tmp_path)])
    assert result.exit_code == 0, result.output
    from synccurate.training.demo import EXAMPLE_CLIPS

    table = pd.read_parquet(tmp_path / "scores.parquet").set_index("path")
    assert len(table) == len(EXAMPLE_CLIPS)
    for name, offset, offscreen in EXAMPLE_CLIPS:
        assert table.loc[name, "offset_frames"] == offset
        assert abs(table.loc[name, "offscreen_ratio"] - offscreen) <= 0.15
