"""Pictures of the sync map: S[t, k] as a heat map, the offset profile and the p_t timeline."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or assumed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from synccurate.io.audio import VIDEO_FPS  # noqa: E402

MS_PER_FRAME = 1000 / VIDEO_FPS  # 40 ms


def _title(title: str, metrics: dict) -> str:
    parts = [f"offset {metrics['offset_frames']:+d} frames"]
    if metrics.get("prob_at_offset") is not None:
        parts.append(f"p at offset {metrics['prob_at_offset']:.2f}")
    if metrics.get("offscreen_ratio") is not None:
        parts.append(f"off-screen {metrics['offscreen_ratio']:.0%}")
    if metrics.get("lse_c") is not None:
        parts.append(f"LSE-C {metrics['lse_c']:.2f}, LSE-D {metrics['lse_d']:.2f}")
    return f"{title}\n" + ", ".join(parts)


def _timeline(axes, metrics: dict, T: int) -> None:
    """p_t with the off-screen stretches (probability models), else v2's frame-wise confidence."""
    frames = np.arange(T)
    if metrics.get("p_t") is not None:
        axes.plot(frames, metrics["p_t"], label="p_t")
        onscreen = np.asarray(metrics["onscreen"], dtype=bool)
        axes.fill_between(
            frames, 0, 1, where=~onscreen, color="tab:red", alpha=0.2, label="off-screen"
        )
        axes.axhline(0.5, color="grey", lw=0.5)
        axes.set_ylim(0, 1)
        axes.set_ylabel("p_t")
    else:
        axes.plot(frames, metrics["fconf"], label="frame-wise confidence (median of 9)")
        axes.axhline(0.0, color="grey", lw=0.5)
        axes.set_ylabel("confidence")
    axes.set_xlim(0, T)
    axes.set_xlabel("visual window t (frames at 25 fps)")
    axes.legend(loc="lower right")


def _offset_over_time(heat, metrics: dict, stretches: list[dict]) -> None:
    """The stretch offsets on the sync map (a step per stretch) and the drift line."""
    scored = [s for s in stretches if s.get("offset_frames") is not None]
    for i, stretch in enumerate(scored):
        start, end = stretch["start_s"] * VIDEO_FPS, stretch["end_s"] * VIDEO_FPS
        offset = stretch.get("offset_fine", stretch["offset_frames"])
        label = "offset per stretch" if i == 0 else None
        heat.plot([start, end], [offset, offset], color="lime", lw=2, label=label)
    if metrics.get("drift_ms_per_min") is not None and scored:
        seconds = np.array([scored[0]["start_s"], scored[-1]["end_s"]])
        line_ms = metrics["offset_start_ms"] + metrics["drift_ms_per_min"] * seconds / 60
        drift = f"drift {metrics['drift_ms_per_min']:+.1f} ms/min"
        heat.plot(seconds * VIDEO_FPS, line_ms / MS_PER_FRAME, color="white", ls=":", label=drift)
    heat.legend(loc="upper right", fontsize="small")


def plot_sync_map(
    S: np.ndarray, metrics: dict, title: str, path: Path, stretches: list[dict] | None = None
) -> Path:
    """Save a three-panel PNG: S over time × offset, mean S per offset, and a timeline.

    `metrics` holds the table's columns for the clip (the model's `metrics`), so the
    picture shows exactly the numbers `score` writes; `stretches` (its timeline) draws the
    offset over time on the map.
    """
    S = np.asarray(S, dtype=np.float32)
    K = (S.shape[1] - 1) // 2
    T = S.shape[0]
    distance = metrics.get("lse_d") is not None
    figure, (heat, profile, timeline) = plt.subplots(
        3, 1, figsize=(10, 8), gridspec_kw={"height_ratios": [3, 1.2, 1.2]}, constrained_layout=True
    )
    image = heat.imshow(
        S.T, aspect="auto", origin="lower", cmap="magma", extent=(0, T, -K - 0.5, K + 0.5)
    )
    heat.axhline(metrics["offset_frames"], color="cyan", lw=1, ls="--", label="offset")
    heat.set_ylabel("offset k (frames; + = audio leads)")
    heat.set_title(_title(title, metrics))
    if stretches:
        _offset_over_time(heat, metrics, stretches)
    label = "minus L2 distance" if distance else "cosine similarity"
    figure.colorbar(image, ax=heat, label=label)
    offsets = np.arange(-K, K + 1)
    profile.plot(offsets, metrics["profile"], marker=".")
    profile.axvline(metrics["offset_frames"], color="tab:red", ls="--")
    profile.set_xlabel("offset k (frames)")
    profile.set_ylabel("mean S")
    _timeline(timeline, metrics, T)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    figure.savefig(tmp, dpi=100)
    plt.close(figure)
    os.replace(tmp, path)
    return path
