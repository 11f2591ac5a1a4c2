"""`--executor ray`: same rows as the local executor, resume after SIGKILL, crashing workers."""

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.io.inputs import discover
from synccurate.models.icsyncnet import (
    CONFIGS,
    ICSyncNet,
    ICSyncNetModel,
    MouthRecipe,
    save_checkpoint,
)
from synccurate.pipeline.driver import score_clips
from synccurate.pipeline.executors import make_executor
from synccurate.training import synth

try:
    import ray
except ImportError:
    ray = None
needs_ray = pytest.mark.skipif(
    ray is None, reason="ray is not installed (pip install 'synccurate[ray]')"
)

CRASH_ABOVE_S = 2.5  # the crashing recipe kills its worker on a clip longer than this


def test_without_ray_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    monkeypatch.delitem(sys.modules, "synccurate.pipeline.executors.ray", raising=False)
    with pytest.raises(ImportError) as error:
        make_executor("ray", workers=2)
    assert str(error.value) == ("--executor ray needs the ray extra: pip install 'synccurate[ray]'")


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    # The crashing recipe below lives in this test module, which Ray workers cannot import.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(ICSyncNet(CONFIGS["tiny"]), tmp_path_factory.mktemp("w") / "tiny")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    for seed in range(3):
        synth.synth_clip(folder / f"good_{seed}.mp4", seconds=2.0, seed=seed, offset_frames=seed)
    (folder / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    return folder


def _score(folder, out, weights, *extra) -> list[str]:
    return [
        "score",
        str(folder),
        "-o",
        str(out),
        "--weights",
        str(weights),
        "--face-detector",
        "none",
        "--no-progress",
        *extra,
    ]


@needs_ray
def test_ray_gives_the_same_rows_as_local(ray_cluster, clips, tiny_weights, tmp_path):
    tables = {}
    for name, workers in (("local", "0"), ("ray", "2")):
        out = tmp_path / name
        args = _score(clips, out, tiny_weights, "--executor", name, "--workers", workers)
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        tables[name] = pd.read_parquet(out).sort_values("path").reset_index(drop=True)
    local, on_ray = tables["local"], tables["ray"]
    assert list(on_ray["path"]) == ["broken.mp4", "good_0.mp4", "good_1.mp4", "good_2.mp4"]
    for column in ("path", "status", "error", "n_frames", "offset_frames", "face_ratio"):
        assert on_ray[column].equals(local[column]), column
    for a, b in zip(on_ray["profile"], local["profile"], strict=True):
        if a is None or b is None:
            assert a is None and b is None
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(on_ray["prob_at_offset"], local["prob_at_offset"], rtol=1e-5)


@dataclass(frozen=True)
class CrashingRecipe(MouthRecipe):
    """Kills its worker process on a long clip: a decoder crash, as seen by the executor."""

    def audio_features(self, samples):
        if len(samples) > CRASH_ABOVE_S * 16_000:
            os._exit(1)
        return super().audio_features(samples)


class Rows:
    def __init__(self):
        self.rows = []

    def add(self, row):
        self.rows.append(row)


@needs_ray
def test_a_clip_that_kills_its_worker_becomes_a_status_row(
    ray_cluster, clips, tiny_weights, tmp_path
):
    folder = tmp_path / "with_crasher"
    folder.mkdir()
    for clip in clips.glob("*.mp4"):
        (folder / clip.name).symlink_to(clip)
    synth.synth_clip(folder / "crasher.mp4", seconds=3.0, seed=7)
    model = ICSyncNetModel.load(tiny_weights)
    model.recipe = CrashingRecipe(crop_hw=model.recipe.crop_hw)
    rows = Rows()
    refs = discover([folder])
    score_clips(
        refs,
        rows,
        model,
        device=torch.device("cpu"),
        executor=make_executor("ray", workers=1),  # the clip queued behind the crasher goes again
        detector_name="none",
    )
    statuses = {row["path"]: row["status"] for row in rows.rows}
    assert len(rows.rows) == len(refs) == 5  # every clip once, none twice
    assert statuses == {
        "broken.mp4": "decode_error",
        "crasher.mp4": "error",
        "good_0.mp4": "ok",
        "good_1.mp4": "ok",
        "good_2.mp4": "ok",
    }
    (crashed,) = [row for row in rows.rows if row["path"] == "crasher.mp4"]
    assert "crasher.mp4: worker failed: " in crashed["error"]


def _published_parts(folder) -> list:
    return [p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_"))]


@needs_ray
def test_killed_ray_run_resumes_with_every_clip_exactly_once(ray_cluster, tiny_weights, tmp_path):
    """The driver joins the test's cluster (`--ray-address`): no second cluster to start."""
    folder = tmp_path / "clips"
    synth.synth_dataset(folder, n=6, seconds=2.0, seed=9, workers=2)
    out = tmp_path / "scores"
    command = [sys.executable, "-m", "synccurate"] + _score(
        folder, out, tiny_weights, "--executor", "ray", "--workers", "1"
    )
    address = ray.get_runtime_context().gcs_address
    command += ["--ray-address", address, "--batch-size", "8", "--part-seconds", "0"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    deadline = time.monotonic() + 120
    while not _published_parts(out) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = pd.read_parquet(out)
    assert 1 <= len(partial) < 6
    first_run = set(partial["run_id"])
    subprocess.run(command, check=True, capture_output=True, timeout=300, env=env)
    table = pd.read_parquet(out)
    assert len(table) == 6 and table["path"].is_unique
    assert set(table["path"]) == {f"clip_{i:05d}.mp4" for i in range(6)}
    assert (table["run_id"].isin(first_run)).sum() == len(partial)
