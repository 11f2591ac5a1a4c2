"""`fix` and `filter --link-to` outputs with known answers, on self-made clips:

- every container `fix` supports, with and without a signalled codec delay: the audio of
  the output is the source's delayed by exactly offset × rate / 25 samples (measured with
  PyAV and an FFT, independently of synccurate), and the log's compensation_samples is the
  encoder delay the container could not signal (AVI: MP2 481, AAC 1024, MP3 1105; PCM 0);
- several input roots holding the same relative path: one output folder per root, each
  output made from its own input, the same layout for `fix` and `filter --link-to`;
- an input that is a symlink to where its output would go is refused, never overwritten;
- an output recorded in the fix log but deleted since is made again by a rerun.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_fix import best_lag, timeline_audio
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.curate.fix import fix_clip
from synccurate.io import media
from synccurate.io.files import write_table

RATE = 16_000
FRAMES = 38  # 1.52 s at 25 fps
PER_FRAME = RATE // 25


def noise_bursts(seed: int, n: int = FRAMES * PER_FRAME) -> np.ndarray:
    """Bursts of white noise with gaps: one sharp cross-correlation peak, no periodicity."""
    rng = np.random.default_rng(seed)
    envelope = np.zeros(n)
    t = 0
    while t < n:
        length = int(rng.uniform(0.03, 0.12) * RATE)
        envelope[t : t + length] = rng.uniform(0.2, 0.6)
        t += length + int(rng.uniform(0.02, 0.15) * RATE)
    return (0.3 * envelope * rng.normal(0, 1, n)).astype(np.float32)


def small_clip(path: Path, seed: int, **codecs) -> Path:
    """A 64 x 64, 1.5 s clip with noise-burst audio at 16 kHz mono."""
    frames = np.full((FRAMES, 64, 64, 3), 90, dtype=np.uint8)
    frames[:, :, : 16 + seed % 32] = 30  # each clip's picture differs a little
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"video_codec": "mpeg4", "crf": None, **codecs}
    return media.write_clip(path, frames, noise_bursts(seed), **options)


def scores_table(rows: list[tuple[str, str, int]], **columns) -> pd.DataFrame:
    """A scores table of (root, path, offset) rows, all ok (what `fix` reads)."""
    table = pd.DataFrame(rows, columns=["root", "path", "offset_frames"])
    table["offset_frames"] = table["offset_frames"].astype("Int64")
    table["status"] = "ok"
    for name, values in {"prob_at_offset": 0.9, "offscreen_ratio": 0.0, **columns}.items():
        table[name] = values
    return table


def run(*args: str) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def assert_shifted(source: Path, output: Path, offset: int) -> None:
    """The output's audio is the source's delayed by offset frames, to the sample."""
    original, rate = timeline_audio(source)
    shifted, out_rate = timeline_audio(output)
    assert out_rate == rate
    lag, correlation = best_lag(original, shifted, max_lag=6 * rate // 25)
    assert lag == offset * rate // 25, f"{output.name}: audio off by {lag} samples"
    assert correlation > 0.8


# --- every container ------------------------------------------------------------------------

# name: (codecs, offset, compensation the container needs: the encoder delay it cannot signal)
CONTAINERS = {
    "aac.mp4": ({"audio_codec": "aac"}, 2, 0),  # edit list
    "pcm.mov": ({"audio_codec": "pcm_s16le"}, -3, 0),
    "aac.mov": ({"audio_codec": "aac"}, 1, 0),  # edit list
    "aac.mkv": ({"audio_codec": "aac"}, -1, 0),  # codec delay
    "flac.mkv": ({"audio_codec": "flac"}, 2, 0),
    "opus.webm": ({"video_codec": "libvpx", "audio_codec": "libopus"}, 2, 0),  # 48 kHz
    "mp2.mpg": ({"video_codec": "mpeg1video", "audio_codec": "mp2"}, -2, 0),  # timestamps
    "aac.ts": ({"video_codec": "mpeg2video", "audio_codec": "aac"}, 3, 0),  # timestamps
    "aac.flv": ({"video_codec": "flv", "audio_codec": "aac"}, 2, None),  # timestamps, below
    "mp2.avi": ({"audio_codec": "mp2"}, 2, 481),  # AVI signals no delay at all
    "aac.avi": ({"audio_codec": "aac"}, -2, 1024),
    "mp3.avi": ({"audio_codec": "libmp3lame"}, 3, 1105),
    "pcm.avi": ({"audio_codec": "pcm_s16le"}, 2, 0),  # PCM has no delay to signal
}


@pytest.fixture(scope="module")
def containers(tmp_path_factory):
    """One clip per container, fixed with one `synccurate fix TABLE --out-dir OUT`."""
    base = tmp_path_factory.mktemp("containers")
    root = base / "clips"
    for seed, (name, (codecs, _, _)) in enumerate(CONTAINERS.items()):
        small_clip(root / name, seed, **codecs)
    rows = [(str(root), name, offset) for name, (_, offset, _) in CONTAINERS.items()]
    table = write_table(scores_table(rows), base / "scores.parquet")
    out = base / "fixed"
    run("fix", table, "--out-dir", out)
    return root, out, pd.read_parquet(out / "fixes.parquet").set_index("path")


@pytest.mark.parametrize("name", list(CONTAINERS))
def test_each_container_gets_its_audio_shifted_to_the_sample(containers, name):
    root, out, log = containers
    _, offset, compensation = CONTAINERS[name]
    row = log.loc[name]
    assert row["status"] == "fixed", row["error"]
    assert row["check_lag_samples"] == 0
    if compensation is not None:  # FLV: its muxer moves the video by the priming, measured
        assert row["compensation_samples"] == compensation
    assert row["applied_shift_samples"] == offset * row["sample_rate"] // 25
    assert Path(row["output"]) == out / name and (out / name).suffix == Path(name).suffix
    assert_shifted(root / name, out / name, offset)


def test_mono_16k_vorbis_in_webm_is_fixed(tmp_path):
    source = small_clip(tmp_path / "vorbis.webm", 1, video_codec="libvpx", audio_codec="libvorbis")
    result = fix_clip(source, tmp_path / "fixed.webm", 2)
    assert result["check_lag_samples"] == 0
    assert_shifted(source, tmp_path / "fixed.webm", 2)


# --- several roots, one relative path -----------------------------------------------------

SAME = "talk/x.mp4"  # the relative path every root holds


@pytest.fixture(scope="module")
def three_roots(tmp_path_factory):
    """Three roots named `clips` (under a/, b/, c/), each holding talk/x.mp4 with its own
    audio, scored with offsets +1, +2, -2; the table lists them c, a, b."""
    base = tmp_path_factory.mktemp("roots")
    roots = {key: base / key / "clips" for key in "abc"}
    for seed, root in enumerate(roots.values()):
        small_clip(root / SAME, 10 + seed)
    offsets = {"a": 1, "b": 2, "c": -2}
    order = ["c", "a", "b"]
    table = scores_table(
        [(str(roots[key]), SAME, offsets[key]) for key in order],
        prob_at_offset=[0.9, 0.1, 0.9],  # filter keeps c and b, drops a
    )
    return base, roots, offsets, write_table(table, base / "scores.parquet")


def test_fix_writes_one_folder_per_root_each_from_its_own_input(three_roots):
    """Roots sharing a name get `-2`, `-3` in sorted root order (a, b, c), whatever the
    table's order: out/clips, out/clips-2, out/clips-3."""
    base, roots, offsets, table = three_roots
    out = base / "fixed"
    run("fix", table, "--out-dir", out)
    log = pd.read_parquet(out / "fixes.parquet")
    where = {"a": out / "clips" / SAME, "b": out / "clips-2" / SAME, "c": out / "clips-3" / SAME}
    assert dict(zip(log["input"], log["output"], strict=True)) == {
        str(roots[key] / SAME): str(where[key]) for key in "abc"
    }
    assert set(log["status"]) == {"fixed"}
    for key in "abc":
        assert_shifted(roots[key] / SAME, where[key], offsets[key])


def test_link_to_mirrors_the_kept_clips_as_fix_lays_them_out(three_roots, tmp_path):
    """Only b's and c's clips are kept; their links still go where `fix` puts their outputs
    (clips-2, clips-3), the layout of the whole table, and point at their own inputs."""
    base, roots, _, table = three_roots
    links = tmp_path / "links"
    run("filter", table, "-o", tmp_path / "kept.parquet", "--link-to", links)
    made = sorted(p.relative_to(links).as_posix() for p in links.rglob("*.mp4"))
    assert made == [f"clips-2/{SAME}", f"clips-3/{SAME}"]
    assert os.readlink(links / "clips-2" / SAME) == str(roots["b"] / SAME)
    assert os.readlink(links / "clips-3" / SAME) == str(roots["c"] / SAME)


def test_link_to_summary_counts_the_links(three_roots, tmp_path):
    _, _, _, table = three_roots
    links = tmp_path / "links"
    output = run("filter", table, "-o", tmp_path / "kept.parquet", "--link-to", links)
    assert "2 created, 0 already there, 0 conflicts" in " ".join(output.split())


# --- an input that points at its own output -----------------------------------------------


def test_an_input_symlinked_to_its_output_path_is_refused_not_overwritten(tmp_path):
    """clips/a.mp4 and clips/b.mp4 are symlinks to out/a.mp4 and out/b.mp4, the very files
    `fix` would write: both (one shifted, one merely copied) are refused, the files kept."""
    out = tmp_path / "out"
    real = {name: small_clip(out / name, seed) for seed, name in enumerate(["a.mp4", "b.mp4"])}
    before = {name: path.read_bytes() for name, path in real.items()}
    root = tmp_path / "clips"
    root.mkdir()
    for name, path in real.items():
        (root / name).symlink_to(path)
    table = scores_table([(str(root), "a.mp4", 3), (str(root), "b.mp4", 0)])
    run("fix", write_table(table, tmp_path / "scores.parquet"), "--out-dir", out)
    log = pd.read_parquet(out / "fixes.parquet").set_index("path")
    assert log["status"].to_dict() == {"a.mp4": "refused", "b.mp4": "refused"}
    assert all("input" in error for error in log["error"])
    for name, path in real.items():
        assert not path.is_symlink() and path.read_bytes() == before[name]


# --- a deleted output that the log still records -----------------------------------------


def test_a_rerun_redoes_outputs_deleted_since_the_log_recorded_them(tmp_path):
    root = tmp_path / "clips"
    for seed, name in enumerate(["shifted.mp4", "copied.mp4", "kept.mp4"]):
        small_clip(root / name, 20 + seed)
    table = scores_table(
        [(str(root), "shifted.mp4", 2), (str(root), "copied.mp4", 0), (str(root), "kept.mp4", -1)]
    )
    scores = write_table(table, tmp_path / "scores.parquet")
    out = tmp_path / "out"
    run("fix", scores, "--out-dir", out)
    (out / "shifted.mp4").unlink()
    (out / "copied.mp4").unlink()
    stamp = (out / "kept.mp4").stat().st_mtime_ns
    run("fix", scores, "--out-dir", out)
    log = pd.read_parquet(out / "fixes.parquet").set_index("path")
    assert log["status"].to_dict() == {
        "shifted.mp4": "fixed",
        "copied.mp4": "copied",
        "kept.mp4": "fixed",
    }
    assert log["reused"].to_dict() == {"shifted.mp4": False, "copied.mp4": False, "kept.mp4": True}
    assert_shifted(root / "shifted.mp4", out / "shifted.mp4", 2)
    assert (out / "copied.mp4").read_bytes() == (root / "copied.mp4").read_bytes()
    assert (out / "kept.mp4").stat().st_mtime_ns == stamp  # left alone
