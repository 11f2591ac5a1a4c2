"""SPEC §7 clip metrics pinned on hand-built similarity matrices.

Every expected value is derived here, from the SPEC's numbers written out in this file
(σ = 2 frames truncated at ±4, on-screen p_t > 0.5, chunk threshold 0.7, runs shorter than
4 frames, the prob_at_offset formula, |offset| = K at the search edge) by hand or by a
direct loop — never read back from synccurate's own constants.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from synccurate.models.sync import clip_metrics, onscreen_labels

SIGMA = 2.0  # frames (SPEC §7 step 2, our default)
RADIUS = 4  # frames: the Gaussian is truncated at ±4


def smooth_reference(S: np.ndarray) -> np.ndarray:
    """S̃: each row a Gaussian-weighted mean of the rows within ±4 that exist (renormalised)."""
    T = len(S)
    out = np.empty_like(S, dtype=np.float64)
    for t in range(T):
        num = np.zeros(S.shape[1])
        den = 0.0
        for j in range(-RADIUS, RADIUS + 1):
            if 0 <= t + j < T:
                w = math.exp(-(j**2) / (2 * SIGMA**2))
                num += w * S[t + j]
                den += w
        out[t] = num / den
    return out


def sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x, dtype=np.float64)))


def p_and_c_reference(S: np.ndarray, tau: float, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """p_t = max over |k - k*| <= 1 of sigmoid(S̃/τ); c_t = the S̃ value it came from."""
    K = (S.shape[1] - 1) // 2
    smooth = smooth_reference(S)
    p, c = np.empty(len(S)), np.empty(len(S))
    for t in range(len(S)):
        best = None
        for k in (offset - 1, offset, offset + 1):
            if -K <= k <= K and (best is None or smooth[t, k + K] > best):
                best = smooth[t, k + K]
        c[t], p[t] = best, sigmoid(best / tau)
    return p, c


def _one_column_clip(column: np.ndarray, K: int = 1) -> np.ndarray:
    """S whose offset-0 column is `column` and every other column is -1 (always worse)."""
    S = np.full((len(column), 2 * K + 1), -1.0)
    S[:, K] = column
    return S


# --- step 2: Gaussian smoothing ------------------------------------------------------------


def test_smoothing_of_an_impulse_gives_the_truncated_gaussian_by_hand():
    """An impulse at t = 10 spreads as w_j / Σw with w_j = exp(-j²/8), j = -4 … 4."""
    tau = 0.5
    column = np.zeros(21)
    column[10] = 1.0
    metrics = clip_metrics(_one_column_clip(column), tau)
    # Σw = 1 + 2 (e^-1/8 + e^-1/2 + e^-9/8 + e^-2) = 4.898030
    expected = np.zeros(21)
    expected[10] = 1 / 4.898030  # 0.204164
    expected[[9, 11]] = 0.882497 / 4.898030
    expected[[8, 12]] = 0.606531 / 4.898030
    expected[[7, 13]] = 0.324652 / 4.898030
    expected[[6, 14]] = 0.135335 / 4.898030  # 0.027630; row 5 and row 15 are beyond ±4
    assert metrics.offset_frames == 0
    np.testing.assert_allclose(metrics.p_t, sigmoid(expected / tau), atol=2e-6)


def test_smoothing_is_renormalised_where_the_kernel_runs_off_the_clip():
    """At t = 0 only taps j = 0 … 4 exist: S̃_0 = w_1 / (w_0 + … + w_4) for an impulse at t = 1."""
    tau = 0.5
    column = np.zeros(12)
    column[1] = 1.0
    metrics = clip_metrics(_one_column_clip(column), tau)
    left = 1 + 0.882497 + 0.606531 + 0.324652 + 0.135335  # 2.949015
    assert metrics.p_t[0] == pytest.approx(sigmoid(0.882497 / left / tau), abs=2e-6)
    assert metrics.p_t[1] == pytest.approx(sigmoid((1 / (left + 0.882497)) / tau), abs=2e-6)
    # a constant column stays that constant everywhere, ends included
    flat = clip_metrics(_one_column_clip(np.full(12, 0.3)), tau)
    np.testing.assert_allclose(flat.p_t, sigmoid(0.3 / tau), atol=2e-6)


def test_smoothed_probabilities_and_prob_at_offset_on_a_random_clip():
    rng = np.random.default_rng(7)
    column = rng.uniform(-0.5, 0.9, 37)
    tau = 0.25
    S = _one_column_clip(column)
    metrics = clip_metrics(S, tau)
    p, c = p_and_c_reference(S, tau, 0)
    np.testing.assert_allclose(metrics.p_t, p, atol=2e-6)
    # prob_at_offset = sigmoid(mean_t c_t / τ): the sigmoid of the mean, not a mean of sigmoids
    assert metrics.prob_at_offset == pytest.approx(float(sigmoid(c.mean() / tau)), rel=1e-6)
    assert metrics.prob_at_offset != pytest.approx(float(p.mean()), rel=1e-3)


# --- step 4: p_t and c_t near the offset ------------------------------------------------------


@pytest.mark.parametrize("offset", [1, 3, -3])
def test_p_t_takes_the_best_of_the_offset_and_its_two_neighbours_only(offset):
    K, T, tau = 3, 40, 0.2
    S = np.full((T, 2 * K + 1), -0.5)
    S[:, offset + K] = 0.3
    inside = offset + 1 if offset < K else offset - 1  # a neighbour within the search window
    S[10:15, inside + K] = 0.6  # better than k* here, and it counts
    outside = offset - 2 if offset > -K + 1 else offset + 2
    S[25:30, outside + K] = 0.9  # better still, but two columns away: it does not count
    metrics = clip_metrics(S, tau)
    assert metrics.offset_frames == offset
    p, c = p_and_c_reference(S, tau, offset)
    np.testing.assert_allclose(metrics.p_t, p, atol=2e-6)
    assert metrics.p_t[12] > sigmoid(0.3 / tau) + 0.01  # the neighbour's 0.6 was taken
    assert metrics.prob_at_offset == pytest.approx(float(sigmoid(c.mean() / tau)), rel=1e-6)


# --- steps 5-7: on-screen labels ---------------------------------------------------------------


@pytest.mark.parametrize("cleanup", [False, True])
def test_on_screen_means_p_t_strictly_above_one_half(cleanup):
    def labels(middle: float) -> list[bool]:
        p = np.array([0.95] * 10 + [middle] * 10 + [0.95] * 10)
        return onscreen_labels(p, cleanup=cleanup).tolist()

    assert labels(0.5) == [True] * 10 + [False] * 10 + [True] * 10
    assert labels(0.45) == [True] * 10 + [False] * 10 + [True] * 10
    assert labels(0.51) == [True] * 30  # one run with mean 0.803 ≥ 0.7


@pytest.mark.parametrize("cleanup", [False, True])
def test_a_run_needs_a_mean_p_t_of_0_7(cleanup):
    p = np.array([0.1] * 5 + [0.69] * 10 + [0.1] * 5 + [0.71] * 10 + [0.1] * 5)
    expected = [False] * 20 + [True] * 10 + [False] * 5
    assert onscreen_labels(p, cleanup=cleanup).tolist() == expected
    # the rule is on the run's mean: one weak frame (0.55) in a strong run stays on-screen
    q = np.array([0.1] * 5 + [0.55] + [0.95] * 9 + [0.1] * 5)
    assert onscreen_labels(q, cleanup=cleanup).tolist() == [False] * 5 + [True] * 10 + [False] * 5


def test_islands_are_runs_shorter_than_four_frames_between_longer_runs():
    def cleaned(p: list[float]) -> list[bool]:
        return onscreen_labels(np.array(p)).tolist()

    assert cleaned([0.9] * 8 + [0.1] * 3 + [0.9] * 8) == [True] * 19  # 3 frames: an island
    four = [True] * 8 + [False] * 4 + [True] * 8  # 4 frames: a run of its own
    assert cleaned([0.9] * 8 + [0.1] * 4 + [0.9] * 8) == four
    assert cleaned([0.1] * 8 + [0.9] * 3 + [0.1] * 8) == [False] * 19
    # a short run at the clip's start has one neighbour only: not an island
    assert cleaned([0.1] * 2 + [0.9] * 10) == [False] * 2 + [True] * 10
    assert onscreen_labels(np.array([0.9] * 8 + [0.1] * 3 + [0.9] * 8), cleanup=False).tolist() == (
        [True] * 8 + [False] * 3 + [True] * 8
    )


def test_two_consecutive_short_runs_are_an_archipelago():
    p = np.array([0.9] * 8 + [0.1] * 2 + [0.9] * 3 + [0.1] * 8)
    assert onscreen_labels(p, cleanup=False).tolist() == (
        [True] * 8 + [False] * 2 + [True] * 3 + [False] * 8
    )
    assert onscreen_labels(p).tolist() == [True] * 8 + [False] * 13


# --- offset, edge, confidence --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("K", "offset", "edge"),
    [(15, -15, True), (15, -14, False), (15, 0, False), (15, 14, False), (15, 15, True),
     (5, 5, True), (5, -5, True), (5, 4, False), (5, -4, False)],
)  # fmt: skip
def test_at_search_edge_exactly_when_the_offset_is_plus_or_minus_K(K, offset, edge):
    S = np.full((30, 2 * K + 1), -0.3)
    S[:, offset + K] = 0.4
    metrics = clip_metrics(S, 0.1)
    assert metrics.offset_frames == offset
    assert metrics.offset_seconds == offset / 25
    assert metrics.at_search_edge is edge


def test_confidence_is_max_minus_median_of_the_offset_profile():
    profile = np.array([0.1, -0.2, 0.6, 0.3, -0.5])  # median 0.1, mean 0.06
    metrics = clip_metrics(np.tile(profile, (20, 1)), 0.1)
    assert metrics.offset_frames == 0
    assert metrics.confidence == pytest.approx(0.6 - 0.1)
    np.testing.assert_allclose(metrics.profile, profile, atol=1e-7)


# --- the face mask -----------------------------------------------------------------------------


def test_windows_without_a_face_are_left_out_and_count_as_off_screen():
    """40 face-less windows peak at -7; the 60 with a face peak at +4 (SPEC §2, §7)."""
    K, T, tau = 15, 100, 0.1
    S = np.full((T, 2 * K + 1), -0.3)
    S[:, 4 + K] = 0.4
    S[30:70, 4 + K] = -0.3
    S[30:70, -7 + K] = 0.9  # over the whole clip the mean at -7 (0.18) beats +4 (0.12)
    valid = np.ones(T, dtype=bool)
    valid[30:70] = False
    metrics = clip_metrics(S, tau, valid=valid)
    assert metrics.offset_frames == 4
    np.testing.assert_allclose(metrics.profile, S[valid].mean(0), atol=1e-7)
    p, c = p_and_c_reference(S, tau, 4)  # S is smoothed whole, then face-less windows drop out
    assert (metrics.p_t[30:70] == 0).all()
    np.testing.assert_allclose(metrics.p_t[valid], p[valid], atol=2e-6)
    assert metrics.prob_at_offset == pytest.approx(float(sigmoid(c[valid].mean() / tau)), rel=1e-6)
    assert metrics.onscreen.tolist() == valid.tolist()
    assert metrics.offscreen_ratio == pytest.approx(0.4)
    assert clip_metrics(S, tau).offset_frames == -7  # without the mask the -7 peak would win
    with pytest.raises(ValueError):
        clip_metrics(S, tau, valid=np.zeros(T, dtype=bool))
