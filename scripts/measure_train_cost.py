"""Measure what a training step costs per config, for docs/train-real.md.

For each config: the FLOPs of one training step (forward + backward, counted by torch's
FlopCounterMode on a real batch from WindowSampler: visual windows, the shared audio strips,
hard and easy negatives) and the wall time of steps of `synccurate.training.train.train` on this
machine's CPU (an epoch of N steps, timed from the end of epoch 1 to the end of epoch 2, so
start-up and the cache are excluded; validation off). Prints one JSON line per config.

    OMP_NUM_THREADS=2 python scripts/measure_train_cost.py [--configs tiny small paper]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from synccurate.io import audio
from synccurate.io.inputs import ClipRef
from synccurate.models.icsyncnet import CONFIGS, ICSyncNet
from synccurate.models.weights import count_parameters
from synccurate.pipeline.prepare import PreparedClip
from synccurate.training import synth
from synccurate.training import train as T

PLAN = {  # config: (batch size, steps per timed epoch)
    "tiny": (64, 10),
    "small": (64, 10),
    "paper": (16, 2),
}


def _cache(folder: Path, config) -> Path:
    """Eight synthetic clips of 4 s cached at the config's crop size."""
    clips = []
    for i in range(8):
        frames, samples, _ = synth.synth_arrays(seconds=4.0, seed=900 + i, size=128)
        size = (config.crop_width, config.crop_height)
        crops = np.stack([cv2.resize(f[f.shape[0] // 2 :], size) for f in frames])
        clips.append(
            PreparedClip(ClipRef("/x", f"c{i}.mp4"), crops=crops, features=audio.log_mel(samples))
        )
    cache = folder / f"cache_{config.name}"
    T._write_shard(cache, 0, clips)
    return cache


def step_flops(config, cache: Path, batch: int) -> float:
    """FLOPs of one training step (forward + backward) on a sampled batch."""
    model = ICSyncNet(config)
    sampler = T.WindowSampler(T.load_cache(cache), 15, seed=0)
    b = sampler.batch(batch)
    with FlopCounterMode(display=False) as counter:
        v = model.embed_visual(b.visual)
        a = model.embed_audio(b.audio)
        a_pos, a_hard = a[b.positive], a[b.hard]
        a_easy = T.easy_negatives(a_pos, 15, b.group, torch.Generator().manual_seed(0))
        scale = model.log_tau.exp()
        loss = T.bbce_loss(
            (v * a_pos).sum(-1) / scale,
            (v[:, None] * a_hard).sum(-1) / scale,
            (v[:, None] * a_easy).sum(-1) / scale,
            0.1,
        )
        loss.backward()
    return float(counter.get_total_flops()), len(b.audio)


def step_seconds(config, cache: Path, batch: int, steps: int, out: Path) -> float:
    marks = []

    def log(message: str) -> None:
        if message.startswith("epoch "):
            marks.append(time.perf_counter())

    settings = T.TrainSettings(
        epochs=2, tune_epochs=0, batch_size=batch, steps_per_epoch=steps, lr=1e-4, val_fraction=0
    )
    T.train(cache, out, config, settings, device=torch.device("cpu"), resume=False, log=log)
    return (marks[1] - marks[0]) / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", nargs="+", default=list(PLAN))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            config = CONFIGS[name]
            batch, steps = PLAN[name]
            cache = _cache(Path(tmp), config)
            flops, n_audio = step_flops(config, cache, batch)
            seconds = step_seconds(config, cache, batch, steps, Path(tmp) / f"run_{name}")
            print(
                json.dumps(
                    {
                        "config": name,
                        "parameters": count_parameters(ICSyncNet(config)),
                        "batch": batch,
                        "audio_windows_per_batch": n_audio,
                        "gflop_per_step": round(flops / 1e9, 2),
                        "gflop_per_sample": round(flops / 1e9 / batch, 3),
                        "cpu_seconds_per_step": round(seconds, 3),
                        "cpu_ms_per_sample": round(1000 * seconds / batch, 2),
                        "achieved_gflop_per_s": round(flops / 1e9 / seconds, 1),
                        "omp_threads": os.environ.get("OMP_NUM_THREADS", "default"),
                        "torch_threads": torch.get_num_threads(),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
