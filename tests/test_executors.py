"""LocalExecutor: a clip that kills its worker process becomes one status row."""

import os
from dataclasses import dataclass

from synccurate.io.inputs import discover
from synccurate.models.icsyncnet import MouthRecipe
from synccurate.pipeline.executors.local import LocalExecutor
from synccurate.pipeline.prepare import PrepareStep
from synccurate.training import synth

CRASH_ABOVE_S = 2.5


@dataclass(frozen=True)
class CrashingRecipe(MouthRecipe):
    """Kills its worker process on a clip longer than CRASH_ABOVE_S (a decoder crash)."""

    def audio_features(self, samples):
        if len(samples) > CRASH_ABOVE_S * 16_000:
            os._exit(1)
        return super().audio_features(samples)


def test_a_crashed_worker_breaks_no_other_clip(tmp_path):
    synth.synth_clip(tmp_path / "a_crasher.mp4", seconds=3.0, seed=7)
    for seed in range(2):
        synth.synth_clip(tmp_path / f"good_{seed}.mp4", seconds=2.0, seed=seed)
    refs = discover([tmp_path])
    recipe = CrashingRecipe(crop_hw=(32, 64))
    clips = list(LocalExecutor(workers=1).run(PrepareStep(recipe, "none", 4), refs))
    statuses = {clip.ref.path: clip.status for clip in clips}
    assert len(clips) == 3  # each clip once: the one in flight with the crasher went again
    assert statuses == {"a_crasher.mp4": "error", "good_0.mp4": "ok", "good_1.mp4": "ok"}
    (crashed,) = [clip for clip in clips if clip.status == "error"]
    assert "a_crasher.mp4: worker failed: " in crashed.error


def test_workers_auto_starts_processes_only_where_they_pay():
    from synccurate.pipeline.run import MAX_WORKERS, POOL_MIN_CLIPS, workers_for

    assert workers_for(None, "none", 9, cpus=2) == 0  # pre-cropped: decoding is cheap
    assert workers_for(None, "centerface", 1, cpus=2) == 0  # one clip: no pool to share
    few, many = POOL_MIN_CLIPS - 1, POOL_MIN_CLIPS
    assert workers_for(None, "centerface", few, cpus=2) == 0  # the pool's start not covered
    assert workers_for(None, "centerface", many, cpus=2) == 2  # detection: one per CPU
    assert workers_for(None, "auto", many, cpus=64) == MAX_WORKERS
    assert workers_for(3, "none", 9, cpus=2) == 3  # asked for: given


def test_workers_option_takes_auto_or_a_count(tmp_path):
    from scoring_cli import run_score

    result = run_score(tmp_path, tmp_path / "out", "--workers", "two")
    assert result.exit_code != 0 and "--workers" in result.output


def test_the_model_leaves_each_local_worker_a_core_and_gets_its_threads_back(monkeypatch):
    import torch

    from synccurate.pipeline.run import _model_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    before = torch.get_num_threads()
    cpu = torch.device("cpu")
    with _model_threads(cpu, LocalExecutor(workers=3)):
        assert torch.get_num_threads() == 5
    assert torch.get_num_threads() == before
    with _model_threads(cpu, LocalExecutor(workers=8)):
        assert torch.get_num_threads() == 1
    with _model_threads(cpu, LocalExecutor(workers=0)):
        assert torch.get_num_threads() == before  # in process: every core is the model's
