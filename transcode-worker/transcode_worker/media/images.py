"""Still images: thumbnail and poster from a representative frame, and a storyboard sprite with its WebVTT."""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from services.media import Probe

from .hls import input_options
from .ladder import display_size
from .runner import TranscodeError, TranscodeTimeout, ffmpeg_binary, run_ffmpeg, time_limit

log = logging.getLogger(__name__)

THUMBNAIL_WIDTH = 320
POSTER_MAX_WIDTH = 1280
TILE_WIDTH = 160
MAX_TILES = 100
MAX_COLUMNS = 10
JPEG_QUALITY = 3  # ffmpeg's -q:v scale, 2 (best) .. 31
_GLOBAL = ("-hide_banner", "-nostdin", "-loglevel", "error", "-progress", "pipe:1", "-nostats")


def _even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def _size_for_width(probe: Probe, width: int) -> tuple[int, int]:
    """An even size `width` wide (never wider than the source) with the source's displayed aspect."""
    source_width, source_height = display_size(probe)
    width = _even(min(width, source_width))
    return width, _even(width * source_height / source_width)


def representative_window(duration: float, fps: float | None) -> tuple[float, int]:
    """Where to look for the thumbnail (seconds) and over how many frames: from 20 % in, so intros, fades
    from black and title cards are behind us, over up to ~3 s of frames for the `thumbnail` filter."""
    window = min(3.0, duration * 0.5)
    start = max(0.0, min(duration * 0.2, duration - window))
    frames = max(1, min(100, round((fps or 30) * window)))
    return round(start, 3), frames


def thumbnail_command(source: str, thumbnail_path: str | Path, poster_path: str | Path, probe: Probe, *,
                      start: float | None = None) -> list[str]:
    window_start, frames = representative_window(probe.duration, probe.fps)
    start = window_start if start is None else start
    # -ss before -i: seek in the demuxer (fast), then decode from the preceding keyframe (exact).
    stream = ffmpeg.input(source, ss=str(start), **input_options(source))
    # `thumbnail` picks, out of `frames` frames, the one closest to their average histogram: a typical picture,
    # not a black or flash frame. One decode feeds both images.
    best = stream.video.filter("thumbnail", n=max(2, frames)).filter_multi_output("split", 2)  # ffmpeg wants n ≥ 2
    outputs = []
    for index, (path, width) in enumerate(((thumbnail_path, THUMBNAIL_WIDTH), (poster_path, POSTER_MAX_WIDTH))):
        w, h = _size_for_width(probe, width)
        image = best[index].filter("scale", w, h).filter("setsar", 1)
        outputs.append(ffmpeg.output(image, str(path), vframes=1, **{"q:v": str(JPEG_QUALITY)}, f="image2",
                                     update="1"))
    return ffmpeg.merge_outputs(*outputs).global_args(*_GLOBAL).overwrite_output().compile(cmd=ffmpeg_binary())


def make_thumbnail_and_poster(source: str, thumbnail_path: str | Path, poster_path: str | Path, probe: Probe, *,
                              cancel: threading.Event | None = None) -> None:
    """Write the thumbnail (320 wide) and the poster (source size, at most 1280 wide) as JPEG files."""
    try:
        run_ffmpeg(thumbnail_command(source, thumbnail_path, poster_path, probe), cancel=cancel,
                   timeout=time_limit(None, base=60))
    except TranscodeTimeout:
        raise
    except TranscodeError as error:
        # Typically no frame after the seek: the container outlasts the video track (a long audio track, say).
        # The opening frames are better than no thumbnail.
        log.info("no thumbnail from the representative window (%s); using the opening frames", error)
        run_ffmpeg(thumbnail_command(source, thumbnail_path, poster_path, probe, start=0.0), cancel=cancel,
                   timeout=time_limit(None, base=60))
    for path in (thumbnail_path, poster_path):
        if not Path(path).is_file() or Path(path).stat().st_size == 0:
            raise RuntimeError(f"ffmpeg wrote no {Path(path).name}")


@dataclass(frozen=True)
class Storyboard:
    """Geometry of a storyboard sprite: `count` tiles of tile_width × tile_height, one every `interval` s,
    laid out row by row in `columns` × `rows`."""

    duration: float
    interval: float
    count: int
    columns: int
    rows: int
    tile_width: int
    tile_height: int

    @property
    def width(self) -> int:
        return self.columns * self.tile_width

    @property
    def height(self) -> int:
        return self.rows * self.tile_height

    def tile(self, index: int) -> tuple[int, int, int, int]:
        """x, y, w, h of tile `index` inside the sprite."""
        row, column = divmod(index, self.columns)
        return column * self.tile_width, row * self.tile_height, self.tile_width, self.tile_height


def plan_storyboard(duration: float, width: int, height: int, *, max_tiles: int = MAX_TILES,
                    tile_width: int = TILE_WIDTH) -> Storyboard:
    """One tile per whole number of seconds, as few seconds as keeps it at most `max_tiles` tiles."""
    duration = max(float(duration), 0.001)
    interval = max(1, math.ceil(duration / max_tiles))
    count = max(1, min(max_tiles, math.ceil(duration / interval)))
    columns = min(MAX_COLUMNS, count)
    tile_width = _even(min(tile_width, width))
    return Storyboard(duration=duration, interval=float(interval), count=count, columns=columns,
                      rows=math.ceil(count / columns), tile_width=tile_width,
                      tile_height=_even(tile_width * height / width))


def storyboard_command(source: str, sprite_path: str | Path, plan: Storyboard) -> list[str]:
    stream = ffmpeg.input(source, **input_options(source))
    # fps=1/interval keeps the frame nearest each tile's start time; tile lays them out row by row.
    sheet = (stream.video.filter("fps", fps=f"1/{plan.interval:g}")
             .filter("scale", plan.tile_width, plan.tile_height).filter("setsar", 1)
             .filter("tile", f"{plan.columns}x{plan.rows}"))
    return (ffmpeg.output(sheet, str(sprite_path), vframes=1, **{"q:v": "4"}, f="image2", update="1")
            .global_args(*_GLOBAL).overwrite_output().compile(cmd=ffmpeg_binary()))


def make_storyboard(source: str, sprite_path: str | Path, plan: Storyboard, *,
                    cancel: threading.Event | None = None) -> None:
    """Write the sprite sheet JPEG of `plan` from `source` (ideally a small rendition: cheap to decode)."""
    run_ffmpeg(storyboard_command(source, sprite_path, plan), cancel=cancel,
               timeout=time_limit(plan.duration, base=60, factor=2))
    if not Path(sprite_path).is_file() or Path(sprite_path).stat().st_size == 0:
        raise RuntimeError("ffmpeg wrote no storyboard sprite")


def storyboard_vtt(plan: Storyboard, image_url: str = "storyboard.jpg") -> str:
    """The WebVTT index of the sprite: one cue per tile, `image#xywh=x,y,w,h` (Media Fragments)."""
    lines = ["WEBVTT", ""]
    for index in range(plan.count):
        start = index * plan.interval
        end = min((index + 1) * plan.interval, plan.duration)
        if end <= start:
            break
        x, y, w, h = plan.tile(index)
        lines += [f"{_timestamp(start)} --> {_timestamp(end)}", f"{image_url}#xywh={x},{y},{w},{h}", ""]
    return "\n".join(lines)


def _timestamp(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"
