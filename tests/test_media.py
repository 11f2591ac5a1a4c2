"""Decoding at 25 fps / 16 kHz on one time base, clip writing, and one-line errors for bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from real_fixtures import real_clips

from synccurate.io import media
from synccurate.io.audio import SAMPLE_RATE, SAMPLES_PER_FRAME, VIDEO_FPS

ONE_MS = SAMPLE_RATE // 1000  # samples
FLASH_FRAME = 20


def flash_and_click(path: Path, *, click_s: float, n_frames: int = 50, size: int = 64) -> Path:
    """Grey frames with one white frame (FLASH_FRAME) and silence with one click at click_s."""
    frames = np.full((n_frames, size, size, 3), 40, dtype=np.uint8)
    frames[FLASH_FRAME] = 255
    audio = np.zeros(n_frames * SAMPLES_PER_FRAME, dtype=np.float32)
    start = round(click_s * SAMPLE_RATE)
    audio[start : start + ONE_MS] = 0.9
    return media.write_clip(path, frames, audio)


def flash_frame(info: media.MediaInfo) -> int:
    frames = np.concatenate(list(media.iter_video_frames(info)))
    return int(np.argmax(frames.mean(axis=(1, 2, 3))))


def click_sample(samples: np.ndarray) -> int:
    return int(np.argmax(np.abs(samples) > 0.3))


def remux_with_offset(source: Path, target: Path, *, delay: str, seconds: float) -> None:
    """Copy `source` with its video or audio stream starting `seconds` later (no re-encoding)."""
    video_input = ["-itsoffset", str(seconds)] if delay == "video" else []
    audio_input = ["-itsoffset", str(seconds)] if delay == "audio" else []
    media.run_ffmpeg(
        ["-y", *video_input, "-i", str(source), *audio_input, "-i", str(source)]
        + ["-map", "0:v", "-map", "1:a", "-c", "copy", str(target)]
    )


def assert_one_line_naming(error: media.MediaError, path: Path) -> None:
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert message.count(str(path)) == 1, message


@pytest.mark.parametrize("clip", real_clips())
def test_real_clip_decodes_at_25_fps_and_16_khz(clip: Path) -> None:
    info = media.probe(clip)
    height, width = media.frame_size(info)
    chunks = list(media.iter_video_frames(info))
    n_frames = sum(len(chunk) for chunk in chunks)
    assert all(c.dtype == np.uint8 and c.shape[1:] == (height, width, 3) for c in chunks)
    assert abs(n_frames - info.duration_s * VIDEO_FPS) <= 2
    assert abs(n_frames - media.n_video_frames(info)) <= 2
    samples = media.decode_audio(info)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) / SAMPLE_RATE - info.duration_s) < 0.1
    assert np.isfinite(samples).all() and 0 < np.abs(samples).max() <= 1.5


def test_write_clip_round_trips_a_click_within_one_ms(tmp_path: Path) -> None:
    """AAC's encoder priming must not shift the audio against the frames."""
    path = flash_and_click(tmp_path / "clip.mp4", click_s=FLASH_FRAME / VIDEO_FPS)
    info = media.probe(path)
    assert flash_frame(info) == FLASH_FRAME
    samples = media.decode_audio(info)
    assert abs(click_sample(samples) - FLASH_FRAME * SAMPLES_PER_FRAME) <= ONE_MS
    assert not list(tmp_path.glob(".*")), "the temporary file was left behind"


@pytest.mark.parametrize("seconds", [0.033, 0.12])
def test_a_later_video_start_is_not_an_offset(tmp_path: Path, seconds: float) -> None:
    """Video starting after the audio: audio before the first frame is dropped."""
    # In sync on the container's timeline: the click is heard when the flash is shown.
    source = flash_and_click(tmp_path / "source.mp4", click_s=FLASH_FRAME / VIDEO_FPS + seconds)
    remux_with_offset(source, tmp_path / "late_video.mp4", delay="video", seconds=seconds)
    info = media.probe(tmp_path / "late_video.mp4")
    assert info.video_start_s - info.audio_start_s == pytest.approx(seconds, abs=0.002)
    assert flash_frame(info) == FLASH_FRAME
    assert abs(click_sample(media.decode_audio(info)) - FLASH_FRAME * SAMPLES_PER_FRAME) <= ONE_MS


def test_a_later_audio_start_is_preceded_by_silence(tmp_path: Path) -> None:
    seconds = 0.12
    source = flash_and_click(tmp_path / "source.mp4", click_s=FLASH_FRAME / VIDEO_FPS - seconds)
    remux_with_offset(source, tmp_path / "late_audio.mkv", delay="audio", seconds=seconds)
    info = media.probe(tmp_path / "late_audio.mkv")
    samples = media.decode_audio(info)
    assert flash_frame(info) == FLASH_FRAME
    assert abs(click_sample(samples) - FLASH_FRAME * SAMPLES_PER_FRAME) <= ONE_MS
    assert not samples[: round(0.1 * SAMPLE_RATE)].any()


def test_a_stream_cut_inside_a_gop_aligns_audio_to_the_first_decodable_frame(
    tmp_path: Path,
) -> None:
    """A transport stream cut mid-GOP begins with frames no decoder shows."""
    n_frames, every = 150, 10
    frames = np.zeros((n_frames, 32, 2 * n_frames, 3), dtype=np.uint8)
    for k in range(n_frames):
        frames[k, :, 2 * k : 2 * k + 2] = 255  # frame k shows a bar at x = 2k
    audio = np.zeros(n_frames * SAMPLES_PER_FRAME, dtype=np.float32)
    for k in range(0, n_frames, every):
        audio[k * SAMPLES_PER_FRAME : k * SAMPLES_PER_FRAME + ONE_MS] = 0.9
    source = media.write_clip(tmp_path / "bars.mp4", frames, audio, crf=10)
    stream = tmp_path / "bars.ts"
    media.run_ffmpeg(["-y", "-i", str(source), "-g", "50", "-bf", "0", "-c:a", "aac", str(stream)])
    data = stream.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[len(data) // 3 // 188 * 188 :])  # whole 188-byte TS packets
    info = media.probe(cut)
    decoded = np.concatenate(list(media.iter_video_frames(info)))
    shown = decoded[:, 16].mean(axis=2).argmax(axis=1) // 2  # the source frame each one shows
    samples = np.abs(media.decode_audio(info))
    onsets = np.flatnonzero((samples[1:] > 0.3) & (samples[:-1] <= 0.3)) + 1
    assert len(onsets) > 5
    for onset in onsets:
        assert shown[round(onset / SAMPLES_PER_FRAME)] % every == 0


def test_frames_stream_in_bounded_chunks_and_early_stop_kills_ffmpeg(tmp_path: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 255, (100, 32, 48, 3), dtype=np.uint8)
    info = media.probe(media.write_clip(tmp_path / "clip.mp4", frames, None))
    sizes = [len(chunk) for chunk in media.iter_video_frames(info, chunk_frames=16)]
    assert sizes == [16] * 6 + [4]
    scaled = next(media.iter_video_frames(info, size=(20, 30), chunk_frames=8))
    assert scaled.shape == (8, 20, 30, 3) and scaled.flags.writeable
    stream = media.iter_video_frames(info, chunk_frames=4)
    next(stream)
    process = stream.gi_yieldfrom.gi_frame.f_locals["process"]  # the pipe reader's ffmpeg
    stream.close()
    assert process.poll() is not None


def test_video_filter_runs_on_the_display_frame_before_scaling(tmp_path: Path) -> None:
    frames = np.zeros((5, 40, 60, 3), dtype=np.uint8)
    frames[:, 20:] = (0, 0, 255)  # lower half blue
    info = media.probe(media.write_clip(tmp_path / "halves.mp4", frames, None, crf=0))
    lower = next(media.iter_video_frames(info, size=(10, 30), video_filter="crop=iw:ih/2:0:ih/2"))
    assert lower.shape == (5, 10, 30, 3)
    assert lower[..., 2].min() > 200 and lower[..., 0].max() < 40
    with pytest.raises(ValueError):
        next(media.iter_video_frames(info, video_filter="crop=iw:ih/2:0:ih/2"))


def test_rotation_and_odd_sizes_give_the_displayed_frame(tmp_path: Path) -> None:
    frames = np.zeros((5, 33, 47, 3), dtype=np.uint8)  # odd: write_clip pads to 34 x 48
    frames[:, :, :10] = 255  # a white band on the left
    source = media.write_clip(tmp_path / "odd.mp4", frames, None)
    assert media.frame_size(media.probe(source)) == (34, 48)
    media.run_ffmpeg(
        [
            "-y",
            "-display_rotation",
            "90",
            "-i",
            str(source),
            "-c",
            "copy",
            str(tmp_path / "rot.mp4"),
        ]
    )
    info = media.probe(tmp_path / "rot.mp4")
    assert info.rotation == 90 and media.frame_size(info) == (48, 34)
    first = next(media.iter_video_frames(info))[0]
    assert first.shape == (48, 34, 3)
    assert first[-5:].mean() > 200 and first[:20].mean() < 30  # the band is now at the bottom


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage" * 500], ids=["empty", "random"])
def test_unreadable_files_fail_with_one_line_naming_the_file(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(media.MediaError) as caught:
        media.probe(path)
    assert caught.value.status == "decode_error"
    assert_one_line_naming(caught.value, path)


def test_audio_only_file(tmp_path: Path) -> None:
    path = tmp_path / "speech.mp4"
    media.run_ffmpeg(
        ["-y", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "1"]
        + ["-c:a", "aac", str(path)]
    )
    info = media.probe(path)
    assert not info.has_video and info.has_audio
    assert abs(len(media.decode_audio(info)) - SAMPLE_RATE) < SAMPLE_RATE // 20
    with pytest.raises(media.MediaError) as caught:
        next(media.iter_video_frames(info))
    assert caught.value.status == "no_video"
    assert_one_line_naming(caught.value, path)


def test_video_only_file(tmp_path: Path) -> None:
    path = media.write_clip(tmp_path / "mute.mp4", np.zeros((10, 32, 32, 3), np.uint8), None)
    info = media.probe(path)
    assert info.has_video and not info.has_audio
    with pytest.raises(media.MediaError) as caught:
        media.decode_audio(info)
    assert caught.value.status == "no_audio"
    assert_one_line_naming(caught.value, path)


def test_write_clip_failure_leaves_no_file(tmp_path: Path) -> None:
    frames = np.zeros((3, 16, 16, 3), np.uint8)
    with pytest.raises(media.MediaError) as caught:
        media.write_clip(tmp_path / "x.mp4", frames, None, video_codec="no-such-codec")
    assert caught.value.status == "encode_error"
    assert list(tmp_path.iterdir()) == []
