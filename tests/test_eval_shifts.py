"""`eval` on clips without a manifest: known shifts of the audio windows, per shift and length.

The plumbing is tested without trained weights: an oracle similarity (peak at the clip's
true offset) for the bookkeeping, and the model-free MouthEnergyModel of test_score on
synthetic clips for the sign: a shift of +s must read as an offset of truth + s, the same as
a clip whose audio really was advanced by s frames (SPEC §6).
"""

import json

import pandas as pd
import pytest
import torch
from test_score import MOUTH, MouthEnergyModel
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.faces.detectors import make_detector
from synccurate.io.files import write_table
from synccurate.io.inputs import ClipRef, discover
from synccurate.models.icsyncnet import CONFIGS, ICSyncNet, save_checkpoint
from synccurate.models.sync import clip_metrics
from synccurate.pipeline.batching import similarity_matrices
from synccurate.pipeline.prepare import prepare_clip
from synccurate.training import evaluate, synth

SHIFTS = evaluate.REAL_CLIP_SHIFTS
CPU = torch.device("cpu")


class StandIn(MouthEnergyModel):
    model_id = "mouth-energy"
    batch_size = 64


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    for name, offset, seed in (("a.mp4", 0, 11), ("b.mp4", 5, 12), ("c.mp4", -4, 13)):
        synth.synth_clip(folder / name, seconds=3.0, seed=seed, offset_frames=offset)
    return folder


def _prepared(folder, name):
    clip = prepare_clip(ClipRef(str(folder), name), MOUTH, make_detector("none"))
    assert clip.status == "ok", clip.error
    return clip


def test_shifting_the_audio_windows_reads_as_an_audio_advance(clips):
    """Window-index shift +s of a clip whose truth is t gives offset t + s, like a clip whose
    audio really was advanced by s more frames (synth --offset)."""
    model = StandIn()
    (wide,) = similarity_matrices(model, [_prepared(clips, "a.mp4")], 64, CPU, 15 + 9)
    (moved,) = similarity_matrices(model, [_prepared(clips, "b.mp4")], 64, CPU, 15)
    assert clip_metrics(moved, model.tau).offset_frames == 5  # really advanced by 5 frames
    for shift in SHIFTS + (5, -9):
        S = evaluate.shifted(wide, shift)
        assert S.shape == (wide.shape[0], 31)
        assert clip_metrics(S, model.tau).offset_frames == shift, shift
    (b_wide,) = similarity_matrices(model, [_prepared(clips, "b.mp4")], 64, CPU, 15 + 9)
    assert clip_metrics(evaluate.shifted(b_wide, -5), model.tau).offset_frames == 0
    assert clip_metrics(evaluate.shifted(b_wide, 4), model.tau).offset_frames == 9
    assert torch.equal(evaluate.shifted(b_wide, 0)[:, 9:22], b_wide[:, 18:31])
    with pytest.raises(ValueError):
        evaluate.shifted(moved, 1)  # S over ±15 only has no room for a shift


def test_accuracy_per_shift_and_length_with_an_oracle_similarity(clips, monkeypatch):
    """Bookkeeping: every (clip, shift) pair, the right truth, skipped pairs, sub-clip counts."""

    def oracle(model, prepared, batch_size, device, max_offset):
        out = []
        for clip in prepared:
            S = (
                torch.rand(
                    clip.n_windows, 2 * max_offset + 1, generator=torch.Generator().manual_seed(0)
                )
                * 0.5
            )
            S[:, max_offset + truth[clip.ref.path]] = 1.0  # column of offset k holds index K + k
            out.append(S)
        return out

    monkeypatch.setattr(evaluate, "similarity_matrices", oracle)
    refs = discover([clips])
    truth = {"a.mp4": 0, "b.mp4": 9, "c.mp4": -4}  # b at +9: shifted by +9 it leaves ±15
    offsets = [truth[r.path] for r in refs]
    results = evaluate.evaluate(StandIn(), refs, offsets, device=CPU, shifts=SHIFTS)
    assert results["shifts"] == list(SHIFTS)
    assert results["skipped_shifts"] == ["b.mp4: truth +9 shifted by +9"]
    for shift in SHIFTS:
        table = results["accuracy_by_shift"][str(shift)]
        assert all(value == 1.0 for value in table.values()), (shift, table)
        n_clips = 2 if shift == 9 else 3
        assert results["n_subclips_by_shift"][str(shift)]["5"] == n_clips * (75 - 4)
        assert results["n_subclips_by_shift"][str(shift)]["15"] == n_clips * (75 - 14)
    assert results["n_subclips"]["5"] == 14 * 71  # pooled over 3 x 5 - 1 pairs
    assert all(value == 1.0 for value in results["accuracy"].values())
    wrong = evaluate.evaluate(StandIn(), refs, [o + 3 for o in offsets], device=CPU, shifts=(0,))
    assert all(value == 0.0 for value in wrong["accuracy"].values())


def test_eval_through_the_real_pipeline_recovers_every_shift(clips):
    """MouthEnergyModel on real decoded clips: long sub-clips find truth + shift for every shift;
    a wrong sign would put the prediction 2 × shift away and fail all but shift 0."""
    refs = discover([clips])
    truth = {"a.mp4": 0, "b.mp4": 5, "c.mp4": -4}
    results = evaluate.evaluate(
        StandIn(), refs, [truth[r.path] for r in refs], device=CPU, shifts=SHIFTS
    )
    for shift in SHIFTS:
        assert results["accuracy_by_shift"][str(shift)]["15"] >= 0.4, (shift, results)
    assert results["n_clips"] == 3 and not results["skipped_shifts"]


def test_eval_takes_the_truth_from_a_scores_table(clips, tmp_path):
    table = pd.DataFrame(
        {
            "root": [str(clips.resolve())] * 3,
            "path": ["a.mp4", "b.mp4", "c.mp4"],
            "status": ["ok", "ok", "no_face"],
            "offset_frames": [0, 5, None],
            "prob_at_offset": [None] * 3,
            "offscreen_ratio": [None] * 3,
        }
    ).astype({"offset_frames": "Int64", "prob_at_offset": "float64", "offscreen_ratio": "float64"})
    scores = write_table(table, tmp_path / "scores.parquet")
    refs, offsets = evaluate.load_truth([scores], None)
    assert [(r.path, o) for r, o in zip(refs, offsets, strict=True)] == [("a.mp4", 0), ("b.mp4", 5)]
    refs, offsets = evaluate.load_truth([clips], None)  # a folder: taken as in sync
    assert offsets == [0, 0, 0]


def test_eval_command_reports_per_shift_and_keeps_the_manifest_protocol(clips, tmp_path):
    torch.manual_seed(0)
    weights = save_checkpoint(ICSyncNet(CONFIGS["tiny"]), tmp_path / "tiny")
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(
        app, ["eval", str(clips), "--weights", str(weights), "--shifts=-2,0,3", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    results = json.loads(out.read_text())
    assert results["shifts"] == [-2, 0, 3] and set(results["accuracy_by_shift"]) == {"-2", "0", "3"}
    assert "+3" in result.output and "all shifts" in result.output
    default = CliRunner().invoke(
        app, ["eval", str(clips), "--weights", str(weights), "-o", str(out)]
    )
    assert default.exit_code == 0, default.output
    assert json.loads(out.read_text())["shifts"] == list(SHIFTS)
    synth.synth_dataset(tmp_path / "m", n=2, seconds=1.0, seed=3, offset_range=4)
    manifest = tmp_path / "m" / synth.MANIFEST_NAME
    args = ["eval", "--manifest", str(manifest), "--weights", str(weights), "-o", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert json.loads(out.read_text())["shifts"] == [0]  # truth from the manifest, as before
    bad = CliRunner().invoke(app, ["eval", str(clips), "--shifts", "x", "--weights", str(weights)])
    assert bad.exit_code == 2
