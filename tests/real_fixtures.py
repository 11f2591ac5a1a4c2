"""Where the shared real test clips live; tests that need them skip when they are absent."""

from pathlib import Path

import pytest

from synccurate.io import media

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "real"
MISSING = f"real test clips not found at {REAL} (internal test material, never in the repo)"


def real_clips() -> list:
    """One pytest param per real clip, or a single skipped param when there are none."""
    clips = sorted(p for p in REAL.glob("*") if p.suffix.lower() in media.VIDEO_EXTENSIONS)
    if not clips:
        return [pytest.param(None, marks=pytest.mark.skip(reason=MISSING))]
    return [pytest.param(clip, id=clip.name) for clip in clips]
