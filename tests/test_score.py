"""The scoring driver end to end: statuses of bad files, resume after SIGKILL, the sign."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.faces.detectors import make_detector
from synccurate.io import audio, media
from synccurate.io.inputs import ClipRef
from synccurate.models.icsyncnet import (
    CONFIGS,
    ICSyncNet,
    ICSyncNetModel,
    MouthRecipe,
    save_checkpoint,
)
from synccurate.models.sync import clip_metrics, similarity_matrix
from synccurate.pipeline import batching
from synccurate.pipeline import driver as scoring
from synccurate.pipeline.batching import similarity_matrices
from synccurate.pipeline.prepare import prepare_clip
from synccurate.training import synth

MOUTH = MouthRecipe(crop_hw=(32, 64))


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """An untrained tiny model: enough to exercise the plumbing, statuses and the table."""
    torch.manual_seed(0)
    return save_checkpoint(ICSyncNet(CONFIGS["tiny"]), tmp_path_factory.mktemp("w") / "tiny")


def _ffmpeg(*args):
    media.run_ffmpeg(list(args))


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed")
    good = folder / "good_1.mp4"
    synth.synth_clip(good, seconds=2.0, seed=1)
    synth.synth_clip(folder / "sub dir" / "good 2.mp4", seconds=2.0, seed=2)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "random.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    _ffmpeg("-i", str(good), "-vn", "-c:a", "copy", str(folder / "audio_only.mp4"))
    _ffmpeg("-i", str(good), "-an", "-c:v", "copy", str(folder / "video_only.mp4"))
    (folder / "notes.txt").write_text("not a video: must be ignored")
    return folder


def test_score_mixed_folder_gives_one_row_per_clip_with_statuses(
    mixed_folder, tiny_weights, tmp_path
):
    before = {p: p.stat().st_mtime_ns for p in mixed_folder.rglob("*")}
    out = tmp_path / "scores.parquet"
    result = CliRunner().invoke(
        app,
        [
            "score",
            str(mixed_folder),
            "-o",
            str(out),
            "--weights",
            str(tiny_weights),
            "--workers",
            "0",
            "--face-detector",
            "none",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out)
    statuses = dict(zip(table["path"], table["status"], strict=True))
    assert statuses == {
        "good_1.mp4": "ok",
        "sub dir/good 2.mp4": "ok",
        "empty.mp4": "decode_error",
        "random.mp4": "decode_error",
        "audio_only.mp4": "no_video",
        "video_only.mp4": "no_audio",
    }
    for row in table.itertuples():
        if row.status == "ok":
            assert pd.isna(row.error)
            assert row.n_frames == 50 and -15 <= row.offset_frames <= 15
            assert 0 <= row.prob_at_offset <= 1 and 0 <= row.offscreen_ratio <= 1
            assert len(row.p_t) == row.n_frames - 4 and row.model.startswith("tiny@")
        else:
            assert row.path in row.error and "\n" not in row.error
    assert {p: p.stat().st_mtime_ns for p in mixed_folder.rglob("*")} == before  # inputs untouched


def test_score_refuses_a_non_table_output(mixed_folder, tiny_weights, tmp_path):
    out = tmp_path / "precious.parquet"
    out.write_text("my notes")
    result = CliRunner().invoke(
        app,
        ["score", str(mixed_folder / "good_1.mp4"), "-o", str(out), "--weights", str(tiny_weights)],
    )
    assert result.exit_code == 2
    assert out.read_text() == "my notes"


def _published_parts(folder) -> list:
    return [p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_"))]


def _score_command(folder, out, weights, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "synccurate",
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


def test_killed_run_resumes_with_every_clip_exactly_once(tiny_weights, tmp_path):
    folder = tmp_path / "clips"
    synth.synth_dataset(folder, n=10, seconds=2.0, seed=9, workers=2)
    out = tmp_path / "scores.parquet"
    command = _score_command(
        folder, out, tiny_weights, "--workers", "0", "--batch-size", "8", "--part-seconds", "0"
    )
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not _published_parts(out) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = pd.read_parquet(out)  # readable at any moment
    assert 1 <= len(partial) < 10
    first_run = set(partial["run_id"])
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    table = pd.read_parquet(out)
    # Every clip exactly once, as raw rows: nothing the first run published was scored again.
    assert len(table) == 10 and table["path"].is_unique
    assert set(table["path"]) == {f"clip_{i:05d}.mp4" for i in range(10)}
    assert (table["run_id"].isin(first_run)).sum() == len(partial)


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to list processes")
def test_no_worker_outlives_a_killed_score(tiny_weights, tmp_path):
    folder = tmp_path / "clips"
    synth.synth_dataset(folder, n=6, seconds=2.0, seed=4, workers=2)
    command = _score_command(folder, tmp_path / "out", tiny_weights, "--workers", "2")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    while len(workers) < 2 and time.monotonic() < deadline and process.poll() is None:
        workers = {pid for pid in _children(process.pid) if "spawn" in _cmdline(pid)}
        time.sleep(0.05)
    assert len(workers) >= 2, "the run ended before its workers could be seen"
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if _alive(pid)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class MouthEnergyModel(torch.nn.Module):
    """A model-free stand-in for IC-SyncNet: visual = mouth darkness of the 5 frames, audio =
    loudness of the 5 frames' mel columns, both centred. Their cosine is the correlation of
    mouth opening and loudness, which peaks where audio and video line up."""

    tau = 0.1
    recipe = MOUTH

    def similarity(self, visual, audio, max_offset):
        return similarity_matrix(visual, audio, max_offset)

    def embed_visual(self, windows):
        frames = windows.reshape(len(windows), 5, 3, *windows.shape[2:])
        darkness = 1 - frames.mean(dim=(2, 3, 4))
        return torch.nn.functional.normalize(darkness - darkness.mean(1, keepdim=True), dim=1)

    def embed_audio(self, mels):
        centre = mels[:, 0, :, audio.CONTEXT_MELS : audio.CONTEXT_MELS + audio.WINDOW_MELS]
        edges = [int(i * 3.2) for i in range(6)]
        spans = zip(edges[:-1], edges[1:], strict=True)
        loudness = torch.stack([centre[..., a:b].mean(dim=(1, 2)) for a, b in spans], 1)
        return torch.nn.functional.normalize(loudness - loudness.mean(1, keepdim=True), dim=1)


@pytest.mark.parametrize("true_offset", [-6, 0, 5])
def test_sign_of_the_offset_through_the_real_plumbing(tmp_path, true_offset):
    """Audio delayed → negative offset, audio advanced → positive (SPEC §6), without a model."""
    clip = tmp_path / "clip.mp4"
    synth.synth_clip(clip, seconds=6.0, seed=11, offset_frames=true_offset)
    prepared = prepare_clip(ClipRef(str(tmp_path), "clip.mp4"), MOUTH, make_detector("none"))
    assert prepared.status == "ok", prepared.error
    (S,) = similarity_matrices(MouthEnergyModel(), [prepared], 64, torch.device("cpu"))
    assert clip_metrics(S, MouthEnergyModel.tau).offset_frames == true_offset


def test_mixed_precision_path_agrees_with_float32(tmp_path):
    """The AMP branch used on CUDA, exercised on CPU with bfloat16."""
    from synccurate.models.weights import find_weights

    synth.synth_clip(tmp_path / "clip.mp4", seconds=3.0, seed=21, offset_frames=4)
    model = ICSyncNetModel.load(find_weights())
    tau = model.network.tau
    prepared = prepare_clip(ClipRef(str(tmp_path), "clip.mp4"), MOUTH, make_detector("none"))
    device = torch.device("cpu")
    (full,) = similarity_matrices(model, [prepared], 32, device, precision="fp32")
    (half,) = similarity_matrices(model, [prepared], 32, device, precision="bf16")
    assert half.dtype == torch.float32 and half.shape == full.shape
    assert (half - full).abs().max() < 0.05
    assert clip_metrics(half, tau).offset_frames == clip_metrics(full, tau).offset_frames == 4


def test_score_precision_bf16_runs_the_encoders_in_bfloat16(tmp_path):
    """--precision reaches the encoders: bf16 moves the numbers a little, not the offset."""
    from scoring_cli import score_table

    synth.synth_clip(tmp_path / "clips" / "clip.mp4", seconds=3.0, seed=21, offset_frames=4)
    rows = {
        precision: score_table(tmp_path / "clips", tmp_path / precision, "--precision", precision)
        for precision in ("fp32", "bf16")
    }
    fp32, bf16 = (rows[p].loc["clip.mp4"] for p in ("fp32", "bf16"))
    assert fp32.offset_frames == bf16.offset_frames == 4
    assert fp32.prob_at_offset != bf16.prob_at_offset
    assert abs(fp32.prob_at_offset - bf16.prob_at_offset) < 0.02


def test_shards_partition_the_clips():
    from synccurate.io.inputs import shard

    refs = [ClipRef("/data", f"speaker_{i}/clip_{i}.mp4") for i in range(200)]
    parts = [shard(refs, k, 4) for k in range(4)]
    assert sorted(r.path for part in parts for r in part) == sorted(r.path for r in refs)
    assert all(20 <= len(part) <= 80 for part in parts)  # a hash spreads them out
    assert shard(refs, 1, 4) == shard(list(reversed(refs)), 1, 4)[::-1]  # order-free membership
    with pytest.raises(ValueError):
        shard(refs, 4, 4)


def test_face_in_scattered_frames_only_is_no_face(monkeypatch, tmp_path):
    """Faces in over half the frames but never five in a row: no window to score."""
    from synccurate.faces import extract

    synth.synth_clip(tmp_path / "clip.mp4", seconds=2.0, seed=5)
    real_cut = extract.cut_all_crops

    def every_other_frame(*args, **kwargs):
        tracks = real_cut(*args, **kwargs)
        tracks[0].has_face[1::2] = False
        tracks[0].has_face[::4] = True
        return tracks

    monkeypatch.setattr(extract, "cut_all_crops", every_other_frame)
    clip = prepare_clip(ClipRef(str(tmp_path), "clip.mp4"), MOUTH, make_detector("none"))
    assert clip.status == "no_face" and "clip.mp4" in clip.error


class TwoFacesDetector:
    """Two faces side by side in every frame: left box, then right box (frame pixels)."""

    name = "two-faces"

    def detect(self, frames):
        width = frames.shape[2]
        side = frames.shape[1]
        return [
            [(0.0, 0.0, side, side, 1.0), (width - side, 0.0, width, side, 1.0)] for _ in frames
        ]


@pytest.mark.parametrize("speaker_side", ["left", "right"])
def test_two_faces_the_row_describes_the_one_whose_mouth_follows_the_audio(tmp_path, speaker_side):
    """The speaker's mouth follows the audio (shifted by +3 frames); the other face mouths
    another voice. The row must report the speaker's track, its offset and n_faces = 2."""
    from synccurate.models.weights import find_weights
    from synccurate.pipeline.driver import score_faces

    speaker, sound, _ = synth.synth_arrays(seconds=4.0, seed=31, offset_frames=3)
    other, _, _ = synth.synth_arrays(seconds=4.0, seed=77)
    gap = np.zeros((len(speaker), 96, 32, 3), dtype=np.uint8)
    left, right = (speaker, other) if speaker_side == "left" else (other, speaker)
    media.write_clip(tmp_path / "two.mp4", np.concatenate([left, gap, right], axis=2), sound)
    model = ICSyncNetModel.load(find_weights())
    recipe = MouthRecipe(crop_hw=(32, 64), margin=0.0)  # the face box is exactly the face
    clip = prepare_clip(ClipRef(str(tmp_path), "two.mp4"), recipe, TwoFacesDetector())
    assert clip.status == "ok", clip.error
    assert len(clip.tracks) == 2
    model.recipe = recipe
    (row,) = score_faces(model, [clip], 256, torch.device("cpu"))
    chosen = clip.tracks[row["face_track"]]
    assert (chosen.boxes[0, 0] < 100) == (speaker_side == "left")
    assert row["n_faces"] == 2 and row["offset_frames"] == 3
    summary = json.loads(row["face_tracks"])
    assert {t["track"] for t in summary} == {0, 1}
    strengths = {t["track"]: t["strength"] for t in summary}
    assert strengths[row["face_track"]] == max(strengths.values())
    assert row["prob_at_offset"] == pytest.approx(strengths[row["face_track"]], abs=1e-4)


def test_one_face_clip_rows_say_one_face(tmp_path):
    from synccurate.models.weights import find_weights
    from synccurate.pipeline.driver import score_faces

    synth.synth_clip(tmp_path / "one.mp4", seconds=2.0, seed=3, offset_frames=-2)
    model = ICSyncNetModel.load(find_weights())
    clip = prepare_clip(ClipRef(str(tmp_path), "one.mp4"), MOUTH, make_detector("none"))
    (row,) = score_faces(model, [clip], 256, torch.device("cpu"))
    assert row["n_faces"] == 1 and row["face_track"] == 0 and row["face_tracks"] is None
    assert row["offset_frames"] == -2


class _OneConvModel:
    """A stand-in model whose visual encoder is one 3x3 convolution over 8x16 windows."""

    batch_size = 256  # on a GPU
    cpu_batch_size = 128

    def __init__(self):
        self.recipe = MouthRecipe(crop_hw=(8, 16))
        self.network = torch.nn.Sequential(torch.nn.Conv2d(15, 4, 3, padding=1))

    def embed_visual(self, windows):
        return self.network(windows.float())


def test_activation_bytes_are_the_busiest_layers_input_plus_output():
    model = _OneConvModel()
    window_in, window_out = 15 * 8 * 16 * 4, 4 * 8 * 16 * 4  # float32 bytes
    assert batching.activation_bytes_per_window(model) == window_in + window_out
    assert not model.network[0]._forward_hooks  # the measuring hooks are removed


def test_default_batch_is_bounded_by_memory_on_cpu_only(monkeypatch):
    model = _OneConvModel()
    per_window = batching.activation_bytes_per_window(model)
    assert scoring.default_batch_size(model, torch.device("cpu")) == 128  # fits: its CPU size
    monkeypatch.setattr(batching, "CPU_BATCH_BYTES", 10 * per_window + 1)
    assert scoring.default_batch_size(model, torch.device("cpu")) == 10
    assert scoring.default_batch_size(model, torch.device("cuda")) == 256
    monkeypatch.setattr(batching, "CPU_BATCH_BYTES", 1)
    assert scoring.default_batch_size(model, torch.device("cpu")) == 1


def test_sigterm_publishes_the_rows_already_scored(tiny_weights, tmp_path, monkeypatch):
    """A SIGTERM (e.g. Slurm's time limit) mid-run keeps every scored row, although the
    part was not due yet; the rerun scores the rest, each clip once."""
    folder = tmp_path / "clips"
    synth.synth_dataset(folder, n=6, seconds=2.0, seed=5, workers=2)
    out = tmp_path / "scores"
    counted = scoring.RunStats.count

    def count_then_terminate(stats, clip, row):
        counted(stats, clip, row)
        if stats.clips == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(scoring.RunStats, "count", count_then_terminate)
    options = ["--workers", "0", "--batch-size", "8", "--part-seconds", "3600", "--no-progress"]
    command = ["score", str(folder), "-o", str(out), "--weights", str(tiny_weights), *options]
    before = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 128 + signal.SIGTERM, result.output
    assert signal.getsignal(signal.SIGTERM) is before  # the handler was only for the run
    first = pd.read_parquet(out)
    assert 3 <= len(first) < 6 and first["path"].is_unique

    monkeypatch.setattr(scoring.RunStats, "count", counted)
    assert CliRunner().invoke(app, command).exit_code == 0
    table = pd.read_parquet(out)
    assert len(table) == 6 and table["path"].is_unique
    assert table["run_id"].isin(set(first["run_id"])).sum() == len(first)
