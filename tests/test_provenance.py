"""Honest weights: what weights were trained on, synth tags, and the warning / refusal path.

Synthetic-only weights (the bundled ones) on a clip that is not a `synccurate synth` clip give
meaningless numbers: score / plot / eval warn and record it, filter / fix / train refuse the
table unless --allow-synthetic-weights; synth clips and tables of them pass as before.
"""

import json

import pandas as pd
import pytest
import torch
from real_fixtures import REAL
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.io import media
from synccurate.models import load_model, provenance
from synccurate.models.icsyncnet import CONFIGS, ICSyncNet, save_checkpoint
from synccurate.models.weights import find_weights
from synccurate.training import synth

WARNING = "WARNING: icsyncnet-small@"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """One synth clip (tagged) and the same clip re-muxed without its tags (a "real" clip)."""
    folder = tmp_path_factory.mktemp("clips")
    synth.synth_clip(folder / "synthetic.mp4", seconds=2.0, seed=5, offset_frames=3)
    media.run_ffmpeg(
        ["-i", str(folder / "synthetic.mp4"), "-map_metadata", "-1", "-c", "copy"]
        + [str(folder / "untagged.mp4")]
    )
    return folder


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _score(paths, out, *extra):
    args = ["score", *paths, "-o", out, "--workers", "0", "--no-progress"]
    result = _invoke(*args, "--face-detector", "none", *extra)
    assert result.exit_code == 0, result.output
    return result


def test_synth_tags_its_clips_and_probe_reads_the_tag(clips):
    assert media.probe(clips / "synthetic.mp4").is_synth
    assert media.is_synth_file(clips / "synthetic.mp4") is True
    assert not media.probe(clips / "untagged.mp4").is_synth
    assert media.is_synth_file(clips / "untagged.mp4") is False
    assert media.is_synth_file(clips / "missing.mp4") is None


def test_fix_keeps_the_synth_tag(clips, tmp_path):
    from synccurate.curate.fix import fix_clip

    fix_clip(clips / "synthetic.mp4", tmp_path / "fixed.mp4", 3)
    assert media.probe(tmp_path / "fixed.mp4").is_synth


def test_models_say_what_they_were_trained_on(tmp_path):
    assert load_model().trained_on["data"] == provenance.SYNTHETIC  # the bundled weights
    sidecar = json.loads(find_weights().with_suffix(".json").read_text())
    assert sidecar["trained_on"]["data"] == "synthetic"
    plain = save_checkpoint(ICSyncNet(CONFIGS["tiny"]), tmp_path / "plain")
    assert load_model(None, plain).trained_on["data"] == provenance.UNKNOWN  # no field
    v2 = REAL.parent / "syncnet_v2" / "syncnet_v2_random.model"
    if v2.is_file():
        found = load_model("syncnet-v2", v2).trained_on
        assert found["data"] == provenance.REAL and "assumed" in found["basis"]


def test_score_warns_and_records_synthetic_weights_on_a_non_synth_clip(clips, tmp_path):
    out = tmp_path / "scores.parquet"
    result = _score([clips], out)
    # one line before the run, one in the summary
    assert result.output.count(WARNING) == 2, result.output
    assert result.output.index(WARNING) < result.output.index("scored 2 clips")
    assert "1 of 2 clips" in result.output
    table = pd.read_parquet(out).set_index("path")
    assert (table["weights_trained_on"] == "synthetic").all()
    assert bool(table.loc["untagged.mp4", "synthetic_weights_on_real"]) is True
    assert bool(table.loc["synthetic.mp4", "synthetic_weights_on_real"]) is False
    # filter and fix refuse such a table in one line, unless allowed
    kept = tmp_path / "kept.parquet"
    refused = _invoke("filter", out, "-o", kept)
    assert refused.exit_code == 2 and not kept.exists()
    assert "--allow-synthetic-weights" in refused.output and "1 of 2 clips" in refused.output
    assert _invoke("filter", out, "-o", kept, "--allow-synthetic-weights").exit_code == 0
    assert kept.exists()
    refused = _invoke("fix", out, "--out-dir", tmp_path / "fixed")
    assert refused.exit_code == 2 and "--allow-synthetic-weights" in refused.output
    assert not (tmp_path / "fixed").exists()
    allowed = _invoke("fix", out, "--out-dir", tmp_path / "fixed", "--allow-synthetic-weights")
    assert allowed.exit_code == 0, allowed.output
    refused = _invoke("train", out, "-o", tmp_path / "run", "--epochs", "0", "--tune-epochs", "0")
    assert refused.exit_code == 2 and "--allow-synthetic-weights" in refused.output


def test_synth_clips_change_nothing(clips, tmp_path):
    out = tmp_path / "scores.parquet"
    result = _score([clips / "synthetic.mp4"], out)
    assert "WARNING" not in result.output
    table = pd.read_parquet(out)
    assert not table["synthetic_weights_on_real"].any()
    filtered = _invoke("filter", out, "-o", tmp_path / "kept.parquet")
    assert filtered.exit_code == 0, filtered.output
    assert "WARNING" not in filtered.output


def test_weights_with_real_or_unknown_training_never_warn(clips, tmp_path):
    weights = save_checkpoint(ICSyncNet(CONFIGS["tiny"]), tmp_path / "tiny")
    out = tmp_path / "scores.parquet"
    result = _score([clips / "untagged.mp4"], out, "--weights", weights)
    assert "WARNING" not in result.output
    table = pd.read_parquet(out)
    assert table["weights_trained_on"].tolist() == ["unknown"]
    assert table["synthetic_weights_on_real"].tolist() == [False]
    assert _invoke("filter", out, "-o", tmp_path / "kept.parquet").exit_code == 0


def test_real_fixture_clip_with_the_bundled_weights_warns(tmp_path):
    clip = REAL / "vox_00473.mp4"
    if not clip.is_file():
        pytest.skip(f"real test clips not found at {REAL}")
    out = tmp_path / "scores.parquet"
    result = _score([clip], out)
    assert result.output.count(WARNING) == 2
    assert pd.read_parquet(out)["synthetic_weights_on_real"].tolist() == [True]


def test_plot_and_eval_warn_too(clips, tmp_path):
    plotted = _invoke("plot", clips / "untagged.mp4", "-o", tmp_path, "--face-detector", "none")
    assert plotted.exit_code == 0, plotted.output
    assert plotted.output.count(WARNING) == 2 and "meaningless" in plotted.output
    out = tmp_path / "eval.json"
    evaluated = _invoke("eval", clips, "--shifts", "0", "-o", out)
    assert evaluated.exit_code == 0, evaluated.output
    assert evaluated.output.count(WARNING) == 2
    results = json.loads(out.read_text())
    assert results["weights_trained_on"] == "synthetic"
    assert results["synthetic_weights_on_real"] is True and results["non_synth_clips"] == 1
    quiet = _invoke("eval", clips / "synthetic.mp4", "--shifts", "0", "-o", out)
    assert quiet.exit_code == 0 and "WARNING" not in quiet.output
    assert json.loads(out.read_text())["synthetic_weights_on_real"] is False


def test_training_record_says_synthetic_only_when_every_clip_and_the_init_are():
    record = provenance.training_record
    assert record([True, True])["data"] == "synthetic"
    assert record([True, False])["data"] == "real"
    assert record([True, False])["real_clips"] == 1
    assert record([True, None])["data"] == "unknown"
    synthetic_init = {"model_id": "a@1", "trained_on": {"data": "synthetic"}}
    real_init = {"model_id": "b@2", "trained_on": {"data": "real"}}
    assert record([True], synthetic_init)["data"] == "synthetic"
    assert record([True], real_init)["data"] == "real"
    assert record([False], synthetic_init)["data"] == "real"
    assert record([True], {"model_id": "c@3"})["data"] == "unknown"


def test_train_writes_trained_on_from_the_clips(clips, tmp_path):
    from synccurate.training import train as T

    settings = T.TrainSettings(
        epochs=1, tune_epochs=0, batch_size=4, steps_per_epoch=1, n_hard=2, n_easy=2
    )
    settings.val_fraction = 0.0
    for name, expected in (("synthetic.mp4", "synthetic"), ("untagged.mp4", "real")):
        cache, out = tmp_path / f"cache_{name}", tmp_path / f"run_{name}"
        T.build_cache([clips / name], cache, CONFIGS["tiny"], log=lambda _: None)
        torch.manual_seed(0)
        final = T.train(cache, out, "tiny", settings, device=torch.device("cpu"), log=print)
        sidecar = json.loads(final.with_suffix(".json").read_text())
        assert sidecar["trained_on"]["data"] == expected, sidecar["trained_on"]
        assert sidecar["trained_on"]["clips"] == 1
        assert load_model(None, final).trained_on["data"] == expected
        last = json.loads((out / "last.json").read_text())
        assert last["trained_on"]["data"] == expected
