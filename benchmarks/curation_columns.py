"""The curation columns against what is known: speech_ratio, frozen_ratio and yaw_deg.

- speech_ratio: synthetic clips (ordinary and silence-heavy, `synth`), measured on the
  decoded clip against the synth's own voiced truth (`voiced_frames`); and noise that is
  loud but not speech.
- frozen_ratio: synthetic clips with and without stutter (truth `stutter_frames`), through
  the pre-cropped path (`--face-detector none`, the model's mouth crops) and the detector
  path (a fixed box, so the face box is compared); the real clips of ../shared as they are,
  read from a 12.5 fps copy (every other frame repeated by the decoder: truth 0.5), and
  that copy encoded again at 25 fps (repeated images with coding noise: truth 0.5).
- yaw_deg: the real clips with CenterFace, each frame and its mirror image (the yaw must
  change sign), and the median per clip (README of the clips: which are frontal, which 3/4).

    python benchmarks/curation_columns.py [--seeds 16] [--tolerances 0.03,0.05,0.1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from synccurate.faces import detectors, quality
from synccurate.faces.extract import extract_face_tracks
from synccurate.io import audio, media
from synccurate.models.icsyncnet import MouthRecipe
from synccurate.training import synth

REAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"
RECIPE = MouthRecipe(crop_hw=(32, 64))
SECONDS = 6.0


class FixedBox:
    """A detector that finds the synthetic face where it is drawn, with 1 px of noise."""

    name = "fixed"

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def detect(self, frames: np.ndarray) -> list:
        noise = self.rng.normal(0, 1, (len(frames), 4))
        return [[(10 + a, 8 + b, 86 + c, 90 + d, 1.0)] for a, b, c, d in noise]


def frozen_at(changes: np.ndarray, has_face: np.ndarray, tolerance: float) -> float:
    with np.errstate(invalid="ignore"):
        return float((changes <= tolerance)[has_face].mean())


def speech(seeds: int, folder: Path) -> None:
    print("speech_ratio on synthetic clips (decoded), truth = synth voiced_frames")
    for heavy in (False, True):
        errors, agreement = [], []
        for seed in range(seeds):
            path = folder / f"speech_{seed}_{heavy}.mp4"
            record = synth.synth_clip(path, seconds=SECONDS, seed=seed, silence_heavy=heavy)
            _, _, truth = synth.synth_arrays(seconds=SECONDS, seed=seed, silence_heavy=heavy)
            samples = media.decode_audio(media.probe(path))
            voiced = audio.frame_voicing(samples, record["n_frames"])
            errors.append(voiced.mean() - truth["voiced_frames"].mean())
            agreement.append((voiced == truth["voiced_frames"]).mean())
        errors = np.array(errors)
        print(
            f"  {'silence-heavy' if heavy else 'ordinary':13} clips: error mean "
            f"{errors.mean():+.3f}, largest |error| {np.abs(errors).max():.3f}, frames "
            f"agreeing {np.mean(agreement):.3f}"
        )
    rng = np.random.default_rng(0)
    white = rng.normal(0, 0.1, audio.SAMPLE_RATE * 10)
    import scipy.signal

    hiss = scipy.signal.sosfilt(
        scipy.signal.butter(4, 3000, btype="highpass", fs=audio.SAMPLE_RATE, output="sos"), white
    )
    hum = scipy.signal.sosfilt(
        scipy.signal.butter(4, 1000, btype="lowpass", fs=audio.SAMPLE_RATE, output="sos"), white
    )
    for name, noise in (("white noise", white), ("hiss > 3 kHz", hiss), ("noise < 1 kHz", hum)):
        n = len(noise) // audio.SAMPLES_PER_FRAME
        print(
            f"  {name} at {20 * np.log10(noise.std()):.0f} dBFS: silence_ratio "
            f"{audio.frame_silence(noise, n).mean():.2f}, speech_ratio "
            f"{audio.frame_voicing(noise, n).mean():.3f}"
        )


def frozen(seeds: int, tolerances: list[float], folder: Path) -> None:
    print("frozen_ratio on synthetic clips, truth = synth stutter_frames (error per clip)")
    found: dict[str, list] = {"none": [], "detector": []}
    for seed in range(seeds):
        for stutter in (True, False):
            heavy = seed % 2 == 1
            path = folder / f"stutter_{seed}_{stutter}.mp4"
            record = synth.synth_clip(
                path, seconds=SECONDS, seed=100 + seed, stutter=stutter, silence_heavy=heavy
            )
            truth = float(np.mean(record["stutter_frames"]))
            info = media.probe(path)
            paths = (("none", detectors.WholeFrameDetector()), ("detector", FixedBox()))
            for name, detector in paths:
                [track] = extract_face_tracks(info, detector, RECIPE, detect_every=4)
                found[name].append((track.changes, track.has_face, truth))
    for name, clips in found.items():
        for tolerance in tolerances:
            errors = np.array([frozen_at(c, h, tolerance) - t for c, h, t in clips])
            print(
                f"  {name:8} tolerance {tolerance:g}: mean |error| {np.abs(errors).mean():.3f}, "
                f"largest {np.abs(errors).max():.3f}, mean error {errors.mean():+.3f}"
            )
    if not REAL.is_dir():
        print(f"real clips not found at {REAL}: skipped")
        return
    print("frozen_ratio on the real clips (CenterFace): as they are / 12.5 fps / re-encoded")
    centerface = detectors.make_detector("centerface")
    for clip in sorted(p for p in REAL.iterdir() if p.suffix.lower() in media.VIDEO_EXTENSIONS):
        low, again = folder / f"{clip.stem}.12fps.mp4", folder / f"{clip.stem}.25fps.mp4"
        media.run_ffmpeg(["-y", "-i", str(clip), "-vf", "fps=12.5", "-crf", "20", "-an", str(low)])
        media.run_ffmpeg(["-y", "-i", str(low), "-vf", "fps=25", "-crf", "23", "-an", str(again)])
        cells = []
        for path in (clip, low, again):
            track = extract_face_tracks(media.probe(path), centerface, RECIPE, detect_every=4)[0]
            cells.append(
                "/".join(f"{frozen_at(track.changes, track.has_face, t):.2f}" for t in tolerances)
            )
        print(f"  {clip.name:20} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16}")


def yaw() -> None:
    if not REAL.is_dir():
        print(f"real clips not found at {REAL}: yaw skipped")
        return
    print("yaw_deg on the real clips (CenterFace, every 5th frame): median, and the")
    print("median |yaw(frame) + yaw(mirrored frame)| (0 for a consistent estimate)")
    centerface = detectors.make_detector("centerface")
    for clip in sorted(p for p in REAL.iterdir() if p.suffix.lower() in media.VIDEO_EXTENSIONS):
        frames = np.concatenate(list(media.iter_video_frames(media.probe(clip))))[::5]
        yaws, sums = [], []
        for frame in frames:
            pair = [centerface.detect(f[None])[0] for f in (frame, frame[:, ::-1].copy())]
            if not all(pair):
                continue
            a, b = (quality.yaw_from_landmarks(np.array(max(f, key=_side)[5:15])) for f in pair)
            yaws.append(a)
            sums.append(abs(a + b))
        print(
            f"  {clip.name:20} median yaw {np.median(yaws):+6.1f}°, range {min(yaws):+6.1f} … "
            f"{max(yaws):+6.1f}°, mirror mismatch {np.median(sums):.1f}°"
        )


def _side(face) -> float:
    return face[2] - face[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--tolerances", default="0.03,0.05,0.1,0.2")
    args = parser.parse_args()
    tolerances = [float(t) for t in args.tolerances.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        speech(args.seeds, Path(folder))
        frozen(args.seeds, tolerances, Path(folder))
        yaw()
    return 0


if __name__ == "__main__":
    sys.exit(main())
