"""`train --init` starts from exactly the given weights; `train` takes what filter / fix made."""

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.io.files import write_table
from synccurate.models.icsyncnet import CONFIGS, ICSyncNet, save_checkpoint
from synccurate.models.weights import find_weights
from synccurate.training import cliplist, synth
from synccurate.training import train as T


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


TINY_RUN = ["--epochs", "1", "--tune-epochs", "0", "--steps-per-epoch", "1", "--batch-size", "4"]
TINY_RUN += ["--hard", "2", "--easy", "2", "--val-fraction", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    synth.synth_dataset(folder, n=4, seconds=1.2, seed=41)
    return folder


@pytest.fixture(scope="module")
def init_weights(tmp_path_factory):
    """A tiny checkpoint with non-default BatchNorm statistics and τ, so a fresh model differs."""
    torch.manual_seed(123)
    net = ICSyncNet(CONFIGS["tiny"])
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
        net.log_tau.fill_(-2.5)
    return save_checkpoint(net, tmp_path_factory.mktemp("init") / "start", {"note": "init"})


class _Recorder:
    """Wraps train._wrap (called once per phase, before the first forward pass and step) to
    record the model's tensors then, and WindowSampler to record the clips trained on."""

    def __init__(self, monkeypatch):
        self.states, self.clips, self.roots = [], [], []
        wrap, sampler = T._wrap, T.WindowSampler

        def recording_wrap(model, device):
            state = model.state_dict()
            self.states.append({k: v.detach().clone() for k, v in state.items()})
            return wrap(model, device)

        recorder = self

        class RecordingSampler(sampler):
            def __init__(self, clips, *args, **kwargs):
                recorder.clips.append(sorted(c.path for c in clips))
                recorder.roots.append({c.root for c in clips})
                super().__init__(clips, *args, **kwargs)

        monkeypatch.setattr(T, "_wrap", recording_wrap)
        monkeypatch.setattr(T, "WindowSampler", RecordingSampler)


def test_init_starts_from_exactly_the_given_tensors(videos, init_weights, tmp_path, monkeypatch):
    recorder = _Recorder(monkeypatch)
    result = _invoke("train", videos, "-o", tmp_path / "run", "--init", init_weights, *TINY_RUN)
    assert result.exit_code == 0, result.output
    start = load_file(str(init_weights))
    (before,) = recorder.states
    assert before.keys() == start.keys()
    for key, value in start.items():  # weights, BatchNorm statistics, log τ: all the init's
        assert torch.equal(before[key], value), key
    final = tmp_path / "run" / "icsyncnet-tiny.safetensors"
    after = load_file(str(final))
    assert any(not torch.equal(after[k], start[k]) for k in start)  # and then it trained
    sidecar = json.loads(final.with_suffix(".json").read_text())
    assert sidecar["init"]["model_id"].startswith("start@")
    assert sidecar["trained_on"]["init"]["model_id"] == sidecar["init"]["model_id"]


def test_init_config_comes_from_the_checkpoint_and_a_conflicting_one_is_refused(
    videos, init_weights, tmp_path
):
    # (a tiny run, so that a regression fails fast instead of training for 600 epochs)
    refused = _invoke(
        "train",
        videos,
        "-o",
        tmp_path / "a",
        "--init",
        init_weights,
        "--config",
        "small",
        *TINY_RUN,
    )
    assert refused.exit_code == 2
    assert "holds the tiny config, not --config small" in refused.output
    assert not (tmp_path / "a").exists()  # refused before any work
    same = _invoke(
        "train", videos, "-o", tmp_path / "b", "--init", init_weights, "--config", "tiny", *TINY_RUN
    )
    assert same.exit_code == 0, same.output
    bundled = _invoke(
        "train",
        videos,
        "-o",
        tmp_path / "c",
        "--init",
        find_weights(),
        "--config",
        "paper",
        *TINY_RUN,
    )
    assert bundled.exit_code == 2 and "holds the small config" in bundled.output
    notes, config = T.init_config(find_weights())
    assert config == CONFIGS["small"] and notes["trained_on"]["data"] == "synthetic"


def _scores_table(folder, kept_names):
    """A scores table of the clips in `folder`: the kept ones pass `filter`, the rest fail."""
    rows = []
    for name in sorted(p.name for p in folder.glob("*.mp4")):
        good = name in kept_names
        rows.append(
            {
                "root": str(folder.resolve()),
                "path": name,
                "status": "ok",
                "offset_frames": 0 if good else 2,
                "prob_at_offset": 0.9 if good else 0.2,
                "offscreen_ratio": 0.0,
                "model": "syncnet-v2@00000000",
            }
        )
    return pd.DataFrame(rows)


def test_train_on_a_filter_output_uses_exactly_the_kept_clips(videos, tmp_path, monkeypatch):
    kept_names = {"clip_00001.mp4", "clip_00003.mp4"}
    scores = write_table(_scores_table(videos, kept_names), tmp_path / "scores.parquet")
    kept = tmp_path / "kept.parquet"
    assert _invoke("filter", scores, "-o", kept).exit_code == 0
    assert set(pd.read_parquet(kept)["path"]) == kept_names
    cache = tmp_path / "cache"
    # a cache that already holds every clip (shared caches only grow) …
    everything = _invoke(
        "train", videos, "-o", tmp_path / "all", "--cache", cache, "--config", "tiny", *TINY_RUN
    )
    assert everything.exit_code == 0, everything.output
    recorder = _Recorder(monkeypatch)
    result = _invoke(
        "train", kept, "-o", tmp_path / "run", "--cache", cache, "--config", "tiny", *TINY_RUN
    )
    assert result.exit_code == 0, result.output
    assert recorder.clips == [sorted(kept_names)]  # … still trains on the kept clips only
    assert recorder.roots == [{str(videos.resolve())}]
    sidecar = json.loads((tmp_path / "run" / "icsyncnet-tiny.json").read_text())
    assert sidecar["trained_clips"] == 2 and sidecar["trained_on"]["clips"] == 2


def test_train_on_an_unfiltered_table_warns_about_its_offsets(videos, tmp_path):
    scores = write_table(_scores_table(videos, {"clip_00000.mp4"}), tmp_path / "scores.parquet")
    result = _invoke(
        "train",
        scores,
        "-o",
        tmp_path / "run",
        "--config",
        "tiny",
        "--epochs",
        "0",
        "--tune-epochs",
        "0",
    )
    assert result.exit_code == 0, result.output
    assert "3 of 4 listed clips have |offset| > 1" in result.output


def test_a_fix_folder_lists_exactly_the_clips_its_log_wrote(videos, tmp_path):
    kept_names = {"clip_00000.mp4", "clip_00002.mp4"}
    scores = write_table(_scores_table(videos, kept_names), tmp_path / "scores.parquet")
    kept = tmp_path / "kept.parquet"
    assert _invoke("filter", scores, "-o", kept).exit_code == 0
    fixed = tmp_path / "fixed"
    result = _invoke("fix", scores, "--only-kept", kept, "--out-dir", fixed)
    assert result.exit_code == 0, result.output
    (fixed / "stray.mp4").write_bytes((videos / "clip_00001.mp4").read_bytes())  # not logged
    listed = cliplist.resolve([fixed])
    assert sorted(c.ref.path for c in listed.clips) == sorted(kept_names)
    assert all(c.offset == 0 and c.ref.file.parent == fixed.resolve() for c in listed.clips)
    from_log = cliplist.resolve([fixed / "fixes.parquet"])
    assert [c.ref for c in from_log.clips] == [c.ref for c in listed.clips]
    from_table = cliplist.resolve([kept])
    assert sorted(c.ref.path for c in from_table.clips) == sorted(kept_names)
    assert cliplist.resolve([videos]).refs == cliplist.resolve([videos, videos]).refs
