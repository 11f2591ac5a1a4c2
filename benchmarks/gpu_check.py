"""Every model kind on the shared fixtures: CUDA (fp16 AMP) against CPU fp32, side by side.

For each model (bundled IC-SyncNet; SyncNet v2 and the Wav2Lip expert from the fixtures'
random-weight files, whose cost and layout are the real models') the three 224² clips of
../shared/fixtures/real are prepared once, then embedded and scored on both sides. Prints
per model: offsets equal, the largest |ΔS|, the largest difference of the clip's number
(prob_at_offset, or LSE-C for SyncNet v2) and windows per second on each side.

    python benchmarks/gpu_check.py              # needs CUDA
    python benchmarks/gpu_check.py --bf16-cpu   # the other side is CPU bfloat16 (--precision bf16)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
CLIPS = ("vox_00015.mp4", "vox_00098.mp4", "vox_00473.mp4")  # the 224² face crops
MODELS = {
    "icsyncnet": None,  # the bundled weights
    "syncnet-v2": FIXTURES / "syncnet_v2" / "syncnet_v2_random.model",
    "wav2lip-expert": FIXTURES / "wav2lip" / "lipsync_expert_random.pth",
}
ROUNDS = 2  # timed rounds per side after one warm-up


def score(model, clips, device: torch.device, precision: str) -> tuple[list[dict], list, float]:
    """Metrics and S of each clip, and windows per second (best of ROUNDS)."""
    from synccurate.pipeline.batching import default_batch_size, similarity_matrices

    model.to(device)
    batch = default_batch_size(model, device)
    windows = sum(clip.n_windows for clip in clips)
    best = float("inf")
    for _ in range(ROUNDS + 1):  # the first round warms up (cuDNN autotuning, allocator)
        start = time.perf_counter()
        matrices = similarity_matrices(model, clips, batch, device, precision=precision)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    matrices = [S.float().cpu() for S in matrices]
    metrics = [model.metrics(S, clip.face_views()[0][1].valid_windows()) for S, clip in
               zip(matrices, clips, strict=True)]  # fmt: skip
    return metrics, matrices, windows / best


def number(metrics: dict) -> float:
    value = metrics.get("prob_at_offset")
    return value if value is not None else metrics["lse_c"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bf16-cpu", action="store_true", help="compare CPU bf16, not CUDA")
    options = parser.parse_args()
    if not options.bf16_cpu and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here (torch.cuda.is_available() is False); run it on a "
                 "GPU node, or with --bf16-cpu to compare CPU bfloat16 with CPU fp32")  # fmt: skip
    missing = [name for name in CLIPS if not (FIXTURES / "real" / name).exists()]
    if missing:
        sys.exit(f"gpu_check: fixtures missing under {FIXTURES / 'real'}: {', '.join(missing)}")
    from synccurate.io.inputs import ClipRef
    from synccurate.models import load_model
    from synccurate.pipeline.prepare import prepare_clips

    other = torch.device("cpu" if options.bf16_cpu else "cuda")
    label = "cpu bf16" if options.bf16_cpu else "cuda fp16"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {label} vs cpu fp32")
    refs = [ClipRef(str(FIXTURES / "real"), name) for name in CLIPS]
    for kind, weights in MODELS.items():
        model = load_model(kind, weights)
        clips = list(prepare_clips(refs, model.recipe, detector_name="none"))
        base, base_S, base_rate = score(model, clips, torch.device("cpu"), "fp32")
        test, test_S, test_rate = score(model, clips, other, "bf16" if options.bf16_cpu else "fp16")
        same = [a["offset_frames"] == b["offset_frames"] for a, b in zip(base, test, strict=True)]
        ds = max(float((a - b).abs().max()) for a, b in zip(base_S, test_S, strict=True))
        dn = max(abs(number(a) - number(b)) for a, b in zip(base, test, strict=True))
        print(
            f"{kind:15s} offsets equal {sum(same)}/{len(same)}  max|dS| {ds:.2e}  "
            f"max|d number| {dn:.2e}  windows/s fp32 {base_rate:7.1f}  {label} {test_rate:7.1f}"
            f"  ({test_rate / base_rate:.2f}x)"
        )
        print("   numbers fp32:", np.round([number(m) for m in base], 4).tolist(),
              f"{label}:", np.round([number(m) for m in test], 4).tolist())  # fmt: skip


if __name__ == "__main__":
    main()
