"""The accuracy protocol of SPEC §8: hand-built S for the arithmetic (tolerance ±1 frame, the
sign of the truth, sub-clip counts), and `synccurate eval --manifest` on clips whose true
offsets are nonzero, judged by the JSON it writes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.training import synth
from synccurate.training.evaluate import accuracy_at

K = 15


def peaked(T: int, *peaks: tuple[int, int, int]) -> np.ndarray:
    """S [T, 31] at -0.2 except 0.5 at offset k for windows start…stop-1, per (start, stop, k)."""
    S = np.full((T, 2 * K + 1), -0.2)
    for start, stop, k in peaks:
        S[start:stop, k + K] = 0.5
    return S


@pytest.mark.parametrize(
    ("found", "truth", "correct"),
    [(3, 3, True), (4, 3, True), (2, 3, True), (5, 3, False), (1, 3, False),
     (-3, 3, False), (3, -3, False), (-4, -4, True), (-5, -4, True), (-2, -4, False),
     (15, 14, True), (-15, 15, False)],
)  # fmt: skip
def test_a_sub_clip_is_correct_within_one_frame_of_the_signed_truth(found, truth, correct):
    accuracy, count = accuracy_at([peaked(20, (0, 20, found))], 5, [truth])
    assert count == 20  # L = 5: one visual window per sub-clip
    assert accuracy == (1.0 if correct else 0.0)


def test_sub_clips_average_their_windows_and_pool_over_clips():
    """Windows 0-9 peak at the truth (+2), windows 10-19 at +7 (wrong)."""
    S = peaked(20, (0, 10, 2), (10, 20, 7))
    assert accuracy_at([S], 5, [2]) == (0.5, 20)
    # L = 7: three windows per sub-clip, 18 sub-clips; those starting at 0…8 hold a
    # majority of +2 windows, those starting at 9…17 a majority of +7 windows
    assert accuracy_at([S], 7, [2]) == (9 / 18, 18)
    assert accuracy_at([S], 15, [2]) == (pytest.approx(5 / 10), 10)  # windows s…s+10, s = 0…9
    # pooled over all sub-clips of all clips (not averaged per clip); at L = 15 a clip of
    # 8 windows (fewer than 11) adds nothing
    right = peaked(40, (0, 40, -6))
    short = peaked(8, (0, 8, 0))
    assert accuracy_at([S, right, short], 5, [2, -6, 0]) == (pytest.approx(58 / 68), 68)
    assert accuracy_at([S, right, short], 15, [2, -6, 0]) == (pytest.approx(35 / 40), 40)
    assert accuracy_at([short], 15, [0]) == (None, 0)


TRUTH = {"leads.mp4": 6, "lags.mp4": -4}  # SPEC §6: + = audio advanced (leads)


@pytest.fixture(scope="module")
def shifted_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval_set")
    for i, (name, offset) in enumerate(TRUTH.items()):
        synth.synth_clip(folder / name, seconds=2.0, seed=880 + i, offset_frames=offset)
    manifest = pd.DataFrame({"path": list(TRUTH), "true_offset_frames": list(TRUTH.values())})
    manifest.to_parquet(folder / synth.MANIFEST_NAME, index=False)
    return folder


def _eval(tmp_path, *args) -> dict:
    out = tmp_path / f"results{len(list(tmp_path.iterdir()))}.json"
    result = CliRunner().invoke(app, ["eval", *map(str, args), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_eval_scores_against_the_manifest_offsets(shifted_set, tmp_path):
    results = _eval(tmp_path, "--manifest", shifted_set / synth.MANIFEST_NAME)
    assert results["n_clips"] == 2 and results["failed_clips"] == []
    assert results["tolerance_frames"] == 1 and results["max_offset"] == 15
    # 2 s = 50 frames: 46 windows, so 46 - (L - 5) sub-clips per clip
    assert results["n_subclips"] == {str(L): 2 * (46 - (L - 5)) for L in (5, 7, 9, 11, 13, 15)}
    assert results["accuracy"]["15"] >= 0.95
    assert results["accuracy"]["5"] >= 0.6
    # the same clips taken as in sync (no manifest): their offsets of +6 and -4 are wrong
    as_in_sync = _eval(tmp_path, shifted_set / "leads.mp4", shifted_set / "lags.mp4")
    assert as_in_sync["accuracy"]["15"] <= 0.05
