"""ModEFormer's offset vote (its paper, §3.5): every face window votes for its own best
offset, the clip's offset is the histogram's largest peak. Hand-built S matrices first
(every expected number worked out by hand), then synthetic clips through the bundled model.
"""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.io.audio import SAMPLES_PER_FRAME
from synccurate.models.sync import clip_metrics, vote_offset
from synccurate.training import synth

K = 15
TAU = 0.1
LOW = -0.3


def _rows(peaks: list[tuple[int, int, float]]) -> np.ndarray:
    """S with `count` rows peaking at `offset` with height `high` per (count, offset, high);
    every other entry LOW."""
    blocks = []
    for count, offset, high in peaks:
        block = np.full((count, 2 * K + 1), LOW)
        block[:, K + offset] = high
        blocks.append(block)
    return np.concatenate(blocks)


def test_seventy_percent_in_sync_votes_zero_with_share_point_seven():
    # 10·n windows: 7n in sync (peak at 0), 3n offset by 8 frames
    n = 5
    S = _rows([(7 * n, 0, 0.4), (3 * n, 8, 0.4)])
    offset, share, histogram = vote_offset(S)
    assert offset == 0
    assert share == 0.7  # 35 / 50, exactly
    assert histogram[K] == 35 and histogram[K + 8] == 15 and histogram.sum() == 50
    assert len(histogram) == 2 * K + 1  # index i is offset i - K, like the columns of S


def test_shuffled_windows_vote_the_same():
    """The vote counts windows; where they sit in time does not matter."""
    S = _rows([(14, -3, 0.4), (6, 5, 0.4)])
    rows = np.random.default_rng(0).permutation(len(S))
    assert vote_offset(S[rows])[:2] == (-3, 0.7)


def test_tie_between_offsets_goes_to_the_smaller_magnitude():
    # 10 windows vote +3, 10 vote -5: equal votes, |+3| < |-5|
    offset, share, _ = vote_offset(_rows([(10, -5, 0.4), (10, 3, 0.4)]))
    assert (offset, share) == (3, 0.5)
    # and the other way round, the smaller magnitude negative
    offset, share, _ = vote_offset(_rows([(10, 4, 0.4), (10, -1, 0.4)]))
    assert (offset, share) == (-1, 0.5)
    # |offset| comes before the mean similarity: the -5 voters being surer does not matter
    offset, share, _ = vote_offset(_rows([(10, -5, 0.9), (10, 3, 0.4)]))
    assert (offset, share) == (3, 0.5)


def test_symmetric_tie_goes_to_the_higher_mean_similarity_then_the_positive_offset():
    # -2 and +2 with 6 votes each and the same peak height: equal mean S too → +2
    offset, share, _ = vote_offset(_rows([(6, -2, 0.4), (6, 2, 0.4)]))
    assert (offset, share) == (2, 0.5)
    # the -2 voters are surer (0.6 > 0.4), so the mean S over the windows is higher at -2
    offset, share, _ = vote_offset(_rows([(6, -2, 0.6), (6, 2, 0.4)]))
    assert (offset, share) == (-2, 0.5)


def test_a_window_with_two_equal_maxima_votes_for_the_smaller_magnitude():
    S = np.full((3, 2 * K + 1), LOW)
    S[:, K - 4] = S[:, K + 1] = 0.5  # each row peaks at -4 and at +1 alike
    offset, share, histogram = vote_offset(S)
    assert (offset, share) == (1, 1.0)
    assert histogram[K - 4] == 0


def test_faceless_windows_do_not_vote():
    # 8 face windows vote 0, 2 vote +3; 10 windows without a face all peak at +5
    S = _rows([(8, 0, 0.4), (2, 3, 0.4), (10, 5, 0.9)])
    valid = np.array([True] * 10 + [False] * 10)
    offset, share, histogram = vote_offset(S, valid)
    assert offset == 0
    assert share == 0.8  # 8 of the 10 face windows, not 8 of 20
    assert histogram[K + 5] == 0 and histogram.sum() == 10
    metrics = clip_metrics(S, TAU, valid=valid)
    assert (metrics.vote_offset, metrics.vote_share) == (0, 0.8)
    assert vote_offset(S)[0] == 5  # without the mask the face-less windows would win
    with pytest.raises(ValueError):
        vote_offset(S, np.zeros(len(S), dtype=bool))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_vote_method_decides_the_offset_and_everything_after_it():
    """70 windows in sync with a weak peak (0.2), then 30 windows with a strong one at +15.

    Mean profile: at 0, 0.7·0.2 + 0.3·(-0.3) = 0.05; at +15, 0.3·1.0 + 0.7·(-0.3) = 0.09;
    elsewhere -0.3. So the mean is pulled to +15 (the search edge), the vote says 0 (70 %).
    """
    S = _rows([(70, 0, 0.2), (30, 15, 1.0)])
    mean = clip_metrics(S, TAU)
    vote = clip_metrics(S, TAU, offset_method="vote")
    assert mean.offset_frames == 15 and mean.offset_method == "mean"
    assert vote.offset_frames == 0 and vote.offset_method == "vote"
    assert vote.offset_seconds == 0.0 and mean.offset_seconds == pytest.approx(15 / 25)
    for metrics in (mean, vote):  # the vote is reported either way
        assert (metrics.vote_offset, metrics.vote_share) == (0, 0.7)
        # confidence = max - median of the profile = 0.09 - (-0.3), whatever the method
        assert metrics.confidence == pytest.approx(0.39)
        np.testing.assert_allclose(metrics.profile, S.mean(0), atol=1e-6)
    assert mean.at_search_edge and not vote.at_search_edge
    # c_t is the smoothed S at the chosen column (its neighbours are LOW), and the
    # time-smoothing keeps a column's mean: mean_t c_t = 0.05 (vote) and 0.09 (mean)
    assert vote.prob_at_offset == pytest.approx(_sigmoid(0.05 / TAU), abs=1e-6)
    assert mean.prob_at_offset == pytest.approx(_sigmoid(0.09 / TAU), abs=1e-6)
    # p_t near the chosen offset: the in-sync 70 % are on-screen for the vote, off for the mean
    assert abs(vote.offscreen_ratio - 0.3) <= 3 / len(S)
    assert abs(mean.offscreen_ratio - 0.7) <= 3 / len(S)
    assert vote.onscreen[:65].all() and not vote.onscreen[75:].any()
    assert not mean.onscreen[:65].any() and mean.onscreen[75:].all()


def test_mean_and_vote_agree_on_a_clean_clip():
    S = _rows([(50, -4, 0.4)])
    mean, vote = clip_metrics(S, TAU), clip_metrics(S, TAU, offset_method="vote")
    assert mean.offset_frames == vote.offset_frames == vote.vote_offset == -4
    assert mean.prob_at_offset == vote.prob_at_offset and vote.vote_share == 1.0
    with pytest.raises(ValueError):
        clip_metrics(S, TAU, offset_method="median")


# --- synthetic clips ----------------------------------------------------------------------


def test_partial_shift_moves_one_stretch_of_the_audio():
    """Inside the stretch the audio is the unshifted track s frames later (SPEC §6: +s =
    advanced); outside it, it is untouched. Both tracks get the same room noise, so the
    difference is the noise at two instants (below -58 dBFS)."""
    s = 3
    _, plain, _ = synth.synth_arrays(seconds=2.0, seed=5, offset_frames=1, size=48)
    _, part, truth = synth.synth_arrays(
        seconds=2.0,
        seed=5,
        offset_frames=1,
        size=48,
        partial_shift_frames=s,
        partial_shift_fraction=0.4,
    )
    start, end = truth["partial_shift_start"], truth["partial_shift_end"]
    assert truth["partial_shift_frames"] == s and end - start == 20  # 0.4 of 50 frames
    assert truth["true_offset_frames"] == 1
    a, b = (start + 1) * SAMPLES_PER_FRAME, (end - 1) * SAMPLES_PER_FRAME  # past the fades
    shift = s * SAMPLES_PER_FRAME
    assert np.abs(part[a:b] - plain[a + shift : b + shift]).max() < 0.01
    assert np.abs(part[a:b] - plain[a:b]).max() > 0.1  # it did move
    outside = np.r_[0 : start * SAMPLES_PER_FRAME - 200, end * SAMPLES_PER_FRAME + 200 : len(part)]
    assert np.array_equal(part[outside], plain[outside])


# 4 s clips (96 windows) whose audio is shifted by +2 frames for 40 % of their length, seeds
# 0…2. The bundled small model's per-window offsets are sharp, but its mean profile is a
# few frames wide, so the mean of "60 % peak at 0, 40 % peak at +2" tops out at +1 for
# seeds 1 and 2 (we looked: 6 of seeds 0…11 land at +1), while the vote finds 0 in all
# twelve. Seed 0 is one where the mean is right too.
PARTIAL = {"seed_0.mp4": (0, 0), "seed_1.mp4": (1, 1), "seed_2.mp4": (2, 1)}  # name: (seed, mean)


def test_vote_finds_the_majority_offset_where_the_mean_is_pulled(tmp_path):
    for name, (seed, _) in PARTIAL.items():
        synth.synth_clip(
            tmp_path / "clips" / name,
            seconds=4.0,
            seed=seed,
            size=64,  # the lower half is the bundled model's 64×32 crop: nothing to resize
            partial_shift_frames=2,
            partial_shift_fraction=0.4,
        )
    out = tmp_path / "scores.parquet"
    args = ["score", str(tmp_path / "clips"), "-o", str(out), "--workers", "0"]
    args += ["--no-progress", "--face-detector", "none", "--offset-method", "vote"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out).set_index("path")
    assert str(table["vote_offset"].dtype) == "Int64" and table["vote_share"].dtype == "float64"
    for name, (_, pulled_mean) in PARTIAL.items():
        row = table.loc[name]
        assert row.status == "ok" and row.offset_method == "vote"
        assert row.offset_frames == row.vote_offset == 0, name
        # 60 % of the windows are in sync; a 5-frame window alone is right about 70 % of
        # the time with this model, so about 0.4 of the windows vote 0
        assert 0.3 <= row.vote_share <= 0.6, (name, row.vote_share)
        profile = np.asarray(row.profile)  # mean_t S[t, k]: SPEC §6's reading
        assert int(np.argmax(profile)) - K == pulled_mean, name
