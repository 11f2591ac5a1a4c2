"""Media I/O: find ffmpeg, probe streams, decode video at 25 fps and audio at 16 kHz.

ffmpeg is always run with an argument list (never a shell) and its stderr is
carried into the error, so a bad file yields one readable line.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import av

from synccurate.audio import SAMPLE_RATE, VIDEO_FPS

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".mpg", ".mpeg", ".m4v", ".flv", ".ts")


class MediaError(Exception):
    """A clip that cannot be used; `status` is the scores-table status (SPEC §10)."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


@lru_cache(maxsize=1)
def ffmpeg_binary() -> str:
    """A system ffmpeg when present, else the one bundled with imageio-ffmpeg."""
    system = shutil.which("ffmpeg")
    if system:
        return system
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def run_ffmpeg(args: list[str], what: str = "ffmpeg") -> bytes:
    """Run ffmpeg with `args` (no shell); return stdout or raise MediaError with stderr's last line."""
    command = [ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error", *args]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0:
        raise MediaError("decode_error", f"{what}: {_last_line(result.stderr)}")
    return result.stdout


@dataclass(frozen=True)
class MediaInfo:
    """What a clip holds, as read from its container header."""

    path: Path
    duration_s: float
    has_video: bool
    has_audio: bool
    source_fps: float | None = None
    width: int | None = None
    height: int | None = None
    video_codec: str | None = None
    video_start_s: float = 0.0
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    audio_start_s: float = 0.0
    audio_bit_rate: int | None = None


def _seconds(value: int | None, time_base) -> float | None:
    return None if value is None or time_base is None else float(value * time_base)


def probe(path: str | Path) -> MediaInfo:
    """Read stream facts with PyAV (imageio-ffmpeg ships no ffprobe)."""
    path = Path(path)
    if not path.is_file():
        raise MediaError("decode_error", f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MediaError("decode_error", f"{path}: empty file (0 bytes)")
    try:
        with av.open(str(path)) as container:
            video = next(iter(container.streams.video), None)
            audio = next(iter(container.streams.audio), None)
            durations = [
                d
                for d in (
                    _seconds(container.duration, 1 / av.time_base) if container.duration else None,
                    _seconds(video.duration, video.time_base) if video else None,
                    _seconds(audio.duration, audio.time_base) if audio else None,
                )
                if d
            ]
            info = MediaInfo(
                path=path,
                duration_s=max(durations) if durations else 0.0,
                has_video=video is not None,
                has_audio=audio is not None,
                source_fps=float(video.average_rate) if video and video.average_rate else None,
                width=video.codec_context.width if video else None,
                height=video.codec_context.height if video else None,
                video_codec=video.codec_context.name if video else None,
                video_start_s=(_seconds(video.start_time, video.time_base) or 0.0) if video else 0.0,
                audio_codec=audio.codec_context.name if audio else None,
                audio_sample_rate=audio.codec_context.sample_rate if audio else None,
                audio_channels=audio.codec_context.channels if audio else None,
                audio_start_s=(_seconds(audio.start_time, audio.time_base) or 0.0) if audio else 0.0,
                audio_bit_rate=(audio.codec_context.bit_rate or None) if audio else None,
            )
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise MediaError("decode_error", f"{path}: not a readable media file ({error})") from error
    return info


__all__ = [
    "VIDEO_EXTENSIONS",
    "MediaError",
    "MediaInfo",
    "ffmpeg_binary",
    "probe",
    "run_ffmpeg",
    "SAMPLE_RATE",
    "VIDEO_FPS",
]
