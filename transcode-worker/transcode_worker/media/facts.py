"""Header facts PyAV reads that services.media.Probe does not carry: pixel format and video track length."""

from __future__ import annotations

from dataclasses import dataclass

import av

from .hls import input_options


@dataclass(frozen=True)
class VideoFacts:
    pixel_format: str | None
    video_duration: float | None  # the video track's own length from the headers; None where unknown (MKV)


def video_facts(source: str, *, timeout: float = 20) -> VideoFacts:
    """Read from the container headers only (nothing decoded); unknowns are None, never an error."""
    try:
        with av.open(source, options=input_options(source), timeout=(timeout, timeout)) as container:
            stream = container.streams.video[0]
            pixel_format = stream.codec_context.format.name if stream.codec_context.format else None
            duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
            return VideoFacts(pixel_format, duration)
    except (av.FFmpegError, OSError, IndexError):
        return VideoFacts(None, None)
