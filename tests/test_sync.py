"""Similarity matrix (SPEC §5) and clip metrics (SPEC §7) on hand-built inputs."""

import numpy as np
import pytest
import torch

from synccurate.models.sync import (
    clip_metrics,
    n_windows,
    onscreen_labels,
    similarity_matrix,
)

K = 15
TAU = 0.1


def _unit(x):
    return torch.nn.functional.normalize(torch.as_tensor(x, dtype=torch.float32), dim=-1)


def test_similarity_matrix_indexing():
    """S[t, k] = cos(v_t, a_{t-k}); audio[j] belongs to visual window j - K."""
    T, D = 12, 40
    audio = _unit(torch.randn(T + 2 * K, D))
    visual = audio[K + 3 - 2 : K + 3 - 2 + T].clone()  # v_t == a_{t+1} → peak at k = -1
    S = similarity_matrix(visual, audio, K)
    assert S.shape == (T, 2 * K + 1)
    assert torch.allclose(S[:, K - 1], torch.ones(T), atol=1e-5)
    t, k = 5, 4
    assert S[t, K + k].item() == pytest.approx(float(visual[t] @ audio[t - k + K]), abs=1e-6)
    with pytest.raises(ValueError):
        similarity_matrix(visual, audio[:-1], K)


def test_similarity_matrix_of_a_long_clip_has_every_row():
    """A clip longer than one block of rows: each row is still the cosine at its own t."""
    from synccurate.models.sync import SIMILARITY_BLOCK

    T, D = 3 * SIMILARITY_BLOCK + 7, 8
    audio = _unit(torch.randn(T + 2 * K, D))
    visual = audio[K + 1 : K + 1 + T].clone()  # v_t == a_{t+1} → peak at k = -1, every t
    S = similarity_matrix(visual, audio, K)
    assert S.shape == (T, 2 * K + 1)
    assert torch.allclose(S[:, K - 1], torch.ones(T), atol=1e-5)
    assert (S.argmax(1) == K - 1).all()


def test_n_windows():
    assert n_windows(5) == 1
    assert n_windows(4) == 0
    assert n_windows(100) == 96


def _matrix(T, offset, low=-0.3, high=0.4, offscreen=()):
    S = np.full((T, 2 * K + 1), low)
    S[:, K + offset] = high
    for start, stop in offscreen:
        S[start:stop, K + offset] = low
    return S


@pytest.mark.parametrize("offset", [-15, -4, 0, 3, 15])
def test_offset_probability_and_confidence_of_a_clean_clip(offset):
    metrics = clip_metrics(_matrix(100, offset), TAU)
    assert metrics.offset_frames == offset
    assert metrics.offset_seconds == pytest.approx(offset / 25)
    assert metrics.at_search_edge == (abs(offset) == K)
    # S̃ at the peak is the constant 0.4 (the smoothing is renormalised): p = sigmoid(4)
    assert metrics.prob_at_offset == pytest.approx(1 / (1 + np.exp(-0.4 / TAU)))
    assert metrics.confidence == pytest.approx(0.4 - (-0.3))
    assert metrics.offscreen_ratio == 0.0
    assert metrics.onscreen.all()


def test_offscreen_stretch_is_found():
    T = 100
    metrics = clip_metrics(_matrix(T, 3, offscreen=[(40, 80)]), TAU)
    assert metrics.offset_frames == 3
    # The smoothing blurs each edge of the stretch by at most a couple of frames.
    assert abs(metrics.offscreen_ratio - 0.4) <= 4 / T
    assert metrics.onscreen[:38].all() and not metrics.onscreen[42:78].any()
    assert metrics.onscreen[82:].all()
    # prob_at_offset averages c_t over the whole clip, off-screen part included
    assert metrics.prob_at_offset < 1 / (1 + np.exp(-0.4 / TAU))


def test_neighbouring_offsets_count_for_p_t():
    """p_t takes the best of k*-1, k*, k*+1: a frame peaking one column off stays on-screen."""
    S = _matrix(60, 2)
    S[20:40, K + 2] = -0.3
    S[20:40, K + 3] = 0.4
    metrics = clip_metrics(S, TAU)
    assert metrics.offset_frames == 2
    assert metrics.onscreen.all()


def test_weak_run_becomes_offscreen():
    """A run above 0.5 whose mean p_t is under the chunk threshold (0.7) is off-screen."""
    p = np.array([0.9] * 10 + [0.6] * 10 + [0.2] * 10 + [0.95] * 10)
    labels = onscreen_labels(p, cleanup=False)
    assert labels.tolist() == [True] * 10 + [True] * 10 + [False] * 10 + [True] * 10
    p2 = np.array([0.9] * 10 + [0.2] * 5 + [0.6] * 10 + [0.2] * 5 + [0.95] * 10)
    labels2 = onscreen_labels(p2, cleanup=False)
    assert not labels2[15:25].any() and labels2[:10].all() and labels2[30:].all()


def test_island_takes_its_neighbours_label():
    p = np.array([0.9] * 10 + [0.1] * 2 + [0.9] * 10 + [0.9] * 0)
    assert onscreen_labels(p, cleanup=False)[10:12].tolist() == [False, False]
    assert onscreen_labels(p).all()
    q = np.array([0.1] * 10 + [0.95] * 3 + [0.1] * 10)
    assert not onscreen_labels(q).any()


def test_archipelago_becomes_offscreen():
    # a long on-run, then short runs off 2, on 2, off 1, on 3, off 2, then a long on-run
    p = np.array([0.9] * 8 + [0.1] * 2 + [0.9] * 2 + [0.1] + [0.9] * 3 + [0.1] * 2 + [0.9] * 8)
    raw = onscreen_labels(p, cleanup=False)
    assert raw[10:12].all() and raw[13:16].all()
    cleaned = onscreen_labels(p)
    assert cleaned[:8].all() and cleaned[-8:].all()
    assert not cleaned[8:18].any()  # the whole stretch of short runs is off-screen


def test_cleanup_can_be_disabled():
    p = np.array([0.9] * 10 + [0.1] * 2 + [0.9] * 10)
    assert not onscreen_labels(p, cleanup=False)[10:12].any()
