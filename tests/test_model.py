"""IC-SyncNet architecture pieces and the checkpoint format."""

import json

import pytest
import torch

from synccurate.models import icsyncnet as M
from synccurate.models import weights


def test_paper_config_is_close_to_40_6_million_parameters():
    count = M.count_parameters(M.ICSyncNet(M.CONFIGS["paper"]))
    assert abs(count - 40.6e6) / 40.6e6 < 0.05


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_embeddings_are_unit_vectors_of_the_configured_size(name):
    config = M.CONFIGS[name]
    net = M.ICSyncNet(config).eval()
    v = net.embed_visual(torch.rand(3, 15, config.crop_height, config.crop_width))
    a = net.embed_audio(torch.randn(3, 1, 80, 32))
    assert v.shape == a.shape == (3, config.embed_dim)
    assert torch.allclose(v.norm(dim=1), torch.ones(3), atol=1e-5)


def test_logits_are_cosine_over_tau_without_a_bias():
    """SPEC §3: p = sigmoid(cos(v, a) / τ), τ stored as log τ, no bias (cos = 0 → p = 0.5)."""
    net = M.ICSyncNet(M.CONFIGS["tiny"])
    with torch.no_grad():
        net.log_tau.fill_(torch.log(torch.tensor(0.25)))
    assert net.tau == pytest.approx(0.25)
    e = torch.eye(4)
    v = torch.stack([e[0], e[0], e[0], (e[0] + e[1]) / 2**0.5])
    a = torch.stack([e[0], -e[0], e[1], e[0]])
    expected = torch.tensor([4.0, -4.0, 0.0, 4.0 / 2**0.5])  # cos / 0.25
    assert torch.allclose(net.logits(v, a), expected, atol=1e-6)
    assert torch.sigmoid(net.logits(v, a))[2] == 0.5


def test_blurpool_halves_and_low_passes():
    pool = M.BlurPool(2)
    x = torch.zeros(1, 2, 8, 8)
    x[..., ::2, :] = 1.0  # a stripe pattern at the Nyquist frequency
    y = pool(x)
    assert y.shape == (1, 2, 4, 4)
    # plain stride-2 sampling would see only ones; the blur averages the stripes away
    assert torch.allclose(y[..., 1:-1, :], torch.full_like(y[..., 1:-1, :], 0.5), atol=1e-6)


def test_dropblock_drops_blocks_only_in_training():
    torch.manual_seed(0)
    drop = M.DropBlock(0.3, 3, volumetric=False)
    x = torch.ones(4, 8, 16, 16)
    drop.eval()
    assert torch.equal(drop(x), x)
    drop.train()
    y = drop(x)
    dropped = (y == 0).float().mean().item()
    assert 0.1 < dropped < 0.5
    assert y.max() > 1  # survivors are rescaled to keep the expected activation


def test_volumetric_dropblock_drops_across_channels():
    torch.manual_seed(0)
    drop = M.DropBlock(0.2, 3, volumetric=True).train()
    y = drop(torch.ones(2, 15, 12, 12))
    zero = y == 0
    # a 3-D block spans neighbouring channels: some zero pixel is zero in the next channel too
    assert (zero[:, :-1] & zero[:, 1:]).any()
    # but not every channel is dropped at a dropped pixel (unlike 2-D blocks broadcast on C)
    assert not (zero.all(dim=1) == zero.any(dim=1)).all()


def test_checkpoint_round_trip_and_checksum(tmp_path):
    net = M.ICSyncNet(M.CONFIGS["tiny"]).eval()
    path = M.save_checkpoint(net, tmp_path / "tiny", {"note": "test"})
    assert path.suffix == ".safetensors" and path.with_suffix(".json").is_file()
    loaded, sidecar = M.load_checkpoint(path)
    assert sidecar["note"] == "test" and sidecar["config"]["name"] == "tiny"
    assert sidecar["model_id"].startswith("tiny@")
    x = torch.rand(2, 15, 32, 64)
    assert torch.allclose(net.embed_visual(x), loaded.embed_visual(x))
    assert loaded.tau == pytest.approx(net.tau)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(M.WeightsError, match="sha256"):
        M.load_checkpoint(path)


def test_missing_sidecar_is_a_clear_error(tmp_path):
    path = M.save_checkpoint(M.ICSyncNet(M.CONFIGS["tiny"]), tmp_path / "w")
    path.with_suffix(".json").unlink()
    with pytest.raises(M.WeightsError, match="missing config"):
        M.load_checkpoint(path)


def test_weights_lookup_order(tmp_path, monkeypatch):
    explicit = M.save_checkpoint(M.ICSyncNet(M.CONFIGS["tiny"]), tmp_path / "a" / "explicit")
    from_env = M.save_checkpoint(M.ICSyncNet(M.CONFIGS["tiny"]), tmp_path / "b" / "env")
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(from_env))
    assert weights.find_weights(explicit) == explicit
    assert weights.find_weights(None) == from_env
    assert weights.find_weights(tmp_path / "a") == explicit  # a folder holding one checkpoint
    with pytest.raises(M.WeightsError, match="not found"):
        weights.find_weights(tmp_path / "nothing.safetensors")
    monkeypatch.delenv(weights.WEIGHTS_ENV)
    monkeypatch.setattr(weights, "REPO_WEIGHTS_DIR", tmp_path / "empty")
    with pytest.raises(M.WeightsError, match="synccurate train"):
        weights.find_weights(None)


def test_sidecar_records_config_and_parameters(tmp_path):
    net = M.ICSyncNet(M.CONFIGS["tiny"])
    path = M.save_checkpoint(net, tmp_path / "w")
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["parameters"] == M.count_parameters(net)
    assert sidecar["config"]["audio_window_mels"] == 32
    assert M.ModelConfig.from_dict(sidecar["config"]) == net.config
