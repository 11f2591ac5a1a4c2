"""SyncNet v2 statistics and crops against answers worked out by hand (no ../shared needed).

The parity fixtures use random weights: every distance of a clip is nearly the same, so a
statistic computed another way (median instead of mean, another column, no median filter)
stays within their tolerance. Here the distance matrix is built by hand so that each way
gives a different number, and every expected value is derived in the comments.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from synccurate.faces import detectors
from synccurate.io import media
from synccurate.io.inputs import ClipRef
from synccurate.models.syncnet_v2 import FACE_SIZE, FaceCropRecipe, SyncNetV2Model, v2_summary
from synccurate.pipeline.prepare import prepare_clip

# Upstream's column order: column k is offset K - k; here K = 2, so columns are the
# offsets +2, +1, 0, -1, -2. Ten windows, all with a face.
PLUS_1 = [8, 9, 8, 7.5, 8.5, 9, 7.5, 7.5, 7.5, 7.5]  # mean 8.0, median 7.75
MINUS_1 = [7] * 6 + [12.5] * 4  # mean 9.2, median 7.0: windows 0-5 are closest here
DISTANCES = np.array([[10, p, 9.5, m, 14] for p, m in zip(PLUS_1, MINUS_1, strict=True)])
# Mean distance per column (mdist): [10, 8, 9.5, 9.2, 14]; median over offsets 9.5 (the
# mean over offsets, 10.14, is another number). Minimum 8 at offset +1.
MDIST = [10, 8, 9.5, 9.2, 14]
# Votes: windows 0-5 are closest at -1 (7 < 7.5), windows 6-9 at +1 (7.5 < 9.5, 10, 12.5):
# the vote is -1 with 6 of 10 windows, against the mean's +1.
# fconf: 9.5 - the distances at +1, i.e. [1.5, .5, 1.5, 2, 1, .5, 2, 2, 2, 2], through a
# 9-tap median with 4 zeros on each side. Window 0 sees 0,0,0,0,1.5,.5,1.5,2,1 → 0.5;
# window 2 sees 0,0,1.5,.5,1.5,2,1,.5,2 → 1.0; window 5 sees .5,1.5,2,1,.5,2,2,2,2 → 2.0;
# window 9 sees .5,2,2,2,2,0,0,0,0 → 0.5.
FCONF = [0.5, 0.5, 1.0, 1.5, 1.5, 2.0, 2.0, 2.0, 1.0, 0.5]


def v2_model() -> SyncNetV2Model:
    """The v2 metrics need no network: a stand-in module is used as it is."""
    return SyncNetV2Model(torch.nn.Identity(), "syncnet-v2@test")


def similarity(distances: np.ndarray) -> torch.Tensor:
    """What SyncNetV2Model.similarity gives: S = -d with columns in offset order (-K … K)."""
    return -torch.tensor(distances, dtype=torch.float32).flip(1)


def test_v2_summary_reads_upstreams_statistics_off_a_hand_built_matrix():
    summary = v2_summary(torch.tensor(DISTANCES, dtype=torch.float32))
    np.testing.assert_allclose(summary["mdist"], MDIST, rtol=1e-6)
    assert summary["offset"] == 1  # column 1 = offset K - 1 = +1
    assert summary["min_dist"] == pytest.approx(8.0)
    assert summary["conf"] == pytest.approx(9.5 - 8.0)  # median over offsets - min
    np.testing.assert_allclose(summary["fdist"], PLUS_1)
    np.testing.assert_allclose(summary["fconf"], FCONF, atol=1e-6)


def test_v2_metrics_by_the_mean_profile():
    metrics = v2_model().metrics(similarity(DISTANCES), np.ones(10, dtype=bool))
    assert metrics["offset_frames"] == 1 and metrics["offset_seconds"] == pytest.approx(0.04)
    assert metrics["lse_d"] == pytest.approx(8.0)
    assert metrics["lse_c"] == pytest.approx(1.5) and metrics["confidence"] == metrics["lse_c"]
    assert (metrics["vote_offset"], metrics["vote_share"]) == (-1, pytest.approx(0.6))
    assert metrics["at_search_edge"] is False
    # profile in offset order -2 … +2: minus the mean distances, reversed
    np.testing.assert_allclose(metrics["profile"], [-14, -9.2, -9.5, -8, -10], atol=1e-4)
    np.testing.assert_allclose(metrics["fconf"], FCONF, atol=1e-4)


def test_v2_metrics_by_the_vote_read_lse_at_the_voted_offset():
    metrics = v2_model().metrics(similarity(DISTANCES), np.ones(10, dtype=bool), "vote")
    assert metrics["offset_frames"] == -1 and metrics["offset_method"] == "vote"
    assert metrics["lse_d"] == pytest.approx(9.2)  # the mean distance at -1
    assert metrics["lse_c"] == pytest.approx(9.5 - 9.2, abs=1e-5)
    assert (metrics["vote_offset"], metrics["vote_share"]) == (-1, pytest.approx(0.6))
    np.testing.assert_allclose(metrics["fconf"], FCONF, atol=1e-4)  # fconf stays upstream's


def test_v2_windows_without_a_face_stay_out_of_means_and_votes():
    """Two face-less windows at distance 0 everywhere: in the means they would lower LSE-D
    to 80/12; voting (all offsets tie → 0) they would make the share 6/12."""
    with_faceless = np.concatenate([DISTANCES, np.zeros((2, 5))])
    valid = np.r_[np.ones(10, dtype=bool), False, False]
    metrics = v2_model().metrics(similarity(with_faceless), valid)
    assert metrics["offset_frames"] == 1
    assert metrics["lse_d"] == pytest.approx(8.0) and metrics["lse_c"] == pytest.approx(1.5)
    assert (metrics["vote_offset"], metrics["vote_share"]) == (-1, pytest.approx(0.6))
    assert len(metrics["fconf"]) == 12  # fconf covers every window, as upstream's
    np.testing.assert_allclose(metrics["fconf"][:6], FCONF[:6], atol=1e-4)  # far from the end


class FixedBoxDetector:
    """One face box, the same in every frame (source pixels: the frames are small)."""

    name = "fixed-box"

    def __init__(self, box: tuple[float, float, float, float]):
        self.box = box

    def detect(self, frames: np.ndarray) -> list:
        return [[(*self.box, 1.0)] for _ in frames]


def test_v2_crop_from_a_face_track_is_syncnet_pythons_region(tmp_path: Path):
    """A face box 80 wide, 100 high at x 100…180, y 50…150 (centre 140, 100). The track is
    squared by the 13-frame median (half-size = max(80, 100) / 2 = 50); upstream's crop is
    then rows [100 - 50, 100 + 1.8·50) = [50, 190) and columns [140 - 1.4·50, 140 + 1.4·50) =
    [70, 210), a 140 px square resized to 224². The frame is black except that region: a
    grey-60 band 8 px wide along its edge and grey 200 inside, so a crop that is shifted,
    larger or smaller shows black or loses the band on some side."""
    frames = np.zeros((10, 240, 320, 3), dtype=np.uint8)
    frames[:, 50:190, 70:210] = 60
    frames[:, 58:182, 78:202] = 200
    audio = np.zeros(10 * 640, dtype=np.float32)
    media.write_clip(tmp_path / "face.mp4", frames, audio, crf=0)
    detector = FixedBoxDetector((100.0, 50.0, 180.0, 150.0))
    clip = prepare_clip(ClipRef(str(tmp_path), "face.mp4"), FaceCropRecipe(), detector)
    assert clip.status == "ok", clip.error
    assert clip.crops.shape == (10, FACE_SIZE, FACE_SIZE, 3) and clip.has_face.all()
    crop = clip.crops[5].astype(int)
    band = 8 * FACE_SIZE // 140  # 12 px of the crop
    edges = {
        "top": crop[: band - 2],
        "bottom": crop[-band + 2 :],
        "left": crop[:, : band - 2],
        "right": crop[:, -band + 2 :],
    }
    for side, pixels in edges.items():
        assert np.abs(pixels - 60).max() <= 4, f"{side} edge of the crop is not the band"
    inside = crop[band + 2 : -band - 2, band + 2 : -band - 2]
    assert np.abs(inside - 200).max() <= 4
    assert (clip.crops == clip.crops[:1]).all()  # a still face: the same crop in every frame


def test_the_none_detector_gives_v2_the_whole_frame(tmp_path: Path):
    """With `--face-detector none` the frame is the face: resized whole, no v2 margins."""
    frames = np.zeros((10, 112, 112, 3), dtype=np.uint8)
    frames[:, :56] = 200  # upper half light, lower half black
    media.write_clip(tmp_path / "face.mp4", frames, np.zeros(6400, np.float32), crf=0)
    clip = prepare_clip(
        ClipRef(str(tmp_path), "face.mp4"), FaceCropRecipe(), detectors.make_detector("none")
    )
    assert clip.status == "ok", clip.error
    rows = clip.crops[0].astype(int).mean(axis=(1, 2))
    assert (np.abs(rows[:108] - 200) <= 4).all() and (rows[116:] <= 4).all()
