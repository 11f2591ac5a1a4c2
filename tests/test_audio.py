"""Window arithmetic of SPEC §1: mel frames per video frame and the audio window span."""

import numpy as np
import pytest

from synccurate.io import audio


def test_derived_constants():
    assert audio.MEL_FPS == 80
    assert audio.SAMPLES_PER_FRAME == 640
    assert audio.WINDOW_MELS == 16
    assert audio.CONTEXT_MELS == 8
    assert audio.AUDIO_WINDOW_MELS == 32


@pytest.mark.parametrize("frame", [0, 1, 7, 24, 25, 26])
def test_mel_index_is_truncated_3_2_t(frame):
    assert audio.mel_index(frame) == int(80 * frame / 25)


def test_spectrogram_length_matches_video_frames():
    seconds = 3
    mel = audio.log_mel(np.zeros(seconds * audio.SAMPLE_RATE, np.float32))
    assert mel.shape == (audio.N_MELS, seconds * audio.MEL_FPS + 1)  # centred STFT adds one frame
    assert mel.min() == pytest.approx(-audio.MAX_ABS_VALUE)


@pytest.mark.parametrize("click_frame", [25, 31, 40])
@pytest.mark.parametrize("window_shift", [0, 2, 4])
def test_click_lands_at_expected_position_in_its_window(click_frame, window_shift):
    """A click at the start of video frame f sits at mel 3.2 f; in the window of visual
    window t it must appear at position 3.2 f - int(3.2 t) + 8."""
    samples = np.zeros(4 * audio.SAMPLE_RATE, np.float32)
    samples[click_frame * audio.SAMPLES_PER_FRAME] = 1.0
    mel = audio.log_mel(samples)
    t = click_frame - window_shift
    window = audio.audio_windows(mel, t, 1)[0, 0]
    assert window.shape == (audio.N_MELS, audio.AUDIO_WINDOW_MELS)
    expected = 3.2 * click_frame - int(3.2 * t) + audio.CONTEXT_MELS
    loudest = int(np.argmax(window.mean(0)))
    assert abs(loudest - expected) <= 0.6


def test_windows_outside_the_clip_are_silence_padded():
    mel = audio.log_mel(np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32))
    windows = audio.audio_windows(mel, -15, 10)
    assert windows.shape == (10, 1, audio.N_MELS, audio.AUDIO_WINDOW_MELS)
    assert np.all(windows[0] == audio.MEL_SILENCE)  # window -15 lies wholly before the clip
    first_real = audio.audio_windows(mel, 0, 1)[0, 0]
    assert np.all(first_real[:, : audio.CONTEXT_MELS] == audio.MEL_SILENCE)
    assert np.array_equal(first_real[:, audio.CONTEXT_MELS :], mel[:, : audio.WINDOW_MELS + 8])
    late = audio.audio_windows(mel, 60, 1)[0, 0]  # past the 1 s clip
    assert np.all(late == audio.MEL_SILENCE)


def test_log_mel_follows_the_spec_recipe():
    """SPEC §1 written out with numpy: pre-emphasis 0.97, centred STFT (n_fft 800, hop 200,
    periodic Hann, zero padding), magnitude, 80 mel bands 55–7600 Hz (Slaney, librosa's
    filter bank), 20·log10 with a floor at -100 dB, minus 20 dB, mapped to [-4, 4]."""
    import librosa

    rng = np.random.default_rng(3)
    t = np.arange(16000) / 16000
    x = 0.3 * np.sin(2 * np.pi * 300 * t) + 0.05 * np.sin(2 * np.pi * 5000 * t)
    x = (x + 0.01 * rng.normal(size=len(t))).astype(np.float32)
    x[8000:12000] = 0  # a silent stretch reaches the -100 dB floor
    emphasised = np.append(x[0], x[1:] - 0.97 * x[:-1])
    padded = np.pad(emphasised, 400)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(800) / 800)
    frames = np.stack([padded[m * 200 : m * 200 + 800] for m in range(len(x) // 200 + 1)])
    magnitude = np.abs(np.fft.rfft(frames * window, axis=1)).T  # [401, frames]
    bank = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, bank @ magnitude)) - 20
    expected = np.clip(8 * (db + 100) / 100 - 4, -4, 4)
    mel = audio.log_mel(x)
    assert mel.shape == expected.shape == (80, 81)
    np.testing.assert_allclose(mel, expected, atol=2e-3)
    assert (mel[:, 45:55] == -4).all() and mel.max() > 0


def test_frame_silence():
    samples = np.zeros(10 * audio.SAMPLES_PER_FRAME, np.float32)
    samples[3 * 640 : 5 * 640] = 0.3 * np.sin(np.arange(2 * 640) / 5)
    silent = audio.frame_silence(samples, 12)  # two frames past the audio's end
    assert silent.tolist() == [True] * 3 + [False] * 2 + [True] * 7


def test_mel_filter_bank_and_spectrogram_equal_librosa():
    """The NumPy filter bank and STFT are librosa's (Slaney mel, centred zero-padded STFT)."""
    import librosa
    import scipy.signal

    bank = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55.0, fmax=7600.0)
    np.testing.assert_allclose(audio._mel_basis(), bank, rtol=1e-5, atol=1e-9)
    hz = np.array([0.0, 440.0, 999.0, 1000.0, 1001.0, 4000.0, 7600.0])
    np.testing.assert_allclose(audio.hz_to_mel(hz), librosa.hz_to_mel(hz), rtol=1e-12)
    np.testing.assert_allclose(audio.mel_to_hz(audio.hz_to_mel(hz)), hz, rtol=1e-12, atol=1e-9)

    x = np.random.default_rng(5).normal(0, 0.1, 16000 + 123).astype(np.float32)
    ours = audio.stft_magnitude(x)
    theirs = np.abs(librosa.stft(x, n_fft=800, hop_length=200, win_length=800))
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    emphasised = scipy.signal.lfilter([1.0, -0.97], [1.0], x).astype(np.float32)
    expected = np.abs(librosa.stft(emphasised, n_fft=800, hop_length=200, win_length=800))
    min_db = 20 * np.log10(np.maximum(1e-5, bank @ expected)) - 20
    expected_mel = np.clip(8 * (min_db + 100) / 100 - 4, -4, 4)
    np.testing.assert_allclose(audio.log_mel(x), expected_mel, atol=1e-4)
