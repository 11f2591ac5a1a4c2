"""Audio features: log-mel spectrograms and the audio windows paired with visual windows.

Every time constant is derived from the three base rates below so that the
video/audio/mel arithmetic of SPEC §1 lives in exactly one place.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# The spectrogram is NumPy alone: librosa and scipy.signal cost every process that decodes
# audio ~2.3 s and ~70 MB to import (numba included), more than the features of a clip.
# tests/test_audio.py checks the filter bank and the spectrogram against librosa.

SAMPLE_RATE = 16_000  # Hz, mono
VIDEO_FPS = 25  # frames per second after resampling
HOP_LENGTH = 200  # samples between mel frames
N_FFT = 800  # samples in one STFT window
N_MELS = 80  # mel bins
MEL_FPS = SAMPLE_RATE // HOP_LENGTH  # 80 mel frames per second
SAMPLES_PER_FRAME = SAMPLE_RATE // VIDEO_FPS  # 640 audio samples per video frame

WINDOW_FRAMES = 5  # video frames in one visual window (0.2 s)
WINDOW_MELS = WINDOW_FRAMES * MEL_FPS // VIDEO_FPS  # 16 mel frames cover one visual window
CONTEXT_MELS = MEL_FPS // 10  # 8 mel frames (0.1 s) of extra context on each side
AUDIO_WINDOW_MELS = WINDOW_MELS + 2 * CONTEXT_MELS  # 32 mel frames (0.4 s) per audio window

# Wav2Lip-compatible mel flavour (SPEC §1, "our choice").
PREEMPHASIS = 0.97
F_MIN = 55.0  # Hz
F_MAX = 7600.0  # Hz
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS_VALUE = 4.0  # mel values are normalised to [-4, 4]
MEL_SILENCE = -MAX_ABS_VALUE  # the value of a silent mel bin after normalisation

STFT_BLOCK_FRAMES = 2048  # STFT frames computed at once (25.6 s): ~13 MB of spectrum
SILENCE_DBFS = -40.0  # a video frame whose audio RMS is below this is "silent"


MEL_BREAK_HZ = 1000.0  # Slaney mel scale: linear below, logarithmic above
MEL_LINEAR_HZ = 200.0 / 3  # Hz per mel on the linear part
MEL_LOG_STEP = np.log(6.4) / 27  # natural-log step per mel on the logarithmic part


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False)."""
    hz = np.asarray(hz, dtype=np.float64)
    break_mel = MEL_BREAK_HZ / MEL_LINEAR_HZ
    logarithmic = break_mel + np.log(np.maximum(hz, MEL_BREAK_HZ) / MEL_BREAK_HZ) / MEL_LOG_STEP
    return np.where(hz >= MEL_BREAK_HZ, logarithmic, hz / MEL_LINEAR_HZ)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    break_mel = MEL_BREAK_HZ / MEL_LINEAR_HZ
    logarithmic = MEL_BREAK_HZ * np.exp(MEL_LOG_STEP * (np.maximum(mel, break_mel) - break_mel))
    return np.where(mel >= break_mel, logarithmic, mel * MEL_LINEAR_HZ)


@lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    """[N_MELS, N_FFT // 2 + 1] triangular filters, area-normalised (Slaney), as float32."""
    bins_hz = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(F_MIN), hz_to_mel(F_MAX), N_MELS + 2))
    widths = np.diff(edges_hz)
    distance = edges_hz[:, None] - bins_hz[None, :]  # [N_MELS + 2, bins]
    rising = -distance[:-2] / widths[:-1, None]
    falling = distance[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]  # equal area per filter
    return weights.astype(np.float32)


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    """The periodic Hann window of N_FFT samples (as STFTs use it)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)


def stft_magnitude(samples: np.ndarray) -> np.ndarray:
    """|STFT| [N_FFT // 2 + 1, 1 + len // HOP_LENGTH]: centred frames, zero padded."""
    padded = _centred(samples)
    return _magnitudes(padded, 0, _n_stft_frames(padded))


def _centred(samples: np.ndarray) -> np.ndarray:
    return np.pad(np.asarray(samples, dtype=np.float32), N_FFT // 2)


def _n_stft_frames(padded: np.ndarray) -> int:
    return 1 + (len(padded) - N_FFT) // HOP_LENGTH


def _magnitudes(padded: np.ndarray, start: int, stop: int) -> np.ndarray:
    """|STFT| of frames start … stop-1 of a centred signal, [N_FFT // 2 + 1, stop - start]."""
    block = padded[start * HOP_LENGTH : (stop - 1) * HOP_LENGTH + N_FFT]
    frames = np.lib.stride_tricks.sliding_window_view(block, N_FFT)[::HOP_LENGTH]
    return np.abs(np.fft.rfft(frames * _hann(), axis=1)).T


def log_mel(samples: np.ndarray) -> np.ndarray:
    """Normalised log-mel spectrogram [N_MELS, n_mel_frames] of 16 kHz mono audio.

    Mel frame m is centred on sample m * HOP_LENGTH (a centred STFT), so
    mel frame index = seconds * MEL_FPS, which is what `mel_index` relies on. The STFT
    runs STFT_BLOCK_FRAMES frames at a time: whole, its float64 frames and spectrum took
    ~75 MB a minute of audio (300 MB for a 4-minute clip), more than the clip's crops.
    """
    samples = np.asarray(samples, dtype=np.float32)
    emphasised = samples.copy()
    emphasised[1:] -= np.float32(PREEMPHASIS) * samples[:-1]
    padded = _centred(emphasised)
    n_frames = _n_stft_frames(padded)
    normalised = np.empty((N_MELS, n_frames), dtype=np.float32)
    min_amplitude = 10 ** (MIN_LEVEL_DB / 20)
    for start in range(0, n_frames, STFT_BLOCK_FRAMES):
        stop = min(n_frames, start + STFT_BLOCK_FRAMES)
        mel = _mel_basis() @ _magnitudes(padded, start, stop)
        db = 20 * np.log10(np.maximum(min_amplitude, mel)) - REF_LEVEL_DB
        scaled = 2 * MAX_ABS_VALUE * (db - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MAX_ABS_VALUE
        normalised[:, start:stop] = np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE)
    return normalised


def mel_index(frame: int | np.ndarray) -> int | np.ndarray:
    """First mel frame of video frame `frame`: int(80 * t / 25), floored for t < 0.

    Integer arithmetic avoids float rounding; flooring keeps the spacing of
    windows before the clip start the same as inside it.
    """
    return (np.asarray(frame) * MEL_FPS) // VIDEO_FPS


def audio_window_starts(first_window: int, n_windows: int) -> np.ndarray:
    """Mel start index of the audio windows paired with visual windows first_window…"""
    frames = np.arange(first_window, first_window + n_windows)
    return mel_index(frames) - CONTEXT_MELS


def audio_windows(mel: np.ndarray, first_window: int, n_windows: int) -> np.ndarray:
    """Audio windows [n, 1, N_MELS, AUDIO_WINDOW_MELS] for visual windows first_window….

    Window j spans mel frames mel_index(j) - 8 … mel_index(j) + 23, i.e. the 0.2 s of
    the visual window widened by 0.1 s on each side. Parts outside the spectrogram
    are silence, so every visual window has an audio window at every offset.
    """
    starts = audio_window_starts(first_window, n_windows)
    if not n_windows:
        return np.empty((0, 1, mel.shape[0], AUDIO_WINDOW_MELS), dtype=mel.dtype)
    # Only the stretch these windows span is copied (with silence where it lies outside
    # the spectrogram): padding the whole spectrogram for every batch made the work of a
    # batch grow with the clip's length.
    low, high = int(starts.min()), int(starts.max()) + AUDIO_WINDOW_MELS
    stretch = np.full((mel.shape[0], high - low), MEL_SILENCE, dtype=mel.dtype)
    start, stop = max(low, 0), min(high, mel.shape[1])
    if stop > start:
        stretch[:, start - low : stop - low] = mel[:, start:stop]
    index = starts[:, None] - low + np.arange(AUDIO_WINDOW_MELS)[None, :]
    windows = stretch[:, index]  # [N_MELS, n, AUDIO_WINDOW_MELS]
    return np.ascontiguousarray(windows.transpose(1, 0, 2)[:, None])


def frame_silence(samples: np.ndarray, n_frames: int) -> np.ndarray:
    """Boolean [n_frames]: True where the frame's audio RMS is below SILENCE_DBFS."""
    padded = np.zeros(n_frames * SAMPLES_PER_FRAME, dtype=np.float32)
    usable = min(len(samples), len(padded))
    padded[:usable] = samples[:usable]
    rms = np.sqrt(np.mean(padded.reshape(n_frames, SAMPLES_PER_FRAME) ** 2, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-10)) < SILENCE_DBFS


def delay_samples(samples: np.ndarray, shift: int) -> np.ndarray:
    """Delay (shift > 0) or advance (shift < 0) a track [n, ...] by whole samples, keeping
    its length: out[i] = samples[i - shift], silence (zeros) where that falls outside."""
    out = np.zeros_like(samples)
    n = len(samples)
    if 0 <= shift < n:
        out[shift:] = samples[: n - shift]
    elif -n < shift < 0:
        out[: n + shift] = samples[-shift:]
    return out


# Voicing (`speech_ratio`): a frame is voiced when it is not silent (SILENCE_DBFS) and its
# audio repeats itself at a pitch period, the test Praat's pitch tracker uses (Boersma 1993:
# the peak of the normalised autocorrelation, divided by the window's own autocorrelation;
# Praat's voicing threshold is 0.45 too). Loud noise (fricatives, hiss, room tone) passes the
# energy test but has no such peak. Anything periodic counts: music and tones too.
VOICING_THRESHOLD = 0.45  # autocorrelation peak at a pitch period (0 … 1)
VOICING_PITCH_HZ = (60.0, 400.0)  # pitch periods searched: 2.5 … 16.7 ms
VOICING_FFT = 2048  # >= 2 x SAMPLES_PER_FRAME: the autocorrelation does not wrap around
VOICING_BLOCK_FRAMES = 1024  # frames analysed at once (~40 MB of spectra)


@lru_cache(maxsize=1)
def _voicing_window() -> np.ndarray:
    return np.hanning(SAMPLES_PER_FRAME + 2)[1:-1]  # no zero ends


@lru_cache(maxsize=1)
def _window_autocorrelation() -> np.ndarray:
    spectrum = np.fft.rfft(_voicing_window(), VOICING_FFT)
    r = np.fft.irfft(np.abs(spectrum) ** 2, VOICING_FFT)[:SAMPLES_PER_FRAME]
    return r / r[0]


def frame_periodicity(samples: np.ndarray, n_frames: int) -> np.ndarray:
    """Float [n_frames]: the peak of each video frame's normalised autocorrelation over the
    pitch periods of VOICING_PITCH_HZ (1 = a perfectly periodic frame, ~0.1 white noise).

    Each frame's 640 samples (40 ms: at least 2.4 periods at 60 Hz) are centred,
    Hann-windowed, and their autocorrelation is divided by the window's (Boersma 1993), so
    long lags are not penalised. A frame without energy gets 0.
    """
    periodicity = np.zeros(n_frames)
    for start in range(0, n_frames, VOICING_BLOCK_FRAMES):
        stop = min(n_frames, start + VOICING_BLOCK_FRAMES)
        block = np.zeros((stop - start) * SAMPLES_PER_FRAME, dtype=np.float64)
        chunk = samples[start * SAMPLES_PER_FRAME : stop * SAMPLES_PER_FRAME]
        block[: len(chunk)] = chunk
        periodicity[start:stop] = _periodicity(block.reshape(stop - start, SAMPLES_PER_FRAME))
    return periodicity


def _periodicity(frames: np.ndarray) -> np.ndarray:
    frames = (frames - frames.mean(axis=1, keepdims=True)) * _voicing_window()
    spectrum = np.fft.rfft(frames, VOICING_FFT, axis=1)
    r = np.fft.irfft(np.abs(spectrum) ** 2, VOICING_FFT, axis=1)[:, :SAMPLES_PER_FRAME]
    energy = r[:, :1]
    low = int(SAMPLE_RATE / VOICING_PITCH_HZ[1])
    high = int(SAMPLE_RATE / VOICING_PITCH_HZ[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = r[:, low : high + 1] / energy / _window_autocorrelation()[low : high + 1]
    peak = np.nan_to_num(normalised.max(axis=1, initial=0.0), nan=0.0)
    return np.where(energy[:, 0] > 0, np.minimum(peak, 1.0), 0.0)


def frame_voicing(samples: np.ndarray, n_frames: int) -> np.ndarray:
    """Boolean [n_frames]: True where the frame is voiced speech, i.e. not silent
    (`frame_silence`) and periodic (`frame_periodicity` >= VOICING_THRESHOLD)."""
    periodic = frame_periodicity(samples, n_frames) >= VOICING_THRESHOLD
    return periodic & ~frame_silence(samples, n_frames)
