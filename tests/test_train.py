"""Training pieces: BBCE values, hard/easy negatives, drop-and-tune, resume, torchrun (gloo)."""

import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from synccurate.io import audio
from synccurate.io.inputs import ClipRef
from synccurate.pipeline.prepare import PreparedClip
from synccurate.training import synth
from synccurate.training import train as T


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_bbce_matches_hand_computed_value():
    pos = torch.tensor([2.0])
    hard = torch.tensor([[0.0, 1.0]])
    easy = torch.tensor([[-1.0]])
    lam = 0.2
    expected = 0.5 * (
        -math.log(_sigmoid(2.0))
        - (1 - lam) / 2 * (math.log(1 - _sigmoid(0.0)) + math.log(1 - _sigmoid(1.0)))
        - lam / 1 * math.log(1 - _sigmoid(-1.0))
    )
    assert T.bbce_loss(pos, hard, easy, lam).item() == pytest.approx(expected, rel=1e-6)


def test_bbce_lambda_weights_the_easy_negatives_and_averages_the_batch():
    pos = torch.tensor([0.0, 0.0])
    hard = torch.zeros(2, 3)
    easy = torch.full((2, 4), 5.0)
    # λ = 0: easy negatives do not count at all; ½(log 2 + log 2)
    assert T.bbce_loss(pos, hard, easy, 0.0).item() == pytest.approx(math.log(2))
    # λ = 1: only easy negatives count among the negatives
    expected = 0.5 * (math.log(2) + math.log(1 + math.exp(5.0)))
    assert T.bbce_loss(pos, hard, easy, 1.0).item() == pytest.approx(expected, rel=1e-6)


def test_easy_negatives_come_from_other_runs_only():
    a = torch.eye(6)
    group = torch.tensor([0, 0, 1, 1, 2, 2])
    easy = T.easy_negatives(a, 4, group, torch.Generator().manual_seed(0))
    assert easy.shape == (6, 4, 6)
    for i in range(6):
        picked = {int(row.argmax()) for row in easy[i]}
        assert len(picked) == 4
        assert all(group[j] != group[i] for j in picked)


def test_augment_keeps_shape_and_moves_frames_independently():
    windows = torch.rand(4, 15, 32, 64)
    out = T.augment(windows, torch.Generator().manual_seed(1), jitter=0.05)
    assert out.shape == windows.shape
    assert not torch.allclose(out, windows)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """Six synthetic clips cached as the trainer expects (lower half of the frame, 32 x 64)."""
    import cv2

    cache = tmp_path_factory.mktemp("cache")
    clips = []
    for i in range(6):
        frames, samples, _ = synth.synth_arrays(seconds=2.0, seed=50 + i)
        crops = np.stack(
            [
                cv2.resize(f[f.shape[0] // 2 :], (64, 32), interpolation=cv2.INTER_AREA)
                for f in frames
            ]
        )
        clips.append(
            PreparedClip(
                ClipRef("/synthetic", f"c{i}.mp4"), crops=crops, features=audio.log_mel(samples)
            )
        )
    T._write_shard(cache, 0, clips)
    return cache


def test_sampler_runs_share_audio_and_index_the_right_windows(tiny_cache):
    clips = T.load_cache(tiny_cache)
    assert len(clips) == 6 and clips[0].crops.shape[1:] == (32, 64, 3)
    sampler = T.WindowSampler(clips, n_hard=5, seed=0, run_length=4)
    batch = sampler.batch(8)
    assert batch.visual.shape == (8, 15, 32, 64)
    assert batch.audio.shape == (2 * (4 + 30), 1, 80, 32)  # two runs, one strip each
    assert batch.hard.shape == (8, 5) and batch.group.tolist() == [0] * 4 + [1] * 4
    shifts = batch.hard - batch.positive[:, None]
    assert ((shifts.abs() >= T.HARD_SHIFT_MIN) & (shifts.abs() <= T.HARD_SHIFT_MAX)).all()
    # consecutive positives of a run are consecutive audio windows of its strip
    assert (batch.positive[1:4] - batch.positive[:3] == 1).all()
    # the positive audio window is the clip's own audio window of that visual window
    clip = next(c for c in clips if _window_index(c, batch.visual[0]) is not None)
    t0 = _window_index(clip, batch.visual[0])
    expected = audio.audio_windows(np.asarray(clip.mel, np.float32), t0, 1)[0]
    assert torch.equal(batch.audio[batch.positive[0]], torch.from_numpy(expected))


def test_hard_negatives_are_the_clips_own_windows_shifted_by_2_to_15_frames(tiny_cache):
    """SPEC §4: hard negatives are shifted by s with 2 ≤ |s| ≤ 15 (|s| = 1 is nearly in sync)."""
    clips = T.load_cache(tiny_cache)
    sampler = T.WindowSampler(clips, n_hard=15, seed=3, run_length=4)
    seen: set[int] = set()
    for _ in range(30):
        batch = sampler.batch(8)
        seen |= set((batch.hard - batch.positive[:, None]).flatten().tolist())
    assert seen == set(range(-15, -1)) | set(range(2, 16))
    # each is the audio window of visual window t + s of the same clip
    clip = next(c for c in clips if _window_index(c, batch.visual[0]) is not None)
    t0 = _window_index(clip, batch.visual[0])
    mel = np.asarray(clip.mel, np.float32)
    for index in batch.hard[0].tolist():
        s = index - int(batch.positive[0])
        expected = audio.audio_windows(mel, t0 + s, 1)[0]
        assert torch.equal(batch.audio[index], torch.from_numpy(expected)), s


def _window_index(clip, window):
    from synccurate.models.icsyncnet import stack_windows

    windows = stack_windows(torch.from_numpy(np.array(clip.crops)))
    matches = (windows == window).flatten(1).all(1).nonzero()
    return int(matches[0]) if len(matches) else None


def _settings(epochs, tune):
    return T.TrainSettings(
        epochs=epochs,
        tune_epochs=tune,
        batch_size=8,
        steps_per_epoch=2,
        lr=1e-3,
        n_hard=3,
        n_easy=3,
        val_fraction=0.0,
    )


def test_drop_and_tune_trains_only_batchnorm(tiny_cache, tmp_path):
    device = torch.device("cpu")
    T.train(tiny_cache, tmp_path, "tiny", _settings(1, 0), device=device, log=lambda _: None)
    before = load_file(str(tmp_path / "last.safetensors"))
    final = T.train(
        tiny_cache, tmp_path, "tiny", _settings(1, 1), device=device, log=lambda _: None
    )
    after = load_file(str(tmp_path / "last.safetensors"))
    assert final.is_file()
    bn_keys = [k for k in before if ".norm." in k]
    other = [k for k in before if ".norm." not in k]
    assert bn_keys and other
    for key in other:  # convs, PReLU slopes, heads and log τ: frozen
        assert torch.equal(before[key], after[key]), key
    changed = [k for k in bn_keys if not torch.equal(before[k], after[k])]
    assert any(k.endswith(".weight") for k in changed)
    assert any(k.endswith("running_mean") for k in changed)


def test_resume_continues_after_the_last_epoch(tiny_cache, tmp_path):
    messages = []
    T.train(
        tiny_cache,
        tmp_path,
        "tiny",
        _settings(1, 0),
        device=torch.device("cpu"),
        log=messages.append,
    )
    T.train(
        tiny_cache,
        tmp_path,
        "tiny",
        _settings(2, 0),
        device=torch.device("cpu"),
        log=messages.append,
    )
    assert any("resuming" in m and "epoch 1" in m for m in messages)
    assert sum(m.startswith("epoch 2/2") for m in messages) == 1
    assert not any(m.startswith("epoch 1/2") for m in messages)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_torchrun_completes_an_epoch(tmp_path):
    """DDP over the gloo backend on CPU: the same code path as multi-GPU training."""
    synth.synth_dataset(tmp_path / "videos", n=4, seconds=2.0, seed=3)
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        "-m",
        "synccurate",
        "train",
        str(tmp_path / "videos"),
        "-o",
        str(out),
        "--config",
        "tiny",
        "--epochs",
        "1",
        "--tune-epochs",
        "0",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "8",
        "--hard",
        "2",
        "--easy",
        "2",
        "--val-fraction",
        "0",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "icsyncnet-tiny.safetensors").is_file()
    assert "epoch 1/1" in result.stdout + result.stderr
