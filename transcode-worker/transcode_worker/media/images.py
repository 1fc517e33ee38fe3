"""Still images: thumbnail and poster from a representative frame, and a storyboard sprite with its WebVTT."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from services.media import Probe

from .ladder import display_size

THUMBNAIL_WIDTH = 320
POSTER_MAX_WIDTH = 1280
TILE_WIDTH = 160
MAX_TILES = 100
MAX_COLUMNS = 10
JPEG_QUALITY = 3  # ffmpeg's -q:v scale, 2 (best) .. 31


def _even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def _size_for_width(probe: Probe, width: int) -> tuple[int, int]:
    """An even size `width` wide (never wider than the source) with the source's displayed aspect."""
    source_width, source_height = display_size(probe)
    width = _even(min(width, source_width))
    return width, _even(width * source_height / source_width)


def _window_seconds(duration: float) -> float:
    return min(3.0, duration * 0.5)


def representative_window(duration: float, fps: float | None) -> tuple[float, int]:
    """Where to look for the thumbnail (seconds) and over how many frames: from 20 % in, so intros, fades
    from black and title cards are behind us, over up to ~3 s of frames for the `thumbnail` filter."""
    window = _window_seconds(duration)
    start = max(0.0, min(duration * 0.2, duration - window))
    frames = max(1, min(100, round((fps or 30) * window)))
    return round(start, 3), frames


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


@dataclass(frozen=True)
class Stills:
    """Thumbnail, poster and storyboard sprite as extra outputs of the ladder's own ffmpeg process: it decodes the
    source anyway, so the images cost a few filters instead of a second and a third decode."""

    thumbnail: Path
    poster: Path
    sprite: Path
    storyboard: Storyboard
    BRANCHES = 2  # video branches of the ladder's split these outputs take

    def outputs(self, thumbnail_branch, storyboard_branch, probe: Probe, fps: float) -> list:
        """ffmpeg-python outputs fed by two branches of the ladder's decoded video (constant `fps`)."""
        start, frames = representative_window(probe.duration, fps)
        opening, rest = _opening_and_rest(thumbnail_branch, 2)
        # trim: only the window reaches the `thumbnail` filter, which picks, out of `frames` frames, the one
        # closest to their average histogram: a typical picture, not a black or flash frame. One pick, both images.
        best = (rest.filter("trim", start=f"{start:g}", end=f"{start + _window_seconds(probe.duration):.3f}")
                .filter("thumbnail", n=max(2, frames))  # ffmpeg wants n ≥ 2
                .filter("trim", end_frame=1).filter_multi_output("split", 2))
        outputs = []
        for index, (path, width) in enumerate(((self.thumbnail, THUMBNAIL_WIDTH), (self.poster, POSTER_MAX_WIDTH))):
            size = _size_for_width(probe, width)
            outputs.append(_jpeg(_primed(opening[index], best[index], size), path, JPEG_QUALITY))
        plan = self.storyboard
        opening, rest = _opening_and_rest(storyboard_branch, 1)
        # fps=1/interval keeps the frame nearest each tile's start time; tile lays them out row by row. A padded
        # video track (tpad) runs past the duration: the sprite shows the video's own length only.
        sheet = (rest.filter("trim", end=f"{plan.duration:.3f}").filter("fps", fps=f"1/{plan.interval:g}")
                 .filter("scale", plan.tile_width, plan.tile_height).filter("setsar", 1)
                 .filter("tile", f"{plan.columns}x{plan.rows}"))
        outputs.append(_jpeg(_primed(opening[0], sheet, (plan.width, plan.height)), self.sprite, 4))
        return outputs

    def check(self) -> None:
        for path in (self.thumbnail, self.poster, self.sprite):
            if not path.is_file() or path.stat().st_size == 0:
                raise RuntimeError(f"ffmpeg wrote no {path.name}")


def _opening_and_rest(branch, copies: int):
    """`copies` branches with the opening frame alone, and one with every frame."""
    parts = branch.filter_multi_output("split", 2)
    return parts[0].filter("trim", end_frame=1).filter_multi_output("split", copies), parts[1]


def _primed(opening, picked, size: tuple[int, int]):
    """The opening frame, then `picked`, both at `size`. ffmpeg holds back every -progress report until each
    output has started, and the pick or the sprite come late (the sprite at the very end): the opening frame
    starts the image output at once, and the picked frame then overwrites it (image2 -update 1)."""
    width, height = size
    return ffmpeg.concat(opening.filter("scale", width, height).filter("setsar", 1),
                         picked.filter("scale", width, height).filter("setsar", 1), v=1, a=0)


def _jpeg(video, path: Path, quality: int):
    return ffmpeg.output(video, str(path), **{"q:v": str(quality)}, f="image2", update="1")


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
