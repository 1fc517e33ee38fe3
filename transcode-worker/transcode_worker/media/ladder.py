"""The HLS ladder: which renditions a source gets, at what size and bitrate."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from services.media import Probe

# name (short side) -> (video bitrate, audio bitrate), in bit/s. Rungs are named by the short side so that a
# portrait phone video gets the same names (and roughly the same bitrates) as its landscape twin.
RUNG_BITRATES: dict[int, tuple[int, int]] = {
    2160: (16_000_000, 160_000),
    1440: (9_000_000, 160_000),
    1080: (5_000_000, 128_000),
    720: (2_800_000, 128_000),
    480: (1_400_000, 96_000),
    360: (800_000, 96_000),
    240: (400_000, 64_000),
}
# Below the smallest rung the source gets one rung of its own, with the smallest rung's budget.
MIN_VIDEO_BITRATE = 200_000
# How many H.264 bits a bit of the source is worth: re-encoding an H.264 source above its own bitrate gains
# nothing, while HEVC/VP9/AV1 need roughly twice as many bits as H.264 for the same picture.
_CODEC_EFFICIENCY = {"hevc": 2.0, "h265": 2.0, "vp9": 2.0, "av1": 2.5, "h264": 1.2}
MAXRATE_FACTOR = 1.1  # peak over average: x264's VBV keeps segments close to the advertised BANDWIDTH
BUFSIZE_FACTOR = 2.0  # VBV buffer of ~2 s: about one segment, smooth enough without bursting


@dataclass(frozen=True)
class Rung:
    name: str
    width: int
    height: int
    video_bitrate: int
    maxrate: int
    bufsize: int
    audio_bitrate: int

    def as_rendition(self) -> dict:
        """The video record's `renditions` entry (API contract: name, width, height, bitrate)."""
        return {"name": self.name, "width": self.width, "height": self.height,
                "bitrate": self.video_bitrate + self.audio_bitrate}

    def as_dict(self) -> dict:
        return asdict(self)


def display_size(probe: Probe) -> tuple[int, int]:
    """Width and height as shown: ffmpeg autorotates, so a 90°-rotated phone video is portrait."""
    if (probe.rotation or 0) % 180 == 90:
        return probe.height, probe.width
    return probe.width, probe.height


def _even(value: float) -> int:
    # H.264 4:2:0 needs even dimensions; never go below 2.
    return max(2, int(round(value / 2)) * 2)


def plan_ladder(probe: Probe) -> list[Rung]:
    """The rungs at or below the source's short side, largest first; always at least one."""
    width, height = display_size(probe)
    if width <= 0 or height <= 0:
        raise ValueError(f"bad source size {width}x{height}")
    short, long_ = min(width, height), max(width, height)
    sizes = [size for size in sorted(RUNG_BITRATES, reverse=True) if size <= short]
    if not sizes:
        sizes = [max(2, short // 2 * 2)]  # its own size, rounded down to even: never upscale
    cap = _bitrate_cap(probe)
    rungs = []
    for size in sizes:
        other = _even(long_ * size / short)
        w, h = (other, size) if width >= height else (size, other)
        video, audio = RUNG_BITRATES.get(size, (MIN_VIDEO_BITRATE, RUNG_BITRATES[240][1]))
        if cap is not None:
            video = min(video, max(cap, MIN_VIDEO_BITRATE))
        rungs.append(Rung(name=f"{size}p", width=w, height=h, video_bitrate=video,
                          maxrate=int(video * MAXRATE_FACTOR), bufsize=int(video * BUFSIZE_FACTOR),
                          audio_bitrate=audio if probe.audio_codec else 0))
    return rungs


def _bitrate_cap(probe: Probe) -> int | None:
    """No rung needs more bits than the source itself carries (scaled by how efficient its codec is)."""
    if not probe.bit_rate or probe.bit_rate <= 0:
        return None
    return int(probe.bit_rate * _CODEC_EFFICIENCY.get(probe.video_codec, 1.5))
