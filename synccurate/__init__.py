"""synccurate: measure and repair audio-video sync of talking-head clips."""

__version__ = "0.1.0"
