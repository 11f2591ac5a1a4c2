"""Similarity matrix (SPEC §5) and clip metrics (SPEC §7).

S[t, k] = cos(v_t, a_{t-k}) for visual windows t = 0 … T-1 and offsets k = -K … K.
Column index i of S holds offset k = i - K.

Two readings of a clip's offset: the SPEC §6 argmax of the mean profile (`best_offset`),
and ModEFormer's per-window vote (§3.5 of its paper; `vote_offset`), whose largest
histogram peak ignores how strongly a minority of windows agrees with another offset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from synccurate.io.audio import VIDEO_FPS, WINDOW_FRAMES

MAX_OFFSET = 15  # frames searched on each side (K)
# Visual windows whose S rows are computed at once: the gather of their audio embeddings
# takes block × (2K+1) × D floats (8 MB at D = 128, 32 MB at 512), where the whole clip's
# took 476 MB for 20 minutes at D = 128.
SIMILARITY_BLOCK = 512
SMOOTH_SIGMA = 2.0  # frames, Gaussian smoothing of S along t (our default)
SMOOTH_RADIUS = 4  # frames; the Gaussian is truncated at ±4 frames
CHUNK_THRESHOLD = 0.7  # an on-screen run needs a mean p_t at least this high
MIN_RUN = 4  # frames; shorter runs are islands / archipelago members


def n_windows(n_frames: int) -> int:
    """Visual windows in a clip of n_frames: T = n_frames - 4."""
    return max(0, n_frames - WINDOW_FRAMES + 1)


def similarity_matrix(visual: torch.Tensor, audio: torch.Tensor, max_offset: int) -> torch.Tensor:
    """S [T, 2K+1] from unit visual embeddings [T, D] and audio embeddings [T+2K, D].

    audio[j] belongs to visual window j - K, so a_{t-k} is audio[t - k + K]: each
    encoder ran once per window, and S is a gather over one matrix product.
    """
    T = visual.shape[0]
    K = max_offset
    if audio.shape[0] != T + 2 * K:
        raise ValueError(f"expected {T + 2 * K} audio windows, got {audio.shape[0]}")
    offsets = torch.arange(-K, K + 1, device=visual.device)
    rows = []
    for start in range(0, T, SIMILARITY_BLOCK):  # the gather holds 2K+1 copies of each row
        t = torch.arange(start, min(T, start + SIMILARITY_BLOCK), device=visual.device)
        gathered = audio[t[:, None] - offsets[None, :] + K]  # [block, 2K+1, D]
        rows.append(torch.einsum("td,tkd->tk", visual[t].float(), gathered.float()))
    return torch.cat(rows) if rows else visual.new_zeros((0, 2 * K + 1), dtype=torch.float32)


def offset_profile(similarity: torch.Tensor | np.ndarray) -> np.ndarray:
    """mean_t S[t, k] for every offset."""
    return np.asarray(torch.as_tensor(similarity).float().mean(0).cpu())


def best_offset(profile: np.ndarray) -> int:
    """argmax_k of the mean similarity, as a signed offset (SPEC §6: positive = audio leads)."""
    return int(np.argmax(profile)) - (len(profile) - 1) // 2


OFFSET_METHODS = ("mean", "vote")


def offset_preference(profile: np.ndarray) -> np.ndarray:
    """Column indices of S in tie-break order: smaller |k| first, then the higher mean
    similarity profile[k], then the positive offset. The first maximum in this order
    wins every tie of `vote_offset` (within a window's row and between histogram bins).
    """
    K = (len(profile) - 1) // 2
    return np.array(sorted(range(len(profile)), key=lambda i: (abs(i - K), -profile[i], -i)))


def vote_offset(
    similarity: torch.Tensor | np.ndarray, valid: np.ndarray | None = None
) -> tuple[int, float, np.ndarray]:
    """ModEFormer's offset vote (its paper, §3.5): (vote_offset, vote_share, histogram).

    Every face window t (valid[t], default all) votes for argmax_k S[t, k]; the clip's
    offset is the largest peak of the vote histogram. Ties, in a window's row or between
    peaks, go to the smaller |offset|, then to the offset with the higher mean S over the
    face windows (profile), then to the positive offset (`offset_preference`).
    vote_share = votes for the winner / number of face windows. histogram[i] counts the
    votes for offset i - K (the column order of S).
    """
    S = _float32(similarity)
    K = (S.shape[1] - 1) // 2
    valid = _valid_rows(S, valid)
    order = offset_preference(face_profile(S, valid))
    votes = np.concatenate(  # the first maximum in preference order, a block at a time
        [order[S[rows][valid[rows]][:, order].argmax(1)] for rows in _blocks(len(S))]
    )
    histogram = np.bincount(votes, minlength=S.shape[1])
    winner = int(order[histogram[order].argmax()])
    return winner - K, float(histogram[winner] / len(votes)), histogram


# Windows whose rows of S are turned into float64 at once by the clip metrics: an hour's S
# whole in float64 took 112 MB at its peak (five copies), a block takes 2 MB.
METRICS_BLOCK = 8192


def _blocks(n: int) -> list[slice]:
    return [slice(start, min(n, start + METRICS_BLOCK)) for start in range(0, n, METRICS_BLOCK)]


def _float32(similarity: torch.Tensor | np.ndarray) -> np.ndarray:
    """S as a float32 NumPy array (the tensor's own memory when it already is one)."""
    return np.asarray(torch.as_tensor(similarity).detach().float().cpu())


def _valid_rows(S: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    valid = np.ones(len(S), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if not valid.any():
        raise ValueError("no visual window shows a face")
    return valid


def face_profile(S: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """mean_t S[t, k] over the face windows, in float64 (summed a block at a time)."""
    total = sum(S[rows][valid[rows]].astype(np.float64).sum(0) for rows in _blocks(len(S)))
    return total / valid.sum()


def _gaussian_smooth(similarity: np.ndarray) -> np.ndarray:
    """Smooth along t, renormalising the truncated kernel at the clip's ends."""
    taps = np.arange(-SMOOTH_RADIUS, SMOOTH_RADIUS + 1)
    kernel = np.exp(-0.5 * (taps / SMOOTH_SIGMA) ** 2)
    T = similarity.shape[0]
    padded = np.pad(similarity, ((SMOOTH_RADIUS, SMOOTH_RADIUS), (0, 0)))
    weights = np.pad(np.ones(T), SMOOTH_RADIUS)
    num = sum(kernel[i] * padded[i : i + T] for i in range(len(taps)))
    den = sum(kernel[i] * weights[i : i + T] for i in range(len(taps)))
    return num / den[:, None]


def _runs(labels: np.ndarray) -> list[list]:
    """[[label, start, stop], …] runs of equal consecutive labels."""
    runs: list[list] = []
    for t, label in enumerate(labels.tolist()):
        if runs and runs[-1][0] == label:
            runs[-1][2] = t + 1
        else:
            runs.append([label, t, t + 1])
    return runs


def _paint(runs: list[list], length: int) -> np.ndarray:
    labels = np.zeros(length, dtype=bool)
    for label, start, stop in runs:
        labels[start:stop] = label
    return labels


def onscreen_labels(p: np.ndarray, cleanup: bool = True) -> np.ndarray:
    """Per-window on-screen labels from p_t (SPEC §7 steps 5–7)."""
    labels = p > 0.5
    for label, start, stop in _runs(labels):
        if label and p[start:stop].mean() < CHUNK_THRESHOLD:
            labels[start:stop] = False
    if not cleanup:
        return labels
    runs = _runs(labels)
    short = [stop - start < MIN_RUN for _, start, stop in runs]
    # Islands: a short run between two longer runs takes its neighbours' label.
    for i in range(1, len(runs) - 1):
        if short[i] and not short[i - 1] and not short[i + 1]:
            runs[i][0] = runs[i - 1][0]
    # Archipelagos: a stretch of two or more consecutive short runs is off-screen.
    i = 0
    while i < len(runs):
        j = i
        while j < len(runs) and short[j]:
            j += 1
        if j - i >= 2:
            for run in runs[i:j]:
                run[0] = False
        i = max(j, i + 1)
    return _paint(runs, len(labels))


@dataclass
class ClipMetrics:
    offset_frames: int
    offset_seconds: float
    prob_at_offset: float
    offscreen_ratio: float
    confidence: float
    at_search_edge: bool
    vote_offset: int  # ModEFormer's per-window vote (`vote_offset`), whatever decided the offset
    vote_share: float  # fraction of face windows voting for vote_offset
    offset_method: str  # what decided offset_frames: "mean" (SPEC §6) or "vote"
    p_t: np.ndarray  # per visual window, best in-sync probability near the offset
    onscreen: np.ndarray  # per visual window, active-speaker label
    profile: np.ndarray  # mean_t S[t, k], k = -K … K


def clip_metrics(
    similarity: torch.Tensor | np.ndarray,
    tau: float,
    cleanup: bool = True,
    valid: np.ndarray | None = None,
    probability: Callable[[np.ndarray], np.ndarray] | None = None,
    offset_method: str = "mean",
) -> ClipMetrics:
    """Offset, probability at offset, off-screen ratio and confidence of one clip.

    `valid` marks the visual windows whose five frames all show the face; the others
    say nothing about sync, so they stay out of the averages and count as off-screen.
    `probability` maps similarity to P(sync): sigmoid(S / τ) by default (IC-SyncNet);
    a model trained with BCE on the cosine itself (Wav2Lip's expert) passes its own.
    `offset_method` decides offset_frames: "mean" = argmax of the mean profile (SPEC §6),
    "vote" = the per-window vote (`vote_offset`). Everything after it (p_t near the
    offset, prob_at_offset, off-screen labels, at_search_edge) uses that offset; the
    vote and its share are computed either way, `confidence` never depends on it.
    """
    if offset_method not in OFFSET_METHODS:
        raise ValueError(f"offset_method must be one of {OFFSET_METHODS}, got {offset_method!r}")
    S = _float32(similarity)
    K = (S.shape[1] - 1) // 2
    valid = _valid_rows(S, valid)
    profile = face_profile(S, valid)
    voted, share, _ = vote_offset(S, valid)
    offset = voted if offset_method == "vote" else best_offset(profile)
    column = offset + K
    if probability is None:
        probability = lambda similarity: 1 / (1 + np.exp(-similarity / tau))  # noqa: E731
    near = slice(max(0, column - 1), min(S.shape[1], column + 2))
    smooth = _gaussian_smooth(S[:, near].astype(np.float64))  # along t: column by column
    probs = probability(smooth)
    pick = probs.argmax(1)
    p_t = np.where(valid, probs[np.arange(len(S)), pick], 0.0)
    c_t = smooth[np.arange(len(S)), pick][valid]
    onscreen = onscreen_labels(p_t, cleanup)
    return ClipMetrics(
        offset_frames=offset,
        offset_seconds=offset / VIDEO_FPS,
        prob_at_offset=float(probability(c_t.mean())),
        offscreen_ratio=float(1 - onscreen.mean()),
        confidence=float(profile.max() - np.median(profile)),
        at_search_edge=abs(offset) == K,
        vote_offset=voted,
        vote_share=share,
        offset_method=offset_method,
        p_t=p_t.astype(np.float32),
        onscreen=onscreen,
        profile=profile.astype(np.float32),
    )
