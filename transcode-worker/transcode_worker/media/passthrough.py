"""Reuse of a compliant H.264 source as the top rung ("standard input", as Mux calls it).

The top rung's video is the source's own packets, copied into the HLS segments instead of encoded again (the most
expensive encode of the ladder saved, and no generation loss there). That is only safe when the copy behaves like a
rung we would have encoded: H.264 that browsers play (8-bit 4:2:0, progressive, SDR, Baseline/Main/High), exactly
the top rung's size with square pixels and no rotation, a constant frame rate equal to the ladder's, IDR
keyframes often enough for the segment grid, and a bitrate a viewer's connection can take. Anything else is
encoded as before. The encoded rungs then get their keyframes exactly where the muxer cuts the copied rung, so
every rung's segments start at the same instants (RFC 8216 §6.2.4: matching content in variant streams has
matching timestamps; a player switches rungs at segment boundaries).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from fractions import Fraction

import av

from services.media import Probe

from .hls import input_options
from .ladder import Rung

log = logging.getLogger(__name__)

PROFILES = {"Constrained Baseline", "Baseline", "Main", "High"}
MAX_LEVEL = 52  # H.264 level 5.2: the most any browser decodes
SDR_TRANSFERS = {1, 2, 6}  # bt709, unspecified, smpte170m (libavutil's AVColorTransferCharacteristic)
FULL_RANGE = 2  # AVCOL_RANGE_JPEG
# A copied top rung may carry this much more than the bitrate we would have encoded it at (1080p: 5 → 8 Mbit/s,
# the cap of Mux's standard input), and its busiest segment twice that.
MAX_AVERAGE_FACTOR = 1.6
MAX_PEAK_FACTOR = 3.2
MAX_SEGMENT_FACTOR = 2.0  # no segment longer than twice the target: a GOP that long is "not compliant"
# The muxer measures cut times from its first packet, which may be an audio packet a little before the video: the
# AAC encoder's first packet starts its 1024 priming samples early. A source keyframe that close before a cut
# threshold could be cut on or not, so such a source is encoded.
AAC_PRIMING_SAMPLES = 1024
EPSILON = Fraction(1, 1000)
IDR = 5  # H.264 NAL unit type of an IDR picture
MAX_KEYFRAME_LIST = 100_000  # characters: far below Linux's 128 KiB limit for one argument


@dataclass(frozen=True)
class Passthrough:
    """The top rung as copied (its bitrates the source's own) and where every rung's segments start."""

    rung: Rung
    cuts: tuple[Fraction, ...]  # seconds from the first frame, the first cut after 0 first
    frame: Fraction  # one frame's duration

    def force_key_frames(self) -> str:
        """-force_key_frames for an encoded rung: 0 and every cut. Half a frame early, so that rounding can never
        push the keyframe onto the next frame (ffmpeg forces it on the first frame at or after the time)."""
        return ",".join(["0", *(f"{float(cut - self.frame / 2):.6f}" for cut in self.cuts)])

    def gop_frames(self) -> int:
        """A GOP longer than any segment: the encoder adds no keyframes of its own between the forced ones."""
        longest = max((b - a for a, b in zip((Fraction(0), *self.cuts), self.cuts, strict=False)),
                      default=Fraction(0))
        return int(longest / self.frame) * 2 + 1


class _Refused(Exception):  # noqa: N818 - a verdict, not an error: the rung is encoded
    pass


def plan_passthrough(source: str, probe: Probe, top: Rung, fps: Fraction, segment_seconds: float, *,
                     timeout: float = 20) -> Passthrough | None:
    """The Passthrough for `top` (the ladder's largest rung) when `source` may be copied as it, else None.

    Reads the container headers, one decoded frame and every video packet's header (no decoding): for a local
    file a fraction of a second per minute of video."""
    try:
        return _plan(source, probe, top, fps, Fraction(segment_seconds).limit_denominator(1000), timeout)
    except _Refused as reason:
        log.info("the top rung %s is encoded: %s", top.name, reason)
        return None
    except (av.FFmpegError, OSError, ValueError, IndexError) as error:
        log.info("the top rung %s is encoded: the source could not be checked (%s)", top.name, error)
        return None


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise _Refused(reason)


def _plan(source: str, probe: Probe, top: Rung, fps: Fraction, segment: Fraction, timeout: float) -> Passthrough:
    _require(probe.video_codec == "h264", f"{probe.video_codec} is not H.264")
    _require(probe.pixel_format == "yuv420p", f"pixel format {probe.pixel_format}")
    _require(not probe.rotation, "rotated")
    _require((probe.width, probe.height) == (top.width, top.height),
             f"{probe.width}x{probe.height} is not the rung's size")
    with av.open(source, options=input_options(source), timeout=(timeout, timeout)) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        _require(context.profile in PROFILES, f"profile {context.profile}")
        _require(0 < context.level <= MAX_LEVEL, f"level {context.level}")
        _require(context.color_trc in SDR_TRANSFERS, f"colour transfer {context.color_trc} (HDR?)")
        _require(context.color_range != FULL_RANGE, "full-range colour")
        sar = stream.sample_aspect_ratio
        _require(not sar or sar == 1, f"pixel aspect {sar}")
        extradata = context.extradata or b""
        _require(len(extradata) > 4 and extradata[0] == 1, "no avcC configuration (Annex B stream)")
        length_size = (extradata[4] & 3) + 1
        margin = EPSILON
        if container.streams.audio:
            sound = container.streams.audio[0]
            start = sound.start_time * sound.time_base if sound.start_time is not None else Fraction(0)
            margin += max(Fraction(0), Fraction(AAC_PRIMING_SAMPLES, sound.codec_context.sample_rate or 8000) - start)
        decoder = container.decode(stream)
        try:
            frame = next(decoder)
        finally:
            decoder.close()
        _require(not frame.interlaced_frame and context.field_order in (0, 1), "interlaced")
        container.seek(0, stream=stream)
        times, keyframes, sizes = [], [], []
        base = stream.time_base
        for packet in container.demux(stream):
            if packet.pts is None or not packet.size:
                continue
            time = packet.pts * base
            times.append(time)
            sizes.append((time, packet.size))
            if packet.is_keyframe:
                _require(_is_idr(bytes(packet), length_size), f"the keyframe at {float(time):.3f} s is not an IDR")
                keyframes.append(time)
    return _verdict(top, fps, segment, times, keyframes, sizes, margin)


def _is_idr(data: bytes, length_size: int) -> bool:
    """Whether an AVCC (length-prefixed) access unit holds an IDR slice."""
    offset = 0
    while offset + length_size < len(data):
        size = int.from_bytes(data[offset:offset + length_size], "big")
        if data[offset + length_size] & 0x1F == IDR:
            return True
        offset += length_size + size
    return False


def _verdict(top: Rung, fps: Fraction, segment: Fraction, times, keyframes, sizes, margin: Fraction) -> Passthrough:
    _require(len(times) > 1, "too few frames")
    times.sort()
    frame = 1 / fps
    # Constant frame rate: the encoded rungs come out of the fps filter on that exact grid.
    _require(times[0] == 0 and keyframes and keyframes[0] == 0, "the video does not start with a keyframe at 0")
    steps = {b - a for a, b in zip(times, times[1:], strict=False)}
    _require(all(abs(step - frame) < frame / 100 for step in steps),
             f"not a constant {float(fps):g} frames per second (the ladder's rate)")
    cuts = _cuts(keyframes, segment, margin)
    starts = [Fraction(0), *cuts]
    end = times[-1] + frame
    lengths = [b - a for a, b in zip(starts, [*cuts, end], strict=False)]
    _require(max(lengths) <= segment * Fraction(MAX_SEGMENT_FACTOR),
             f"keyframes too far apart for {float(segment):g} s segments")
    # Bitrates: over the whole video and per segment (a player picks a rung by its peak, the master's BANDWIDTH).
    per_segment = [0] * len(starts)
    index = 0
    for time, size in sorted(sizes):
        while index + 1 < len(starts) and time >= starts[index + 1]:
            index += 1
        per_segment[index] += size
    average = int(sum(per_segment) * 8 / end)
    peak = int(max(8 * bytes_ / length for bytes_, length in zip(per_segment, lengths, strict=True) if length > 0))
    _require(average <= top.video_bitrate * MAX_AVERAGE_FACTOR, f"{average} bit/s on average")
    _require(peak <= top.video_bitrate * MAX_PEAK_FACTOR, f"{peak} bit/s in its busiest segment")
    plan = Passthrough(dataclasses.replace(top, video_bitrate=average, maxrate=peak, bufsize=2 * peak),
                       tuple(cuts), frame)
    _require(len(plan.force_key_frames()) < MAX_KEYFRAME_LIST, "too many segments")
    return plan


def _cuts(keyframes: list[Fraction], segment: Fraction, margin: Fraction) -> list[Fraction]:
    """Where ffmpeg's HLS muxer cuts a stream with these keyframes (hlsenc.c): at the first keyframe at least
    `segment` × (segments so far + 1) after its start. Refuses a keyframe less than `margin` before a threshold:
    where the muxer's start lies (an audio packet up to `margin` before the video) would decide that cut."""
    cuts = []
    for time in keyframes[1:]:
        threshold = segment * (len(cuts) + 1)
        if time >= threshold:
            cuts.append(time)
        else:
            _require(time < threshold - margin, f"a keyframe at {float(time):.3f} s lies on a cut threshold")
    return cuts
