"""`synccurate fix` on self-made clips (no real fixtures needed): the audio of every fixed clip is
the source's audio delayed by exactly offset × 640 samples at 16 kHz (SPEC §6), for AAC in
MP4 and for MP2 in MPEG-PS (whose timestamps carry the encoder delay), |offset| = 1 included,
and for a clip whose audio stream starts after its video (the output's starts with it).

The shift is measured independently of synccurate: PyAV decodes both files onto their video
timelines and a plain FFT cross-correlation finds the lag (helpers of test_fix.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_fix import best_lag, timeline_audio, video_hashes
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.io import media
from synccurate.io.files import write_table
from synccurate.training import synth

RATE = 16_000
PER_FRAME = 640  # samples per video frame at 16 kHz and 25 fps (SPEC §1)
SECONDS = 2.0

# clip: (container options, offset the scores table reports)
CASES = {
    "aac_plus1.mp4": ("aac", 1),
    "aac_minus1.mp4": ("aac", -1),
    "aac_plus4.mp4": ("aac", 4),
    "aac_zero.mp4": ("aac", 0),
    "mp2_plus1.mpg": ("mp2", 1),
    "mp2_minus1.mpg": ("mp2", -1),
    "mp2_minus3.mpg": ("mp2", -3),
    "late_audio_plus2.mkv": ("late", 2),  # the audio stream starts 0.1 s after the video
}
ENCODINGS = {
    "aac": {},
    "mp2": {"video_codec": "mpeg1video", "audio_codec": "mp2", "crf": None},
    "late": {},
}
LATE_S = 0.1


def noise_bursts(seed: int) -> np.ndarray:
    """Bursts of white noise with gaps: one sharp cross-correlation peak, no periodicity."""
    rng = np.random.default_rng(seed)
    n = int(RATE * SECONDS)
    envelope = np.zeros(n)
    t = 0
    while t < n:
        length = int(rng.uniform(0.03, 0.15) * RATE)
        envelope[t : t + length] = rng.uniform(0.2, 0.6)
        t += length + int(rng.uniform(0.02, 0.2) * RATE)
    return (0.3 * envelope * rng.normal(0, 1, n)).astype(np.float32)


@pytest.fixture(scope="module")
def fixed(tmp_path_factory):
    """Write the clips and a scores table, run `synccurate fix TABLE --out-dir OUT` once."""
    base = tmp_path_factory.mktemp("fix_synthetic")
    root = base / "clips"
    root.mkdir()
    frames, _, _ = synth.synth_arrays(seconds=SECONDS, seed=5)
    for i, (name, (encoding, _)) in enumerate(CASES.items()):
        media.write_clip(root / name, frames, noise_bursts(i), **ENCODINGS[encoding])
        if encoding == "late":  # remux with the audio starting LATE_S after the first frame
            made = root / name
            early = made.rename(made.with_name(f"early_{name}"))
            media.run_ffmpeg(
                ["-y", "-i", str(early), "-itsoffset", str(LATE_S), "-i", str(early)]
                + ["-map", "0:v", "-map", "1:a", "-c", "copy", str(made)]
            )
            early.unlink()
            info = media.probe(made)
            assert info.audio_start_s - info.video_start_s == pytest.approx(LATE_S, abs=0.002)
    scores = pd.DataFrame(
        {
            "root": str(root),
            "path": list(CASES),
            "status": "ok",
            "offset_frames": pd.array([offset for _, offset in CASES.values()], dtype="Int64"),
            "prob_at_offset": 0.9,
            "offscreen_ratio": 0.0,
        }
    )
    table = write_table(scores, base / "scores.parquet")
    out = base / "fixed"
    result = CliRunner().invoke(app, ["fix", str(table), "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    return root, out, pd.read_parquet(out / "fixes.parquet").set_index("path")


def test_every_nonzero_offset_is_fixed_and_zero_is_copied(fixed):
    root, out, log = fixed
    expected = {name: "copied" if offset == 0 else "fixed" for name, (_, offset) in CASES.items()}
    assert log["status"].to_dict() == expected  # |offset| = 1 is shifted too
    for name, (_, offset) in CASES.items():
        assert log.loc[name, "applied_shift_samples"] == offset * PER_FRAME
        assert log.loc[name, "output"] == str(out / name)
    assert (out / "aac_zero.mp4").read_bytes() == (root / "aac_zero.mp4").read_bytes()


@pytest.mark.parametrize("name", [name for name, (_, offset) in CASES.items() if offset])
def test_fixed_audio_is_the_source_delayed_by_offset_times_640_samples(fixed, name):
    root, out, _ = fixed
    offset = CASES[name][1]
    source, rate = timeline_audio(root / name)
    result, result_rate = timeline_audio(out / name)
    assert rate == result_rate == RATE
    lag, correlation = best_lag(source, result, max_lag=8 * PER_FRAME)
    assert lag == offset * PER_FRAME  # positive offset (audio leads) → the audio is delayed
    assert correlation > 0.8  # (normalised over the whole clip, shifted-out ends included)
    shift = abs(offset) * PER_FRAME
    loud = np.abs(source).max()
    n = len(source)
    if offset > 0:  # delayed: silence in front, where the audio now starts later
        assert np.abs(result[: shift - 64]).max() < 0.05 * loud
    else:  # advanced: silence at the end, where the audio now stops earlier
        assert np.abs(result[n - shift + 64 : n]).max() < 0.05 * loud
    assert abs(len(result) - len(source)) <= 1152  # duration kept (one audio frame at most)
    assert video_hashes(out / name) == video_hashes(root / name)
