"""Synthetic talking-head clips with exact ground truth.

A procedurally drawn face (the whole frame is the face, VoxCeleb/LRS style) whose
mouth follows a synthetic speech track: the lip opening tracks the loudness of the
on-screen voice at each video frame and the lip shape tracks its vowel. The clips
train a small sync model on CPU and test the pipeline with known answers:

- ``offset_frames`` (SPEC §6 sign): +N means the audio was ADVANCED by N frames
  (audio leads: the sound of frame t is heard at frame t - N); -N means delayed.
- an off-screen stretch: a second voice speaks while the face's mouth stays shut;
- silence-heavy clips (about 70 % pauses);
- stutter: video frames held for 3-8 frames, audio untouched;
- a partial shift: for one stretch of the clip the audio is shifted by
  ``partial_shift_frames`` more (the clip's offset differs over time, so the
  mean offset profile and the per-window vote of ModEFormer §3.5 can disagree);
- drift: the offset grows by ``drift_ms_per_min`` every minute (a recorder's clock, a
  29.97/30 mix-up), and an offset step: from ``offset_step = (seconds, frames)`` on the
  offset is that many frames larger (an edit).

Everything is drawn from ``numpy.random.SeedSequence(seed)``: one seed gives the
same frames and samples bit for bit, and the options draw from their own child
streams, so the same seed with another offset is the same performance, shifted.
"""

from __future__ import annotations

import multiprocessing
import os
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import scipy.signal

from synccurate.io import media
from synccurate.io.audio import (
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    VIDEO_FPS,
    delay_samples,
    frame_silence,
)

MANIFEST_NAME = "manifest.parquet"
CLIP_NAME = "clip_{index:05d}.mp4"
MANIFEST_COLUMNS = (
    "path",  # relative to the data set folder
    "index",
    "seed",  # the clip's own seed: synth_arrays(seed=...) rebuilds it
    "seconds",
    "n_frames",
    "size",
    "true_offset_frames",  # SPEC §6 sign: + = audio advanced (leads)
    "offscreen_start",  # first off-screen frame; start == end when there is none
    "offscreen_end",  # one past the last
    "offscreen_frames",  # list[bool] per video frame
    "offscreen_ratio",
    "silence_frames",  # list[bool] per video frame, audio.frame_silence of the file's audio
    "silence_ratio",
    "silence_heavy",
    "stutter",
    "stutter_frames",  # list[bool]: frames that repeat the previous image
    "partial_shift_frames",  # extra offset (SPEC §6 sign) of the partially shifted stretch
    "partial_shift_start",  # its first frame; start == end when there is none
    "partial_shift_end",  # one past its last frame
    "drift_ms_per_min",  # the offset grows by this much a minute (SPEC §6 sign, ms)
    "offset_step_s",  # when the offset steps (None: no step)
    "offset_step_frames",  # by how many frames (SPEC §6 sign)
)
MS_PER_FRAME = 1000 // VIDEO_FPS  # 40 ms
SECONDS_PER_MINUTE = 60

# --- speech ------------------------------------------------------------------------------
# Vowel formants F1..F3 (Hz, Peterson & Barney averages) and the mouth shape they get:
# (width factor, opening factor). 'o'/'u' rounded and narrow, 'a' wide open, 'i'/'e' wide flat.
VOWELS = ("a", "e", "i", "o", "u")
FORMANTS = np.array(
    [[730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010], [570, 840, 2410], [300, 870, 2240]],
    dtype=np.float64,
)
FORMANT_BANDWIDTHS = (80.0, 100.0, 150.0)
FRICATIVE = len(VOWELS)  # class index of fricative noise; -1 is silence
MOUTH_SHAPES = np.array(
    # width, opening  (a, e, i, o, u, fricative)
    [[1.00, 1.00], [1.08, 0.72], [1.18, 0.50], [0.72, 1.00], [0.56, 0.85], [0.80, 0.30]],
    dtype=np.float64,
)
PITCH_RANGE = (90.0, 250.0)  # Hz, base pitch of a voice
SYLLABLE_MS = (80, 250)  # vowel nucleus
FRICATIVE_MS = (40, 110)
WORD_GAP_MS = (0, 60)  # between syllables of one word
PAUSE_MS = (50, 450)  # between words (skewed short, see _speech)
SILENCE_HEAVY_PAUSE_MS = (500, 1500)  # gives about 70 % silent frames
NOISE_FLOOR_DBFS = (-72.0, -58.0)  # room noise added to the final track (below SILENCE_DBFS)
PEAK_RANGE = (0.35, 0.9)  # clip peak level after normalisation

# --- video -------------------------------------------------------------------------------
SUPERSAMPLE = 2  # frames are drawn at 2x and area-downsampled (anti-aliasing, sub-pixel motion)
MOUTH_INTERIOR = (22, 6, 10)  # RGB, dark: the mouth opening a test can count
TEETH = (235, 232, 220)
STUTTER_HOLD = (3, 8)  # frames one held image lasts
STUTTER_EVERY_S = 1.5  # one hold per this many seconds
OFFSCREEN_VOICE_GAP = 1.35  # the off-screen voice's pitch differs by at least this ratio
OFFSCREEN_FADE = 161  # samples (10 ms) of cross-fade at the edges of the off-screen stretch


def _ms(rng: np.random.Generator, span: tuple[float, float]) -> int:
    return int(rng.uniform(*span) * SAMPLE_RATE / 1000)


def _envelope(length: int, rng: np.random.Generator) -> np.ndarray:
    """Raised-cosine attack and decay around a flat top."""
    env = np.ones(length)
    attack = min(length // 2, _ms(rng, (10, 40)))
    decay = min(length - attack, _ms(rng, (30, 90)))
    if attack:
        env[:attack] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, attack))
    if decay:
        env[length - decay :] = 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, decay))
    return env


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.sqrt(np.mean(x**2))), 1e-9)


def _resonator(x: np.ndarray, freq: float, bandwidth: float) -> np.ndarray:
    r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
    theta = 2 * np.pi * freq / SAMPLE_RATE
    return scipy.signal.lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], x)


def _voiced(length: int, vowel: int, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    """Glottal pulse train with a gliding pitch through the vowel's formant resonances."""
    t = np.arange(length) / length
    semitones = (
        rng.uniform(-3, 3) * t + rng.uniform(-2, 2) + rng.normal(0, 0.05, length).cumsum() / 20
    )
    f0 = voice.pitch * 2 ** (semitones / 12)
    phase = rng.random() + np.cumsum(f0) / SAMPLE_RATE
    source = np.diff(np.floor(phase), prepend=np.floor(phase[0])).astype(np.float64)
    source = scipy.signal.lfilter([1.0], [1.0, -0.9], source)  # glottal roll-off
    source += rng.normal(0, 0.02, length)  # aspiration
    out = source
    for formant, bandwidth in zip(FORMANTS[vowel] * voice.tract, FORMANT_BANDWIDTHS, strict=True):
        out = _resonator(out, formant, bandwidth)
    return _unit_rms(np.diff(out, prepend=0.0))  # lip radiation


def _fricative(length: int, rng: np.random.Generator) -> np.ndarray:
    cutoff = rng.uniform(2500, 5000)
    sos = scipy.signal.butter(4, cutoff, btype="highpass", fs=SAMPLE_RATE, output="sos")
    return _unit_rms(scipy.signal.sosfilt(sos, rng.normal(0, 1, length)))


@dataclass(frozen=True)
class Voice:
    pitch: float  # base f0, Hz
    tract: float  # formant scale (vocal-tract length)


def _speech(
    n_samples: int,
    voice: Voice,
    rng: np.random.Generator,
    silence_heavy: bool,
    lead_ms: tuple[float, float] = (0, 200),
):
    """Samples [n] and per-sample class labels (-1 silence, 0..4 vowel, 5 fricative)."""
    samples = np.zeros(n_samples)
    labels = np.full(n_samples, -1, dtype=np.int8)
    pause_ms = SILENCE_HEAVY_PAUSE_MS if silence_heavy else PAUSE_MS
    pos = _ms(rng, lead_ms)

    def put(segment: np.ndarray, label: int) -> None:
        nonlocal pos
        end = min(pos + len(segment), n_samples)
        if end > pos:
            samples[pos:end] += segment[: end - pos]
            labels[pos:end] = label
        pos += len(segment)

    while pos < n_samples:
        for _ in range(rng.integers(1, 3 if silence_heavy else 4)):
            loudness = rng.uniform(0.45, 1.0)
            if rng.random() < 0.35:
                length = _ms(rng, FRICATIVE_MS)
                put(_fricative(length, rng) * _envelope(length, rng) * 0.4 * loudness, FRICATIVE)
            vowel = int(rng.integers(len(VOWELS)))
            length = _ms(rng, SYLLABLE_MS)
            put(_voiced(length, vowel, voice, rng) * _envelope(length, rng) * loudness, vowel)
            if rng.random() < 0.15:
                length = _ms(rng, FRICATIVE_MS)
                put(_fricative(length, rng) * _envelope(length, rng) * 0.35 * loudness, FRICATIVE)
            pos += _ms(rng, WORD_GAP_MS)
        pause = _ms(rng, pause_ms)
        if not silence_heavy and rng.random() < 0.6:  # most pauses in running speech are short
            pause = _ms(rng, (pause_ms[0], pause_ms[0] + 100))
        pos += pause
    return samples, labels


def _soft_mask(mask: np.ndarray, width: int) -> np.ndarray:
    """A boolean mask with raised-cosine edges `width` samples long (values 0..1)."""
    kernel = np.hanning(width)
    kernel /= kernel.sum()
    padded = np.pad(mask.astype(np.float64), width // 2, mode="edge")
    return np.convolve(padded, kernel, "valid")


def _frame_rms(samples: np.ndarray, n_frames: int) -> np.ndarray:
    framed = samples[: n_frames * SAMPLES_PER_FRAME].reshape(n_frames, SAMPLES_PER_FRAME)
    return np.sqrt(np.mean(framed**2, axis=1))


def shift_audio(samples: np.ndarray, offset_frames: int) -> np.ndarray:
    """Shift a track by offset_frames * 640 samples in the SPEC §6 sign, keeping its length.

    +N advances the audio (drop the start, pad silence at the end): the sound of
    frame t is then heard at frame t - N. -N delays it (pad the start, trim the end).
    """
    return delay_samples(samples, -offset_frames * SAMPLES_PER_FRAME)


# --- face --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Face:
    """Per-clip appearance, in pixels of the supersampled canvas."""

    canvas: int
    background: np.ndarray  # [canvas, canvas, 3] uint8
    skin: tuple[int, int, int]
    lips: tuple[int, int, int]
    hair: tuple[int, int, int] | None
    iris: tuple[int, int, int]
    center: tuple[float, float]
    axes: tuple[float, float]  # face ellipse half-axes
    mouth_width: float  # half-width of the open mouth
    mouth_height: float  # half-height of the fully open mouth
    lip_thickness: float


def _draw_face(rng: np.random.Generator, size: int) -> Face:
    canvas = size * SUPERSAMPLE
    while True:
        background_colour = rng.integers(50, 236, 3)
        if background_colour @ (0.299, 0.587, 0.114) > 90:
            break
    gradient = np.linspace(1.0 + rng.uniform(0, 0.15), 1.0 - rng.uniform(0, 0.15), canvas)
    background = np.clip(background_colour[None, None, :] * gradient[:, None, None], 0, 255)
    background = np.broadcast_to(background, (canvas, canvas, 3)).astype(np.uint8)
    tone = rng.random()  # light .. dark skin
    skin = np.array([235, 198, 172]) * (1 - tone) + np.array([122, 84, 62]) * tone
    skin = skin * rng.uniform(0.95, 1.05, 3)
    lips = np.array([150, 45, 55]) * rng.uniform(0.8, 1.1) + rng.integers(-10, 11, 3)
    hair_choices = [(35, 25, 20), (70, 45, 25), (20, 20, 22), (180, 150, 90), (130, 125, 120)]
    hair = hair_choices[rng.integers(len(hair_choices))] if rng.random() < 0.85 else None
    iris_choices = [(70, 45, 25), (60, 90, 130), (80, 110, 70), (40, 30, 25)]
    scale = rng.uniform(0.9, 1.08)
    ax, ay = 0.36 * canvas * scale, 0.46 * canvas * scale
    cx = canvas * (0.5 + rng.uniform(-0.04, 0.04))
    cy = canvas * (0.48 + rng.uniform(-0.03, 0.03))
    return Face(
        canvas=canvas,
        background=background,
        skin=tuple(int(v) for v in np.clip(skin, 0, 255)),
        lips=tuple(int(v) for v in np.clip(lips, 0, 255)),
        hair=hair,
        iris=iris_choices[rng.integers(len(iris_choices))],
        center=(cx, cy),
        axes=(ax, ay),
        mouth_width=ax * rng.uniform(0.38, 0.46),
        mouth_height=ay * rng.uniform(0.15, 0.19),
        lip_thickness=ay * rng.uniform(0.045, 0.06),
    )


def _smooth_noise(rng: np.random.Generator, n: int, low_hz: float, high_hz: float) -> np.ndarray:
    """Sum of three random slow sinusoids, peak amplitude about 1."""
    t = np.arange(n) / VIDEO_FPS
    freqs = rng.uniform(low_hz, high_hz, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    weights = rng.uniform(0.5, 1.0, 3)
    return (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(0) / 2


@dataclass(frozen=True)
class Pose:
    dx: np.ndarray  # per-frame drift in canvas pixels
    dy: np.ndarray
    scale: np.ndarray
    roll: np.ndarray  # degrees
    blink: np.ndarray  # per-frame eye openness 0..1


def _motion(rng: np.random.Generator, n: int, canvas: int) -> Pose:
    drift = rng.uniform(0.01, 0.035) * canvas
    blink = np.ones(n)
    t = int(rng.integers(0, 3 * VIDEO_FPS))
    while t < n:
        blink[t : t + 3] = 0.0
        t += int(rng.integers(2 * VIDEO_FPS, 5 * VIDEO_FPS))
    return Pose(
        dx=drift * _smooth_noise(rng, n, 0.1, 0.6),
        dy=drift * _smooth_noise(rng, n, 0.1, 0.6),
        scale=1 + rng.uniform(0.01, 0.03) * _smooth_noise(rng, n, 0.05, 0.4),
        roll=rng.uniform(0, 3) * _smooth_noise(rng, n, 0.05, 0.4),
        blink=blink,
    )


_SHIFT = 4  # cv2 fractional bits for sub-pixel drawing
_ONE = 1 << _SHIFT


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x * _ONE)), int(round(y * _ONE))


def _ellipse(img, center, axes, angle, colour, thickness=-1, arc=(0, 360)) -> None:
    axes = (max(int(round(axes[0] * _ONE)), 0), max(int(round(axes[1] * _ONE)), 0))
    cv2.ellipse(
        img, _pt(*center), axes, angle, arc[0], arc[1], colour, thickness, cv2.LINE_AA, _SHIFT
    )


@dataclass(frozen=True)
class _Placement:
    """Face-local coordinates (offsets from the face centre) → canvas, for one frame's pose."""

    cx: float
    cy: float
    scale: float
    angle: float  # degrees of roll

    def at(self, u: float, v: float) -> tuple[float, float]:
        cos, sin = np.cos(np.radians(self.angle)), np.sin(np.radians(self.angle))
        return self.cx + self.scale * (cos * u - sin * v), self.cy + self.scale * (
            sin * u + cos * v
        )

    def sc(self, a: float, b: float) -> tuple[float, float]:
        return a * self.scale, b * self.scale


def _render_frame(face: Face, pose: Pose, t: int, opening: float, shape: int) -> np.ndarray:
    img = face.background.copy()
    cx0, cy0 = face.center
    place = _Placement(cx0 + pose.dx[t], cy0 + pose.dy[t], pose.scale[t], pose.roll[t])
    shade = tuple(int(c * 0.78) for c in face.skin)
    _draw_head(img, face, place, shade)
    _draw_eyes(img, face, place, shade, eyes_open=pose.blink[t] > 0.5)
    _draw_nose(img, face, place, shade)
    _draw_mouth(img, face, place, opening, shape)
    return cv2.resize(img, (face.canvas // SUPERSAMPLE,) * 2, interpolation=cv2.INTER_AREA)


def _draw_head(img: np.ndarray, face: Face, place: _Placement, shade: tuple) -> None:
    """Neck, hair, the face oval and the fringe."""
    at, sc, angle = place.at, place.sc, place.angle
    ax, ay = face.axes
    neck = np.array([at(-0.55 * ax, 0.5 * ay), at(0.55 * ax, 0.5 * ay)])
    cv2.rectangle(
        img,
        _pt(neck[0][0], neck[0][1]),
        _pt(neck[1][0], face.canvas + 10),
        shade,
        -1,
        cv2.LINE_AA,
        _SHIFT,
    )
    if face.hair is not None:
        _ellipse(img, at(0, -0.28 * ay), sc(1.08 * ax, 0.82 * ay), angle, face.hair)
    _ellipse(img, at(0, 0), sc(ax, ay), angle, face.skin)
    if face.hair is not None:  # fringe
        _ellipse(img, at(0, -0.78 * ay), sc(0.9 * ax, 0.3 * ay), angle, face.hair, arc=(180, 360))


def _draw_eyes(
    img: np.ndarray, face: Face, place: _Placement, shade: tuple, eyes_open: bool
) -> None:
    """Both eyes (open, or lids closed in a blink) and their brows."""
    at, sc, angle = place.at, place.sc, place.angle
    ax, ay = face.axes
    brow = face.hair if face.hair is not None else shade
    for side in (-1, 1):
        ex, ey = 0.4 * ax * side, -0.18 * ay
        if eyes_open:
            _ellipse(img, at(ex, ey), sc(0.2 * ax, 0.085 * ay), angle, (245, 245, 240))
            _ellipse(img, at(ex, ey), sc(0.085 * ax, 0.085 * ax), angle, face.iris)
            _ellipse(img, at(ex, ey), sc(0.04 * ax, 0.04 * ax), angle, (15, 15, 15))
        else:  # lid closed
            _ellipse(img, at(ex, ey), sc(0.2 * ax, 0.085 * ay), angle, shade)
        _ellipse(img, at(ex, ey), sc(0.2 * ax, 0.085 * ay), angle, shade, 2 * SUPERSAMPLE)
        _ellipse(
            img,
            at(ex, ey - 0.1 * ay),
            sc(0.24 * ax, 0.07 * ay),
            angle,
            brow,
            int(0.035 * ay),
            arc=(200, 340),
        )


def _draw_nose(img: np.ndarray, face: Face, place: _Placement, shade: tuple) -> None:
    at, sc, angle = place.at, place.sc, place.angle
    ax, ay = face.axes
    _ellipse(img, at(0, 0.16 * ay), sc(0.12 * ax, 0.06 * ay), angle, shade, SUPERSAMPLE, (10, 170))
    for side in (-1, 1):
        _ellipse(img, at(0.06 * ax * side, 0.2 * ay), sc(0.03 * ax, 0.018 * ay), angle, shade)


def _draw_mouth(img: np.ndarray, face: Face, place: _Placement, opening: float, shape: int) -> None:
    """Lips opened by `opening` (0..1) in the given shape; teeth show for fricatives."""
    at, sc, angle, s = place.at, place.sc, place.angle, place.scale
    ay = face.axes[1]
    mx, my = at(0, 0.52 * ay)
    width_factor, open_factor = MOUTH_SHAPES[shape] if shape >= 0 else (1.0, 0.0)
    half_w = face.mouth_width * width_factor
    half_h = face.mouth_height * open_factor * opening
    lip = face.lip_thickness * (1.25 if shape in (3, 4) else 1.0)  # rounded lips pout
    _ellipse(img, (mx, my), sc(half_w + lip * 0.6, half_h + lip), angle, face.lips)
    if half_h * s > 0.4 * SUPERSAMPLE:
        _ellipse(img, (mx, my), sc(half_w, half_h), angle, MOUTH_INTERIOR)
        if shape == FRICATIVE:
            teeth_center = at(0, 0.52 * ay - 0.45 * half_h / s)
            _ellipse(img, teeth_center, sc(0.7 * half_w, 0.5 * half_h), angle, TEETH)
            _ellipse(
                img,
                (mx, my),
                sc(half_w + lip * 0.3, half_h + lip * 0.5),
                angle,
                face.lips,
                int(lip * 0.9),
            )
    else:
        slit = tuple(int(c * 0.7) for c in face.lips)
        _ellipse(img, (mx, my), sc(half_w, 0.0), angle, slit, SUPERSAMPLE)


# --- the clip ----------------------------------------------------------------------------
def _stretch(rng: np.random.Generator, fraction: float, n_frames: int) -> tuple[int, int]:
    """A seeded stretch of `fraction` of the frames: (start, end), half-open."""
    length = max(1, int(round(fraction * n_frames)))
    start = int(rng.integers(0, n_frames - length + 1))
    return start, start + length


def _with_offscreen_voice(
    speech: np.ndarray,
    labels: np.ndarray,
    pitch: float,
    offscreen: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(on-screen speech, its labels, the mix, the mix's labels): during `offscreen` frames
    another voice, of a clearly different pitch, talks while the visible face falls silent."""
    n_samples = len(speech)
    low, high = PITCH_RANGE
    if pitch * OFFSCREEN_VOICE_GAP <= high:
        other_pitch = rng.uniform(pitch * OFFSCREEN_VOICE_GAP, high)
    else:
        other_pitch = rng.uniform(low, pitch / OFFSCREEN_VOICE_GAP)
    other = Voice(pitch=other_pitch, tract=rng.uniform(0.9, 1.12))
    # the other voice starts talking as the stretch starts
    other_speech = np.zeros(n_samples)
    first = int(np.argmax(offscreen)) * SAMPLES_PER_FRAME
    other_labels = np.full(n_samples, -1, dtype=np.int8)
    other_speech[first:], other_labels[first:] = _speech(
        n_samples - first, other, rng, False, (0, 40)
    )
    fade = _soft_mask(np.repeat(offscreen, SAMPLES_PER_FRAME), OFFSCREEN_FADE)
    speech = speech * (1 - fade)
    labels = np.where(fade > 0.5, -1, labels).astype(np.int8)
    mix_labels = np.where(fade > 0.5, other_labels, labels).astype(np.int8)
    return speech, labels, speech + other_speech * fade * rng.uniform(0.7, 1.2), mix_labels


def _mouth(speech: np.ndarray, labels: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(opening 0..1, shape) per frame: the opening follows the on-screen voice's loudness,
    the shape its sound class (-1 closed, 0..4 vowel a e i o u, 5 fricative)."""
    rms = _frame_rms(speech, n_frames)
    voiced = rms[rms > 1e-6]
    reference = np.percentile(voiced, 90) if voiced.size else 1.0
    opening = np.convolve(np.clip(rms / reference, 0, 1), [0.2, 0.6, 0.2], "same")
    opening = np.clip(opening, 0.0, 1.0)
    energy = np.zeros((n_frames, len(VOWELS) + 2))  # column 0 = silence
    frame_of_sample = np.arange(len(speech)) // SAMPLES_PER_FRAME
    np.add.at(energy, (frame_of_sample, labels.astype(np.int64) + 1), speech**2)
    shape = energy[:, 1:].argmax(1)
    shape = np.where(energy[:, 1:].sum(1) > 0, shape, -1)
    closed = opening < 0.04
    return np.where(closed, 0.0, opening), np.where(closed, -1, shape)


def _stuttered(rng: np.random.Generator, n_frames: int, seconds: float) -> np.ndarray:
    """The source frame each image shows when the video freezes now and then (stutter)."""
    shown = np.arange(n_frames)
    for _ in range(max(1, int(round(seconds / STUTTER_EVERY_S)))):
        hold = int(rng.integers(STUTTER_HOLD[0], STUTTER_HOLD[1] + 1))
        if n_frames <= hold:
            break
        start = int(rng.integers(0, n_frames - hold + 1))
        shown[start + 1 : start + hold] = shown[start]
    return shown


def synth_arrays(
    *,
    seconds: float,
    seed: int,
    offset_frames: int = 0,
    offscreen_fraction: float = 0.0,
    silence_heavy: bool = False,
    stutter: bool = False,
    size: int = 96,
    partial_shift_frames: int = 0,
    partial_shift_fraction: float = 0.0,
    drift_ms_per_min: float = 0.0,
    offset_step: tuple[float, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One synthetic clip in memory: (frames uint8 [n, size, size, 3] RGB, audio float32, truth).

    The audio is 16 kHz mono with exactly n * 640 samples, already shifted by
    ``offset_frames`` (SPEC §6 sign: +N = audio advanced, leads by N frames).
    With ``partial_shift_fraction`` > 0 and ``partial_shift_frames`` = s != 0, one
    stretch of that fraction of the frames (at a seeded random place) carries the
    audio shifted by offset_frames + s instead (cross-faded over 10 ms at its edges):
    there the sound of frame t is heard at frame t - offset_frames - s.
    With ``drift_ms_per_min`` = d the offset at time τ (s) is offset_frames + d·τ/60/40
    frames; with ``offset_step`` = (τ₀, s) it is s frames larger from τ₀ on (cross-faded
    over 10 ms). ``truth["offset_track"]`` holds the true offset (frames) at every frame.
    ``truth`` holds numpy arrays and scalars:
    true_offset_frames, n_frames, seconds, seed, size, silence_heavy, stutter,
    offscreen_start / offscreen_end (frames, half-open, equal when none),
    offscreen_frames (bool [n]), offscreen_ratio, silence_frames (bool [n], of the
    returned audio), silence_ratio, stutter_frames (bool [n], frames repeating the
    previous image), partial_shift_frames / partial_shift_start / partial_shift_end
    (frames, half-open, start == end when there is none), shown_frame (int [n], the
    source frame each image shows), mouth_open (float [n], the lip opening 0..1 drawn
    in each image), mouth_shape (int [n], -1 closed, 0..4 vowel a e i o u, 5 fricative),
    voiced_frames (bool [n]: at least half of the frame's audio is a vowel of either voice,
    after the constant offset; drift, a partial shift or a step are not followed).
    """
    n_frames = int(round(seconds * VIDEO_FPS))
    if n_frames < 1:
        raise ValueError(f"seconds={seconds} gives no video frame")
    if not 0.0 <= offscreen_fraction < 1.0:
        raise ValueError("offscreen_fraction must be in [0, 1)")
    if not 0.0 <= partial_shift_fraction < 1.0:
        raise ValueError("partial_shift_fraction must be in [0, 1)")
    n_samples = n_frames * SAMPLES_PER_FRAME
    # child i of a SeedSequence depends on i only: the 8th stream leaves the others as they were
    streams = np.random.SeedSequence(int(seed)).spawn(8)
    rng_face, rng_speech, rng_other, rng_motion, rng_off, rng_stutter, rng_level, rng_part = (
        np.random.default_rng(s) for s in streams
    )

    # speech: the on-screen voice, and an off-screen one with another pitch
    pitch = rng_speech.uniform(*PITCH_RANGE)
    voice = Voice(pitch=pitch, tract=rng_speech.uniform(0.9, 1.12))
    speech, labels = _speech(n_samples, voice, rng_speech, silence_heavy)

    offscreen = np.zeros(n_frames, dtype=bool)
    off_start = off_end = 0
    mix, mix_labels = speech, labels
    if offscreen_fraction > 0:
        off_start, off_end = _stretch(rng_off, offscreen_fraction, n_frames)
        offscreen[off_start:off_end] = True
        speech, labels, mix, mix_labels = _with_offscreen_voice(
            speech, labels, pitch, offscreen, rng_other
        )

    opening, shape = _mouth(speech, labels, n_frames)
    face = _draw_face(rng_face, size)
    pose = _motion(rng_motion, n_frames, face.canvas)
    images = np.stack(
        [_render_frame(face, pose, t, opening[t], int(shape[t])) for t in range(n_frames)]
    )
    shown = _stuttered(rng_stutter, n_frames, seconds) if stutter else np.arange(n_frames)
    stutter_frames = np.zeros(n_frames, dtype=bool)
    stutter_frames[1:] = shown[1:] == shown[:-1]
    images = images[shown] if stutter else images

    # final audio track: level, shift (SPEC §6), a stretch shifted further, room noise
    mix = mix / max(float(np.abs(mix).max()), 1e-9) * rng_level.uniform(*PEAK_RANGE)
    audio = _shifted(mix, int(offset_frames), drift_ms_per_min)
    offset_track = int(offset_frames) + drift_ms_per_min * (
        np.arange(n_frames) / VIDEO_FPS / SECONDS_PER_MINUTE / MS_PER_FRAME
    )
    part_start = part_end = 0
    if partial_shift_fraction > 0 and partial_shift_frames:
        part_start, part_end = _stretch(rng_part, partial_shift_fraction, n_frames)
        audio = _shift_stretch(
            audio,
            mix,
            part_start,
            part_end,
            int(offset_frames) + int(partial_shift_frames),
            drift_ms_per_min,
        )
        offset_track[part_start:part_end] += int(partial_shift_frames)
    step_s, step_frames = offset_step if offset_step else (None, 0)
    if step_s is not None:
        step_at = min(n_frames, max(0, int(round(step_s * VIDEO_FPS))))
        audio = _shift_stretch(
            audio, mix, step_at, n_frames, int(offset_frames) + int(step_frames), drift_ms_per_min
        )
        offset_track[step_at:] += int(step_frames)
    noise_rms = 10 ** (rng_level.uniform(*NOISE_FLOOR_DBFS) / 20)
    audio = (audio + rng_level.normal(0, noise_rms, n_samples)).astype(np.float32)

    silence = frame_silence(audio, n_frames)
    # voiced truth: at least half of the frame's samples belong to a vowel (either voice),
    # moved by the constant offset (drift, a partial shift or a step are not followed)
    vowel = ((mix_labels >= 0) & (mix_labels < FRICATIVE)).astype(np.float64)
    vowel = shift_audio(vowel, int(offset_frames))
    voiced = vowel.reshape(n_frames, SAMPLES_PER_FRAME).mean(axis=1) >= 0.5
    truth = {
        "seed": int(seed),
        "seconds": float(seconds),
        "n_frames": n_frames,
        "size": int(size),
        "true_offset_frames": int(offset_frames),
        "offscreen_start": off_start,
        "offscreen_end": off_end,
        "offscreen_frames": offscreen,
        "offscreen_ratio": float(offscreen.mean()),
        "silence_frames": silence,
        "silence_ratio": float(silence.mean()),
        "silence_heavy": bool(silence_heavy),
        "stutter": bool(stutter),
        "stutter_frames": stutter_frames,
        "partial_shift_frames": int(partial_shift_frames) if part_end > part_start else 0,
        "partial_shift_start": part_start,
        "partial_shift_end": part_end,
        "shown_frame": shown,
        "mouth_open": opening[shown].astype(np.float32),
        "mouth_shape": shape[shown].astype(np.int8),
        "drift_ms_per_min": float(drift_ms_per_min),
        "offset_step_s": None if step_s is None else float(step_s),
        "offset_step_frames": int(step_frames),
        "offset_track": offset_track.astype(np.float32),
        "voiced_frames": voiced,
    }
    return images, audio, truth


def _shifted(mix: np.ndarray, offset_frames: int, drift_ms_per_min: float) -> np.ndarray:
    """The track with the offset (SPEC §6 sign) it has at each moment: a constant
    `offset_frames`, growing by `drift_ms_per_min` (silence where the source ends)."""
    if not drift_ms_per_min:
        return shift_audio(mix, offset_frames)
    seconds = np.arange(len(mix)) / SAMPLE_RATE
    offset_s = offset_frames / VIDEO_FPS + drift_ms_per_min / 1000 * seconds / SECONDS_PER_MINUTE
    # + = audio leads: what is heard at τ is the sound made at τ + offset
    return np.interp(np.arange(len(mix)) + offset_s * SAMPLE_RATE, np.arange(len(mix)), mix, 0, 0)


def _shift_stretch(
    audio: np.ndarray,
    mix: np.ndarray,
    start: int,
    end: int,
    offset_frames: int,
    drift_ms_per_min: float,
) -> np.ndarray:
    """`audio` with frames start … end-1 taken from `mix` at another offset, cross-faded."""
    stretch = np.zeros(len(audio) // SAMPLES_PER_FRAME, dtype=bool)
    stretch[start:end] = True
    fade = _soft_mask(np.repeat(stretch, SAMPLES_PER_FRAME), OFFSCREEN_FADE)
    return audio * (1 - fade) + _shifted(mix, offset_frames, drift_ms_per_min) * fade


# --- files -------------------------------------------------------------------------------
def _record(truth: dict) -> dict:
    """The truth dict with numpy arrays turned into plain lists (manifest-ready)."""
    internal = ("shown_frame", "mouth_open", "mouth_shape", "offset_track", "voiced_frames")
    keep = {k: v for k, v in truth.items() if k not in internal}
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in keep.items()}


def synth_clip(path: str | Path, **options) -> dict:
    """Write one synthetic clip (.mp4) made by `synth_arrays(**options)` and return its
    ground-truth record.

    The record has the scalar and per-frame list fields of `synth_arrays`' truth
    (without the drawing internals) plus ``path`` (as given). The file carries the container
    comment ``synccurate-synth`` (`media.SYNTH_TAG`): scoring tells synthetic clips from real
    footage by it.
    """
    frames, audio, truth = synth_arrays(**options)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    media.write_clip(path, frames, audio, metadata={media.SYNTH_TAG_KEY: media.SYNTH_TAG})
    return {"path": str(path), **_record(truth)}


def parse_offset_step(text: str) -> tuple[float, int]:
    """ "SECONDS:FRAMES" (e.g. "120:6") as (seconds, frames); ValueError names the problem."""
    seconds, sep, frames = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return float(seconds), int(frames)
    except ValueError:
        raise ValueError(f"--offset-step {text}: give SECONDS:FRAMES, e.g. 120:6") from None


def clip_seed(seed: int, index: int) -> int:
    """The seed of clip `index` of a data set made with `seed`."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _every(index: int, every: int) -> bool:
    return every > 0 and index % every == every - 1


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one process per core already


def _dataset_job(job: tuple[Path, int, dict]) -> dict:
    out_dir, index, options = job
    name = CLIP_NAME.format(index=index)
    record = synth_clip(out_dir / name, **options)
    return {**record, "path": name, "index": index}


def synth_dataset(
    out_dir: str | Path,
    *,
    n: int,
    seconds: float,
    seed: int,
    offset_frames: int | None = 0,
    offset_range: int | None = None,
    offscreen_fraction: float = 0.0,
    offscreen_every: int = 0,
    silence_heavy: bool = False,
    silence_every: int = 0,
    stutter: bool = False,
    stutter_every: int = 0,
    size: int = 96,
    partial_shift_frames: int = 0,
    partial_shift_fraction: float = 0.0,
    drift_ms_per_min: float = 0.0,
    offset_step: tuple[float, int] | None = None,
    workers: int = 1,
) -> pd.DataFrame:
    """Write `n` clips ``clip_00000.mp4``… and ``manifest.parquet`` into out_dir.

    Clip i is seeded with ``clip_seed(seed, i)``; everything is deterministic for a
    seed whatever `workers` is.

    - offsets: ``offset_range=R`` draws each clip's true offset uniformly from -R..R;
      otherwise every clip gets ``offset_frames`` (None = 0).
    - off-screen: with ``offscreen_fraction > 0``, every clip gets an off-screen stretch
      of that fraction when ``offscreen_every == 0``, else only clips with
      ``i % offscreen_every == offscreen_every - 1``.
    - silence-heavy / stutter: all clips when the flag is set, plus clips with
      ``i % every == every - 1`` when ``*_every > 0``.
    - partial shift: every clip gets a stretch of ``partial_shift_fraction`` of its
      frames whose audio is shifted by ``partial_shift_frames`` more (see `synth_arrays`).
    - drift and an offset step: every clip gets them (see `synth_arrays`).

    Returns the manifest (one row per clip, ``path`` relative to out_dir).
    """
    if offset_range is not None and offset_frames not in (None, 0):
        raise ValueError("give offset_frames or offset_range, not both")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for index in range(n):
        if offset_range is not None:
            rng = np.random.default_rng([int(seed), index, 1])
            offset = int(rng.integers(-offset_range, offset_range + 1))
        else:
            offset = int(offset_frames or 0)
        fraction = (
            offscreen_fraction if (offscreen_every == 0 or _every(index, offscreen_every)) else 0.0
        )
        options = {
            "seconds": seconds,
            "seed": clip_seed(seed, index),
            "offset_frames": offset,
            "offscreen_fraction": fraction,
            "silence_heavy": silence_heavy or _every(index, silence_every),
            "stutter": stutter or _every(index, stutter_every),
            "size": size,
            "partial_shift_frames": partial_shift_frames,
            "partial_shift_fraction": partial_shift_fraction,
            "drift_ms_per_min": drift_ms_per_min,
            "offset_step": offset_step,
        }
        jobs.append((out_dir, index, options))
    manifest = pd.DataFrame(_run_jobs(jobs, workers), columns=MANIFEST_COLUMNS)
    _write_manifest(manifest, out_dir / MANIFEST_NAME)
    return manifest


def _run_jobs(jobs: list[tuple[Path, int, dict]], workers: int) -> list[dict]:
    """Each clip's record, written by `workers` processes (1 = in this process)."""
    if workers <= 1 or len(jobs) <= 1:
        return [_dataset_job(job) for job in jobs]
    # spawn, not fork: forking a process that already runs threads (torch, a test
    # runner) can deadlock the child; callers' scripts need the usual __main__ guard
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_worker_init
    ) as pool:
        return list(pool.map(_dataset_job, jobs, chunksize=max(1, len(jobs) // (4 * workers))))


def _write_manifest(manifest: pd.DataFrame, path: Path) -> None:
    """Atomically: a reader sees the old manifest or the whole new one."""
    # a unique temp name (not mkstemp, so the file gets the umask's permissions)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        manifest.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


__all__ = [
    "CLIP_NAME",
    "MANIFEST_COLUMNS",
    "MANIFEST_NAME",
    "clip_seed",
    "shift_audio",
    "synth_arrays",
    "synth_clip",
    "synth_dataset",
]
