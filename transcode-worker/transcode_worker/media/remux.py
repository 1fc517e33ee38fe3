"""The browser-playable original: an H.264/AAC source remuxed (never re-encoded) to a faststart MP4."""

from __future__ import annotations

import threading
from pathlib import Path

import ffmpeg

from services.media import Probe

from .hls import input_options
from .runner import ffmpeg_binary, run_ffmpeg, time_limit

_MP4_FAMILY = ("mov", "mp4", "m4a", "3gp")
# 8-bit 4:2:0 only: browsers refuse High 10 / 4:2:2 / 4:4:4 H.264 (full-range yuvj420p plays fine).
PLAYABLE_PIXEL_FORMATS = {"yuv420p", "yuvj420p"}


def is_browser_playable(probe: Probe, pixel_format: str | None = None) -> bool:
    """H.264 video, AAC or no audio, in the MP4/MOV family, and 8-bit 4:2:0 when the pixel format is known."""
    container = set((probe.container or "").split(","))
    return (probe.video_codec == "h264" and probe.audio_codec in (None, "aac")
            and bool(container & set(_MP4_FAMILY))
            and (pixel_format is None or pixel_format in PLAYABLE_PIXEL_FORMATS))


def remux_command(source: str, dest_path: str | Path) -> list[str]:
    stream = ffmpeg.input(source, **input_options(source))
    # The first video and (if any) first audio stream only: data/subtitle tracks could break the MP4 muxer.
    # faststart moves the moov atom to the front, so a browser can start playing from the first range request.
    # map_metadata -1: container tags (GPS position, device names) stay private; rotation is side data and stays.
    return (ffmpeg.output(stream["v:0"], stream["a:0?"], str(dest_path), c="copy", movflags="+faststart",
                          f="mp4", map_metadata="-1")
            .global_args("-hide_banner", "-nostdin", "-loglevel", "error", "-progress", "pipe:1", "-nostats")
            .overwrite_output().compile(cmd=ffmpeg_binary()))


def remux_faststart(source: str, dest_path: str | Path, *, duration: float | None = None,
                    cancel: threading.Event | None = None, on_progress=None) -> Path:
    """Copy the streams of `source` into a faststart MP4 at dest_path (no re-encode); returns dest_path."""
    run_ffmpeg(remux_command(source, dest_path), on_progress=on_progress, cancel=cancel,
               timeout=time_limit(duration, base=30, factor=1))
    return Path(dest_path)
