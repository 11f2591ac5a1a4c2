"""SyncNet v2 and Wav2Lip expert against upstream's goldens (SYNCNET-FAMILY.md §E), and
checkpoint safety: nothing in a checkpoint is ever executed, imports are checksummed."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from synccurate.io import audio
from synccurate.models import checkpoints, syncnet_v2, wav2lip
from synccurate.models.weights import WeightsError

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
V2_WEIGHTS = FIXTURES / "syncnet_v2" / "syncnet_v2_random.model"
V2_GOLDEN = FIXTURES / "syncnet_v2" / "golden_vox_00015.npz"
W2L_WEIGHTS = FIXTURES / "wav2lip" / "lipsync_expert_random.pth"
W2L_GOLDEN = FIXTURES / "wav2lip" / "golden_vox_00015.npz"
ICSYNCNET_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "icsyncnet-small.safetensors"


def _need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(
            f"parity fixture not found at {path} (internal test material, never in the repo)"
        )
    return path


def _assert_close_raw(a: torch.Tensor | np.ndarray, b: np.ndarray) -> None:
    """§E tolerance for unnormalised embeddings: max|a − b| ≤ 1e-5 · max(1, max|b|)."""
    a = np.asarray(a)
    assert np.abs(b).max() > 0, "golden embeddings are all zero"
    assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(b).max())


@pytest.fixture(scope="module", autouse=True)
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the machine's cores are shared
    with torch.no_grad():  # inference only, as the goldens were made
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def v2_golden() -> dict:
    return dict(np.load(_need(V2_GOLDEN)))


@pytest.fixture(scope="module")
def v2_net() -> syncnet_v2.SyncNetV2Net:
    return checkpoints.load_network(_need(V2_WEIGHTS))[1]


@pytest.fixture(scope="module")
def w2l_golden() -> dict:
    return dict(np.load(_need(W2L_GOLDEN)))


@pytest.fixture(scope="module")
def w2l_net() -> wav2lip.Wav2LipExpertNet:
    return checkpoints.load_network(_need(W2L_WEIGHTS))[1]


def _v2_audio(net, golden: dict, n: int = 4) -> torch.Tensor:
    return net.forward_aud(torch.from_numpy(syncnet_v2.audio_windows(golden["mfcc"], 0, n)))


def _w2l_embeddings(net, golden: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return net(torch.from_numpy(golden["mel_windows"]), torch.from_numpy(golden["face_windows"]))


# --- SyncNet v2 ---


def test_v2_checkpoint_variants_load_one_to_one(tmp_path, v2_net, v2_golden):
    kind, state, _ = checkpoints.read_state_dict(V2_WEIGHTS)
    assert (kind, len(state)) == ("syncnet-v2", 102)
    assert {k: v.shape for k, v in v2_net.state_dict().items()} == {
        k: v.shape for k, v in state.items()
    }
    assert v2_net.netfcaud[3].out_features == 1024
    without_counters = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert len(without_counters) == 88
    torch.save(without_counters, tmp_path / "88.model")
    torch.save(state, tmp_path / "legacy.model", _use_new_zipfile_serialization=False)
    expected = _v2_audio(v2_net, v2_golden)
    for name in ("88.model", "legacy.model"):
        kind, net, info = checkpoints.load_network(tmp_path / name)
        assert kind == "syncnet-v2" and info["parameters"] == 13_631_616
        torch.testing.assert_close(_v2_audio(net, v2_golden), expected, rtol=0, atol=0)


def test_v2_audio_embeddings_match_golden(v2_net, v2_golden):
    n = syncnet_v2.n_windows(int(v2_golden["n_frames"]), len(v2_golden["wav_int16"]))
    assert n == int(v2_golden["n_windows"]) == len(v2_golden["aud_emb"])
    windows = syncnet_v2.audio_windows(v2_golden["mfcc"], 0, n)
    _assert_close_raw(v2_net.forward_aud(torch.from_numpy(windows)), v2_golden["aud_emb"])


def test_v2_lip_embeddings_match_golden(v2_net, v2_golden):
    windows = torch.from_numpy(syncnet_v2.lip_windows(v2_golden["frames_bgr_first9"], 0, 5))
    _assert_close_raw(v2_net.forward_lip(windows), v2_golden["lip_emb"][:5])
    assert v2_net.forward_lipfeat(windows).shape == (5, 512)


def test_v2_scoring_matches_golden(v2_golden):
    dists = syncnet_v2.distance_matrix(
        torch.from_numpy(v2_golden["lip_emb"]), torch.from_numpy(v2_golden["aud_emb"])
    )
    np.testing.assert_allclose(dists.numpy(), v2_golden["dists"], rtol=1e-6, atol=0)
    summary = syncnet_v2.v2_summary(dists)
    assert summary["offset"] == int(v2_golden["offset"])
    for key in ("mdist", "min_dist"):  # float32 means of distances near 7
        np.testing.assert_allclose(summary[key], v2_golden[key], rtol=1e-6, err_msg=key)
    for key in ("conf", "fconf"):  # differences of such means: round-off is absolute
        np.testing.assert_allclose(summary[key], v2_golden[key], rtol=0, atol=1e-5, err_msg=key)


def test_v2_mfcc_matches_golden_on_int16_scale_only(v2_golden):
    samples = v2_golden["wav_int16"]
    features = syncnet_v2.mfcc(samples)
    assert features.dtype == np.float64
    assert features.shape == (13, 1 + math.ceil((len(samples) - 400) / 160))
    assert np.abs(features - v2_golden["mfcc"]).max() <= 1e-8
    assert np.abs(syncnet_v2.mfcc(samples / 32768.0) - v2_golden["mfcc"]).max() > 1.0


def test_v2_window_arithmetic():
    columns = np.arange(13 * 40, dtype=np.float64).reshape(13, 40)  # windows 0…5 fit
    windows = syncnet_v2.audio_windows(columns, -1, 8)  # windows -1 … 6
    assert windows.shape == (8, 1, 13, 20) and windows.dtype == np.float32
    np.testing.assert_array_equal(windows[3, 0], columns[:, 8:28])  # window 2: columns 8…27
    np.testing.assert_array_equal(windows[6, 0], columns[:, 20:40])  # window 5, the last
    assert not windows[0].any() and not windows[7].any()  # windows -1 and 6 are zeros
    assert syncnet_v2.n_windows(100, 640 * 50 + 639) == 45
    assert syncnet_v2.n_windows(3, 10**6) == 0
    frames = np.zeros((7, 224, 224, 3), dtype=np.uint8)
    frames[:, 0, 0] = np.arange(7)[:, None] * [1, 10, 30]  # frame t: B = t, G = 10t, R = 30t
    lips = syncnet_v2.lip_windows(frames, 1, 3)  # windows 1 and 2
    assert lips.shape == (2, 3, 5, 224, 224) and lips.dtype == np.float32
    t = np.arange(2, 7)  # window 2 stacks frames 2…6 along time, channels stay B, G, R
    np.testing.assert_array_equal(lips[1, :, :, 0, 0], [t, 10 * t, 30 * t])
    with pytest.raises(ValueError, match="frames"):
        syncnet_v2.lip_windows(frames, 0, 4)


def test_v2_rejects_wrong_input_sizes(v2_net):
    with pytest.raises(ValueError, match="224"):
        v2_net.forward_lip(torch.zeros(1, 3, 5, 112, 112))
    with pytest.raises(ValueError, match="13×20"):
        v2_net.forward_aud(torch.zeros(1, 1, 13, 21))


def _reference_scores(V: np.ndarray, A: np.ndarray, K: int) -> tuple[np.ndarray, float, np.ndarray]:
    """§A.5 written out loop by loop in float64: d, conf and the zero-padded medfilt(9)."""
    n, width = V.shape
    d = np.empty((n, 2 * K + 1))
    for i in range(n):
        for k in range(2 * K + 1):
            j = i + k - K
            a = A[j] if 0 <= j < n else np.zeros(width)
            d[i, k] = np.sqrt(np.sum((V[i] - a + 1e-6) ** 2))
    mdist = d.mean(axis=0)
    best = int(np.argmin(mdist))
    frame_conf = np.median(mdist) - d[:, best]
    padded = np.concatenate([np.zeros(4), frame_conf, np.zeros(4)])
    fconf = np.array([np.median(padded[i : i + 9]) for i in range(n)])
    return d, float(np.median(mdist) - mdist[best]), fconf


@pytest.mark.parametrize("offset", [-3, 0, 3])
def test_v2_scoring_finds_a_known_offset(offset):
    """A[i − o] ≈ V[i]: the sound of frame i comes o frames earlier, audio leads, offset = +o."""
    n, width = 20, 64  # fewer windows than the 31 offsets: zero padding weighs heavily
    rng = np.random.default_rng(7)
    V = rng.normal(size=(n, width))
    A = rng.normal(size=(n, width))
    for i in range(n):
        if 0 <= i - offset < n:
            A[i - offset] = V[i] + rng.normal(scale=0.3, size=width)  # frame-wise spread
    dists = syncnet_v2.distance_matrix(torch.from_numpy(V), torch.from_numpy(A))
    summary = syncnet_v2.v2_summary(dists)
    assert summary["offset"] == offset
    d, conf, fconf = _reference_scores(V, A, syncnet_v2.MAX_OFFSET)
    np.testing.assert_allclose(dists.numpy(), d, rtol=1e-12)
    np.testing.assert_allclose(summary["mdist"], d.mean(axis=0), rtol=1e-12)
    assert summary["conf"] == pytest.approx(conf, rel=1e-12)
    np.testing.assert_allclose(summary["fconf"], fconf, rtol=1e-12)


def test_v2_distance_adds_eps_to_every_dimension():
    """Identical vectors are 1e-6·√D apart, not 0: torch's pairwise_distance, as upstream."""
    V = torch.from_numpy(np.random.default_rng(3).normal(size=(6, 1024)))
    at_zero_offset = syncnet_v2.distance_matrix(V, V)[:, syncnet_v2.MAX_OFFSET]
    np.testing.assert_allclose(at_zero_offset.numpy(), 1e-6 * math.sqrt(1024), rtol=1e-6)


# --- Wav2Lip lip-sync expert ---


def test_w2l_checkpoint_loads_plain_and_module_prefixed(tmp_path, w2l_net, w2l_golden):
    kind, state, _ = checkpoints.read_state_dict(W2L_WEIGHTS)
    assert (kind, len(state)) == ("wav2lip-expert", 217)
    original = torch.load(W2L_WEIGHTS, weights_only=True)
    prefixed = {"module." + k: v for k, v in original["state_dict"].items()}
    torch.save({**original, "state_dict": prefixed}, tmp_path / "prefixed.pth")
    kind, net, info = checkpoints.load_network(tmp_path / "prefixed.pth")
    assert kind == "wav2lip-expert" and info["parameters"] == 16_435_072
    torch.testing.assert_close(
        _w2l_embeddings(net, w2l_golden), _w2l_embeddings(w2l_net, w2l_golden), rtol=0, atol=0
    )


def test_w2l_embeddings_match_golden(w2l_net, w2l_golden):
    audio_emb, face_emb = _w2l_embeddings(w2l_net, w2l_golden)  # upstream order: audio first
    np.testing.assert_allclose(audio_emb.numpy(), w2l_golden["audio_emb"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(face_emb.numpy(), w2l_golden["face_emb"], rtol=0, atol=1e-5)
    cos = (audio_emb * face_emb).sum(dim=1).numpy()
    np.testing.assert_allclose(cos, w2l_golden["cos"], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="15×48×96"):
        w2l_net.embed_face(torch.zeros(1, 15, 96, 96))


def test_w2l_mel_equals_upstream(w2l_golden):
    mel = audio.log_mel(w2l_golden["wav"])
    assert mel.shape == w2l_golden["mel_full"].shape == (80, 1 + len(w2l_golden["wav"]) // 200)
    diff = float(np.abs(mel - w2l_golden["mel_full"]).max())
    assert diff <= 1e-5, f"log_mel differs from upstream's mel by {diff:.2e}"


def test_w2l_windows_match_golden(w2l_golden):
    starts = w2l_golden["window_starts"]
    frames = w2l_golden["frames_bgr_96"]
    faces = np.concatenate([wav2lip.face_windows(frames, s, s + 1) for s in starts])
    np.testing.assert_array_equal(faces, w2l_golden["face_windows"])
    np.testing.assert_array_equal(wav2lip.face_windows(frames, 0, 9)[8], faces[1])  # start 8
    mels = np.concatenate([wav2lip.mel_windows(w2l_golden["mel_full"], s, 1) for s in starts])
    np.testing.assert_array_equal(mels, w2l_golden["mel_windows"])


def test_w2l_mel_windows_pad_with_silence_at_both_ends():
    mel = np.arange(80 * 30, dtype=np.float32).reshape(80, 30)
    before = wav2lip.mel_windows(mel, -1, 1)[0, 0]  # frame -1 starts at column floor(-16/5) = -4
    assert (before[:, :4] == audio.MEL_SILENCE).all()
    np.testing.assert_array_equal(before[:, 4:], mel[:, :12])
    after = wav2lip.mel_windows(mel, 5, 2)[:, 0]  # frames 5, 6 start at columns 16, 19
    np.testing.assert_array_equal(after[0, :, :14], mel[:, 16:])
    assert (after[0, :, 14:] == audio.MEL_SILENCE).all() and (after[1, :, 11:] == -4).all()


# --- loading safety ---


class _CreatesFile:
    """Unpickling this runs open(path, "w"): a stand-in for any code a checkpoint could carry."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_checkpoint_that_runs_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "created-by-unpickling"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": _CreatesFile(marker)}, evil)
    for load in (checkpoints.read_state_dict, checkpoints.load_network):
        with pytest.raises(WeightsError) as refused:
            load(evil)
        message = str(refused.value)
        assert "evil.pth" in message and "execute code" in message and "\n" not in message
        assert "nothing in it was run" in message
    with pytest.raises(WeightsError, match="execute code"):
        checkpoints.import_checkpoint(evil, tmp_path / "out")
    assert not marker.exists()
    torch.load(evil, weights_only=False)["hook"].close()  # the pickle is live: unsafe load runs it
    assert marker.exists()


def test_unknown_layouts_are_refused_with_what_was_expected(tmp_path):
    torch.save(
        {"encoder.weight": torch.randn(4, 4), "head.bias": torch.randn(4)}, tmp_path / "x.pt"
    )
    with pytest.raises(WeightsError) as refused:
        checkpoints.read_state_dict(tmp_path / "x.pt")
    for kind, (telltale, _) in checkpoints.LAYOUTS.items():
        assert kind in str(refused.value) and telltale in str(refused.value)
    torch.save({"netcnnaud.0.weight": torch.zeros(64, 1, 3, 3)}, tmp_path / "cut.model")
    with pytest.raises(WeightsError, match="looks like syncnet-v2 but has 1 weights"):
        checkpoints.read_state_dict(tmp_path / "cut.model")
    (tmp_path / "lone.safetensors").write_bytes(b"")
    with pytest.raises(WeightsError, match="sidecar"):
        checkpoints.read_state_dict(tmp_path / "lone.safetensors")


def test_icsyncnet_sidecar_without_kind_is_icsyncnet():
    kind, state, _ = checkpoints.read_state_dict(ICSYNCNET_WEIGHTS)
    assert kind == "icsyncnet" and "log_tau" in state
    with pytest.raises(WeightsError, match="this loader builds"):
        checkpoints.load_network(ICSYNCNET_WEIGHTS)


@pytest.mark.parametrize("which", ["v2", "w2l"])
def test_import_round_trip_and_tamper(tmp_path, monkeypatch, request, which):
    source = _need(V2_WEIGHTS if which == "v2" else W2L_WEIGHTS)
    golden = request.getfixturevalue(f"{which}_golden")
    kind, net, info = checkpoints.load_network(source)
    embed = _v2_audio if which == "v2" else lambda n, g: torch.cat(_w2l_embeddings(n, g), dim=1)
    imported = checkpoints.import_checkpoint(source, tmp_path / "weights")
    assert imported.name == f"{kind}-{info['sha256'][:8]}.safetensors"
    assert sorted(p.name for p in imported.parent.iterdir()) == [
        imported.with_suffix(".json").name,
        imported.name,
    ]
    sidecar = json.loads(imported.with_suffix(".json").read_text())
    assert sidecar["kind"] == kind and sidecar["source_sha256"] == info["sha256"]
    assert sidecar["source"] == source.name and sidecar["parameters"] == info["parameters"]
    assert sidecar["preprocessing"] == info["preprocessing"]

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load called while loading safetensors")

    monkeypatch.setattr(torch, "load", no_pickle)
    kind2, net2, info2 = checkpoints.load_network(imported)
    assert (kind2, info2["model_id"]) == (kind, info["model_id"])
    torch.testing.assert_close(embed(net2, golden), embed(net, golden), rtol=0, atol=0)
    data = bytearray(imported.read_bytes())
    data[-100] ^= 0x01
    imported.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        checkpoints.load_network(imported)


def _random_batchnorm_statistics(net: torch.nn.Module, seed: int) -> None:
    """Running statistics far from (0, 1) and a large ε, so that folding them is visible."""
    generator = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) * 2 - 1)
            module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.25)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)
            module.eps = 0.05


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_v2_fast_network_computes_the_public_network():
    """FastSyncNetV2 (2-D, BatchNorm folded, channels_last) is SyncNetV2Net up to round-off.

    Random weights, statistics and frames; the windows in lip_windows' own layout, as a
    contiguous copy, and as two clips' windows concatenated (embed_batched's batches).
    """
    torch.manual_seed(11)
    net = syncnet_v2.SyncNetV2Net(embed_dim=256).eval()
    _random_batchnorm_statistics(net, seed=12)
    fast = syncnet_v2.FastSyncNetV2(net)
    rng = np.random.default_rng(13)
    frames = rng.integers(0, 256, (10, 224, 224, 3), dtype=np.uint8)
    lips = torch.from_numpy(syncnet_v2.lip_windows(frames, 0, 6))
    expected = net.forward_lip(lips)
    assert expected.abs().max() > 0 and expected.std() > 1e-3 * expected.abs().max()
    for windows in (lips, lips.contiguous(), torch.cat([lips[:2], lips[2:]])):
        assert _relative_error(fast.forward_lip(windows), expected) <= 1e-5
    mfcc = torch.from_numpy(rng.normal(scale=10, size=(5, 1, 13, 20)).astype(np.float32))
    assert _relative_error(fast.forward_aud(mfcc), net.forward_aud(mfcc)) <= 1e-5
    with pytest.raises(ValueError, match="224"):
        fast.forward_lip(torch.zeros(1, 3, 5, 112, 112))


def test_v2_model_embeds_with_the_fast_copy(v2_net):
    model = syncnet_v2.SyncNetV2Model(v2_net, "syncnet-v2@test")
    assert isinstance(model.network, syncnet_v2.FastSyncNetV2)


@pytest.mark.parametrize("n", [0, 1, 5, 30])
@pytest.mark.parametrize("kernel", [9, 13])
def test_medfilt_equals_scipy(n, kernel):
    import scipy.signal

    values = np.random.default_rng(n).normal(size=n).astype(np.float32)
    expected = scipy.signal.medfilt(values, kernel) if n else values
    np.testing.assert_array_equal(syncnet_v2.medfilt(values, kernel), expected)
