"""Pictures of the sync map: S[t, k] as a heat map, the offset profile and the p_t timeline."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or assumed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from synccurate.sync import ClipMetrics  # noqa: E402


def plot_sync_map(S: np.ndarray, metrics: ClipMetrics, title: str, path: Path) -> Path:
    """Save a three-panel PNG: S over time × offset, mean S per offset, p_t and on-screen."""
    S = np.asarray(S, dtype=np.float32)
    K = (S.shape[1] - 1) // 2
    T = S.shape[0]
    figure, (heat, profile, timeline) = plt.subplots(
        3, 1, figsize=(10, 8), gridspec_kw={"height_ratios": [3, 1.2, 1.2]}, constrained_layout=True
    )
    image = heat.imshow(
        S.T, aspect="auto", origin="lower", cmap="magma", extent=(0, T, -K - 0.5, K + 0.5)
    )
    heat.axhline(metrics.offset_frames, color="cyan", lw=1, ls="--", label="offset")
    heat.set_ylabel("offset k (frames; + = audio leads)")
    heat.set_title(
        f"{title}\noffset {metrics.offset_frames:+d} frames, p at offset "
        f"{metrics.prob_at_offset:.2f}, off-screen {metrics.offscreen_ratio:.0%}"
    )
    figure.colorbar(image, ax=heat, label="cosine similarity")
    offsets = np.arange(-K, K + 1)
    profile.plot(offsets, metrics.profile, marker=".")
    profile.axvline(metrics.offset_frames, color="tab:red", ls="--")
    profile.set_xlabel("offset k (frames)")
    profile.set_ylabel("mean S")
    frames = np.arange(T)
    timeline.plot(frames, metrics.p_t, label="p_t")
    timeline.fill_between(
        frames, 0, 1, where=~metrics.onscreen, color="tab:red", alpha=0.2, label="off-screen"
    )
    timeline.axhline(0.5, color="grey", lw=0.5)
    timeline.set_ylim(0, 1)
    timeline.set_xlim(0, T)
    timeline.set_xlabel("visual window t (frames at 25 fps)")
    timeline.set_ylabel("p_t")
    timeline.legend(loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    figure.savefig(tmp, dpi=100)
    plt.close(figure)
    os.replace(tmp, path)
    return path
