"""docs/train-real.md, run end to end: the page's own command block, with tiny settings.

score (SyncNet v2) → filter → fix → train --init → score + filter held-out → eval → score,
on three real fixture clips cut to 0.8 s. The SyncNet v2 weights are the fixture's random
ones: their offsets and LSE-C mean nothing, so the settings keep every clip (MIN_LSE_C=0,
MAX_ABS_OFFSET=15) and fix shifts clips by meaningless amounts. This proves the plumbing —
each step takes what the previous one wrote — not the accuracy of anything.
"""

import json
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest
import torch
from real_fixtures import REAL
from safetensors.torch import load_file
from test_train_inputs import _Recorder
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.io import media
from synccurate.models.icsyncnet import CONFIGS, ICSyncNet, save_checkpoint

DOC = Path(__file__).resolve().parents[1] / "docs" / "train-real.md"
SYNCNET = REAL.parent / "syncnet_v2" / "syncnet_v2_random.model"
CANDIDATES = ("vox_00015.mp4", "vox_00098.mp4")
HELD_OUT = "vox_00473.mp4"
SECONDS = "0.8"  # SyncNet v2 costs ~0.2 s per window on a CPU: keep the clips short


def _fenced(marker: str) -> list[str]:
    """The lines of the ```bash block after `marker` (continuations joined, comments dropped)."""
    text = DOC.read_text()
    start = text.index("```bash\n", text.index(marker)) + len("```bash\n")
    body = text[start : text.index("```", start)].replace("\\\n", " ")
    return [line.strip() for line in body.splitlines() if line.strip() and line[0] != "#"]


def _doc_settings() -> dict[str, str]:
    lines = _fenced("## Settings")
    return dict(line.split("#")[0].strip().split("=", 1) for line in lines)


def _expand(token: str, settings: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: settings[m.group(1)], token)


def test_the_doc_lists_every_setting_its_commands_use():
    used = set(re.findall(r"\$\{?(\w+)\}?", " ".join(_fenced("<!-- recipe: commands"))))
    assert used == set(_doc_settings())
    commands = _fenced("<!-- recipe: commands")
    assert [line.split()[1] for line in commands] == [
        "score", "filter", "fix", "train", "score", "filter", "eval", "score"
    ]  # fmt: skip


def test_the_torchrun_lines_are_step_4_with_another_launcher():
    train = shlex.split(next(c for c in _fenced("<!-- recipe: commands") if " train " in c))
    cache, launched = (shlex.split(line) for line in _fenced("<!-- recipe: torchrun"))
    assert launched[:4] == ["torchrun", "--nproc-per-node", "$GPUS", "-m"]
    assert launched[4:] == train
    first_epoch_option = train.index("--epochs")
    assert cache == train[:first_epoch_option] + ["--epochs", "0", "--tune-epochs", "0"]


@pytest.fixture
def settings(tmp_path):
    missing = [
        p for p in [SYNCNET, *(REAL / n for n in (*CANDIDATES, HELD_OUT))] if not p.is_file()
    ]
    if missing:
        pytest.skip(f"fixture files not found: {', '.join(map(str, missing))}")
    for folder, names in (("clips", CANDIDATES), ("heldout", (HELD_OUT,))):
        (tmp_path / folder).mkdir()
        for name in names:  # a cut without re-encoding; never copied into the repository
            media.run_ffmpeg(
                ["-i", str(REAL / name), "-t", SECONDS, "-c", "copy"]
                + [str(tmp_path / folder / name)]
            )
    torch.manual_seed(0)
    init = save_checkpoint(
        ICSyncNet(CONFIGS["tiny"]),
        tmp_path / "init" / "start",
        {"trained_on": {"data": "synthetic", "description": "a test stand-in"}},
    )
    values = {
        "CLIPS": tmp_path / "clips",
        "HELDOUT": tmp_path / "heldout",
        "SYNCNET": SYNCNET,
        "DETECTOR": "none",
        "WORKERS": 0,  # no worker processes to start
        "MIN_LSE_C": 0,  # random SyncNet v2 weights: keep every clip
        "MAX_ABS_OFFSET": 15,
        "CONFIG": "tiny",
        "INIT": init,
        "EPOCHS": 1,
        "TUNE_EPOCHS": 1,
        "STEPS": 2,
        "BATCH": 8,
        "LR": 1e-3,
        "VAL_FRACTION": 0,
        "WORK": tmp_path / "work",
    }
    return {k: str(v) for k, v in values.items()}


def test_the_recipe_runs_end_to_end(settings, monkeypatch):
    assert set(settings) == set(_doc_settings())
    recorder = _Recorder(monkeypatch)
    outputs = []
    for line in _fenced("<!-- recipe: commands"):
        words = [_expand(token, settings) for token in shlex.split(line)]
        assert words[0] == "synccurate"
        result = CliRunner().invoke(app, words[1:])
        assert result.exit_code == 0, f"{line}\n{result.output}"
        outputs.append(result.output)
    work = Path(settings["WORK"])
    v2 = pd.read_parquet(work / "v2.parquet")
    assert (v2["status"] == "ok").all() and v2["model"].str.startswith("syncnet-v2@").all()
    assert (v2["weights_trained_on"] == "real").all() and not v2["synthetic_weights_on_real"].any()
    assert sorted(pd.read_parquet(work / "kept.parquet")["path"]) == sorted(CANDIDATES)
    fixed = sorted(p.name for p in (work / "fixed").glob("*.mp4"))
    assert fixed == sorted(CANDIDATES)
    # train: exactly the fixed clips, from exactly the init's tensors
    assert recorder.clips == [sorted(CANDIDATES)]
    assert recorder.roots == [{str((work / "fixed").resolve())}]  # the fixed copies
    start = load_file(settings["INIT"])
    assert all(torch.equal(recorder.states[0][k], v) for k, v in start.items())
    weights = work / "train" / "icsyncnet-tiny.safetensors"
    sidecar = json.loads(weights.with_suffix(".json").read_text())
    assert sidecar["trained_on"]["data"] == "real" and sidecar["trained_on"]["real_clips"] == 2
    assert sidecar["init"]["model_id"].startswith("start@")
    results = json.loads((work / "eval.json").read_text())
    assert results["n_clips"] == 1 and results["shifts"] == [-8, -3, 0, 4, 9]
    assert results["weights_trained_on"] == "real"
    final = pd.read_parquet(work / "ic-heldout.parquet")
    assert final["model"].str.startswith("icsyncnet-tiny@").all()
    assert final["weights_trained_on"].tolist() == ["real"]
    assert not any("WARNING" in output for output in outputs)
