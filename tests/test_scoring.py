"""Scoring end to end through the CLI, checked on the table it writes.

- frames without a face (the opencv detector on synthetic faces that leave the picture):
  face_ratio, the no_face rule (face in under half the frames), and face-less windows
  left out of p_t / on-screen;
- silence_ratio of a clip with silent and quiet stretches of known length;
- at_search_edge when the offset is the last one searched (--max-offset);
- the default worker path (`--workers` > 0) gives exactly the rows of the in-process path;
- clips at 30, 29.97, 50 fps and with a variable frame rate score their known offset.

The bundled small model finds the exact offset of every 2 s synthetic clip used here
(checked over more seeds and offsets than these), so offsets are compared exactly.
"""

from __future__ import annotations

import tempfile
from fractions import Fraction

import av
import numpy as np
import pandas as pd
import pytest
from scoring_cli import blank, score_table, synth_with
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.io import media
from synccurate.io.audio import SAMPLE_RATE, SAMPLES_PER_FRAME
from synccurate.training import synth

# --- frames without a face --------------------------------------------------------------------


@pytest.fixture(scope="module")
def faces_folder(tmp_path_factory):
    """Clips whose face is absent in stretches."""
    folder = tmp_path_factory.mktemp("faces_leaving")
    synth_with(folder / "away_25.mp4", seconds=3.0, seed=31, offset=3, frames=blank(30, 55))
    synth_with(folder / "face_40.mp4", seconds=2.0, seed=32, frames=blank(20, 50))
    synth_with(folder / "face_60.mp4", seconds=2.0, seed=33, offset=-2, frames=blank(30, 50))
    return folder


@pytest.fixture(scope="module")
def faces_leaving(faces_folder):
    """Their scores with the opencv detector."""
    out = faces_folder.parent / "faces.parquet"
    return score_table(faces_folder, out, "--detect-every", "1", detector="opencv")


def test_face_ratio_is_the_share_of_frames_with_a_face(faces_leaving):
    assert faces_leaving.loc["away_25.mp4", "face_ratio"] == pytest.approx(50 / 75)
    assert faces_leaving.loc["face_60.mp4", "face_ratio"] == pytest.approx(0.60)
    assert faces_leaving.loc["face_40.mp4", "face_ratio"] == pytest.approx(0.40)
    assert set(faces_leaving["face_detector"]) == {"opencv"}


def test_a_face_in_under_half_the_frames_is_no_face(faces_leaving):
    """20 consecutive face frames are plenty of windows, but under half the clip (SPEC §10)."""
    row = faces_leaving.loc["face_40.mp4"]
    assert row.status == "no_face"
    assert "face_40.mp4" in row.error
    assert pd.isna(row.offset_frames) and pd.isna(row.prob_at_offset)
    assert faces_leaving.loc["face_60.mp4", "status"] == "ok"


def test_windows_without_a_face_are_off_screen_and_out_of_the_averages(faces_leaving):
    row = faces_leaving.loc["away_25.mp4"]
    assert row.status == "ok" and row.n_frames == 75
    p_t, onscreen = np.asarray(row.p_t), np.asarray(row.onscreen)
    assert len(p_t) == len(onscreen) == 71
    # windows 26…54 each hold at least one of the face-less frames 30…54
    assert (p_t[26:55] == 0).all() and not onscreen[26:55].any()
    assert (p_t[:26] > 0).all() and (p_t[55:] > 0).all()
    assert 29 / 71 <= row.offscreen_ratio <= 29 / 71 + 0.1
    assert row.offset_frames == 3  # found from the 42 windows with a face
    assert faces_leaving.loc["face_60.mp4", "offset_frames"] == -2


def test_plot_leaves_face_less_windows_out_as_score_does(faces_folder, faces_leaving, tmp_path):
    """The sync map's metrics are those of the scores table (face mask included)."""
    from synccurate.curate import plot

    drawn = {}

    def capture(similarity, metrics, title, target, stretches=None):
        drawn["metrics"], drawn["stretches"] = metrics, stretches

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plot, "plot_sync_map", capture)
        result = CliRunner().invoke(
            app,
            ["plot", str(faces_folder / "away_25.mp4"), "-o", str(tmp_path)]
            + ["--face-detector", "opencv", "--detect-every", "1"],
        )
    assert result.exit_code == 0, result.output
    metrics, row = drawn["metrics"], faces_leaving.loc["away_25.mp4"]
    assert metrics["offset_frames"] == row.offset_frames
    windows = row.n_frames - 4  # one stretch: the whole clip, in visual windows
    assert [s["end_s"] for s in drawn["stretches"]] == [windows / 25]
    np.testing.assert_allclose(metrics["p_t"], row.p_t, atol=1e-4)
    assert list(metrics["onscreen"]) == list(row.onscreen)


# --- silence -------------------------------------------------------------------------------------


def test_silence_ratio_counts_the_frames_below_minus_40_dbfs(tmp_path):
    """100 frames: 50 at -13 dBFS, 20 at -33 dBFS (quiet, not silent), 30 of digital silence."""

    def tones(samples: np.ndarray) -> np.ndarray:
        t = np.arange(len(samples)) / SAMPLE_RATE
        level = np.zeros(len(samples))
        level[: 50 * SAMPLES_PER_FRAME] = 0.3  # RMS 0.212: -13.5 dBFS
        level[50 * SAMPLES_PER_FRAME : 70 * SAMPLES_PER_FRAME] = 0.03  # RMS 0.0212: -33.5 dBFS
        return (level * np.sin(2 * np.pi * 440 * t)).astype(np.float32)

    synth_with(tmp_path / "clips" / "quiet.mp4", seconds=4.0, seed=34, audio=tones)
    table = score_table(tmp_path / "clips", tmp_path / "scores.parquet")
    row = table.loc["quiet.mp4"]
    assert row.status == "ok"
    assert row.silence_ratio == pytest.approx(0.30, abs=0.02)  # a codec may blur one edge frame
    assert row.face_ratio == 1.0  # --face-detector none: every frame is the face


# --- the search edge -----------------------------------------------------------------------------


def test_an_offset_at_the_end_of_a_narrower_search_is_at_the_search_edge(tmp_path):
    synth.synth_clip(tmp_path / "clips" / "late.mp4", seconds=1.6, seed=64, offset_frames=-3)
    edge = score_table(tmp_path / "clips", tmp_path / "edge.parquet", "--max-offset", "3")
    inside = score_table(tmp_path / "clips", tmp_path / "inside.parquet", "--max-offset", "4")
    assert edge.loc["late.mp4", "offset_frames"] == inside.loc["late.mp4", "offset_frames"] == -3
    assert len(edge.loc["late.mp4", "profile"]) == 7 and len(inside.loc["late.mp4", "profile"]) == 9
    assert bool(edge.loc["late.mp4", "at_search_edge"]) is True
    assert bool(inside.loc["late.mp4", "at_search_edge"]) is False


# --- other frame rates ---------------------------------------------------------------------------

RATES = {  # name: (ffmpeg video filter, true offset)
    "fps30.mp4": ("fps=30", 4),
    "fps29.97.mp4": ("fps=30000/1001", -3),
    "fps50.mp4": ("fps=50", 6),
    "vfr.mp4": (r"select='not(eq(mod(n\,4)\,3))'", -5),  # every 4th frame dropped, times kept
}


@pytest.fixture(scope="module")
def other_rates(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rates")
    (folder / "clips").mkdir()
    for i, (name, (video_filter, offset)) in enumerate(RATES.items()):
        source = folder / "25fps" / name
        synth.synth_clip(source, seconds=2.0, seed=950 + i, offset_frames=offset)
        variable = ["-fps_mode", "vfr"] if name == "vfr.mp4" else []
        media.run_ffmpeg(
            ["-y", "-i", str(source), "-vf", video_filter, *variable]
            + ["-c:v", "libx264", "-crf", "18", "-c:a", "copy", str(folder / "clips" / name)]
        )
    (folder / "clips" / "broken.mp4").write_bytes(b"not a video")
    return folder / "clips", score_table(folder / "clips", folder / "scores.parquet")


def _frame_intervals(path) -> set[Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = sorted(frame.pts * stream.time_base for frame in container.decode(stream))
    return {b - a for a, b in zip(times, times[1:], strict=False)}


@pytest.mark.parametrize("name", list(RATES))
def test_clips_at_other_frame_rates_score_their_known_offset(other_rates, name):
    folder, table = other_rates
    row = table.loc[name]
    assert row.status == "ok"
    assert row.offset_frames == RATES[name][1]
    assert row.offset_seconds == pytest.approx(RATES[name][1] / 25)
    assert row.prob_at_offset > 0.7
    assert row.offscreen_ratio < 0.2 and not row.at_search_edge
    assert row.n_frames in (49, 50)  # 2 s at 25 fps (a dropped last frame shortens VFR)
    expected_fps = {"fps30.mp4": 30, "fps29.97.mp4": 30000 / 1001, "fps50.mp4": 50}
    if name in expected_fps:
        assert row.source_fps == pytest.approx(expected_fps[name], rel=1e-4)
        assert len(_frame_intervals(folder / name)) == 1
    else:
        assert len(_frame_intervals(folder / name)) > 1  # really variable


# --- the worker path -----------------------------------------------------------------------------


def test_workers_give_exactly_the_rows_of_the_in_process_path(other_rates, tmp_path, monkeypatch):
    """The clips above through a worker process (the CLI's default path): none dropped or
    altered. One worker keeps two clips in flight and takes the next as one finishes, so
    four clips and a broken file go through every part of the refill loop. The worker hands
    clips back through files in a temporary folder: none may be left behind."""
    folder, table = other_rates
    inline = table.drop(columns=["root", "scored_at", "run_id"]).sort_index()
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    pooled = score_table(folder, tmp_path / "pooled.parquet", workers=1)
    assert not list(temporary.iterdir())
    pooled = pooled.drop(columns=["root", "scored_at", "run_id"]).sort_index()
    assert list(pooled.index) == sorted(["broken.mp4", *RATES])
    assert list(inline.index) == list(pooled.index)
    lists = ["p_t", "onscreen", "profile"]
    pd.testing.assert_frame_equal(
        inline.drop(columns=lists), pooled.drop(columns=lists), check_exact=False, rtol=1e-5
    )
    for column in lists:
        for a, b in zip(inline[column], pooled[column], strict=True):
            if a is None or b is None:
                assert a is None and b is None
            else:
                np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), atol=2e-4)
    assert pooled.loc["broken.mp4", "status"] == "decode_error"
