"""Media inspection shared by the upload service and the worker: sniff the container, probe it with PyAV."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import av

SNIFF_BYTES = 512
MAX_SIDE = 8192
MAX_PIXELS = 7680 * 4320  # 8K UHD: larger frames could take the worker's whole memory to decode and scale
# A file claiming hours of video in a few kilobytes (frames far apart) would keep a worker encoding repeated
# frames for hours: real video, even a still picture with silence, needs far more bytes per second than this.
MIN_BYTES_PER_SECOND = 125
DENSITY_CHECK_AFTER = 600.0  # seconds: short clips may be tiny
# Real files carry a video track, a few audio languages and subtitles; hundreds of streams only cost memory.
MAX_STREAMS = 64

# Demuxers ffmpeg may use on an upload: containers only, never playlists, concat lists or image pipes that could
# make it read other files.
FORMAT_WHITELIST = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,mpeg,flv,ogg,asf"


class MediaError(ValueError):
    """The file is not a video we can use; the message is for the user."""


@dataclass(frozen=True)
class Probe:
    container: str
    duration: float
    width: int
    height: int
    video_codec: str
    audio_codec: str | None
    fps: float | None
    bit_rate: int | None
    rotation: int = 0
    pixel_format: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def sniff(head: bytes) -> str:
    """The container family from the first bytes, or MediaError: text files, images and playlists stop here."""
    if not head:
        raise MediaError("The file is empty.")
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"):
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith(b"FLV"):
        return "flv"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "asf"
    if head.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")):
        return "mpeg"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "mpegts"
    raise MediaError("This is not a video file (its format is not one we recognise).")


def probe(source: str | Path, *, timeout: float = 20) -> Probe:
    """Open the container, require a video stream whose first frame decodes; MediaError otherwise.

    `source` is a local path or an http(s) URL (e.g. a presigned S3 GET); only the matching protocols are
    allowed, so a crafted file cannot make ffmpeg open anything else."""
    source = str(source)
    remote = source.startswith(("http://", "https://"))
    options = {
        "protocol_whitelist": "http,https,tcp,tls" if remote else "file",
        "format_whitelist": FORMAT_WHITELIST,
        "probesize": str(32 * 1024 * 1024),
        "analyzeduration": str(20 * 1_000_000),
        # Decoders refuse larger frames before allocating them (a header claiming 15360×15360 took 650 MiB).
        "max_pixels": str(MAX_PIXELS),
    }
    try:
        container = av.open(source, options=options, timeout=(timeout, timeout))
    except Exception as error:  # PyAV raises many kinds for hostile input; every one means "not usable"
        raise MediaError(f"The file cannot be read as a video ({_reason(error)}).") from None
    try:
        if len(container.streams) > MAX_STREAMS:
            raise MediaError(f"The file has {len(container.streams)} streams; at most {MAX_STREAMS} are accepted.")
        if not container.streams.video:
            raise MediaError("The file has no video stream.")
        stream = container.streams.video[0]
        _check_frame_size(stream.codec_context.width, stream.codec_context.height)  # the header's claim
        # Generators over a container are closed before the container is: one collected later (maybe in another
        # thread) would touch freed native memory.
        decoder = container.decode(stream)
        try:
            frame = next(decoder, None)
        except (av.FFmpegError, OSError) as error:
            raise MediaError(f"The video stream cannot be decoded ({_reason(error)}).") from None
        finally:
            decoder.close()
        if frame is None:
            raise MediaError("The video stream has no frames.")
        _check_frame_size(frame.width, frame.height)
        duration = _duration(container, stream)
        if duration is None or duration <= 0:
            raise MediaError("The video has no duration (is the file truncated?).")
        _check_density(duration, container.size)
        # The video track's own length: a still picture over a longer song is complete, not truncated.
        track = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else duration
        _check_complete(container, stream, min(duration, track))
        audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
        return Probe(
            container=container.format.name, duration=round(duration, 3), width=frame.width, height=frame.height,
            video_codec=stream.codec_context.name, audio_codec=audio,
            fps=float(stream.average_rate) if stream.average_rate else None,
            bit_rate=container.bit_rate or None, rotation=_rotation(frame),
            pixel_format=stream.codec_context.format.name if stream.codec_context.format else None,
        )
    finally:
        container.close()


def _check_frame_size(width: int, height: int) -> None:
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise MediaError(f"The video is {width}×{height}; the largest accepted is 7680×4320 (8K).")


def _check_density(duration: float, size: int) -> None:
    if duration > DENSITY_CHECK_AFTER and 0 < size < duration * MIN_BYTES_PER_SECOND:
        raise MediaError(f"The file claims to last {duration / 3600:.1f} h but holds only {size} bytes; a video "
                         "that long cannot be this small.")


def _check_complete(container, stream, duration: float) -> None:
    """The header may promise more than the file holds (a faststart MP4 cut short): demux the last seconds."""
    tolerance = max(1.0, 0.05 * duration)
    demuxer = None
    try:
        container.seek(int(max(0.0, duration - tolerance - 2) * 1_000_000), backward=True, any_frame=False)
        demuxer = container.demux(stream)
        for count, packet in enumerate(demuxer):
            if packet.pts is not None and packet.time_base is not None:
                if float(packet.pts * packet.time_base) - _start(stream) >= duration - tolerance:
                    return
            if count > 20_000:
                break
    except (av.FFmpegError, OSError):
        pass
    finally:
        if demuxer is not None:
            demuxer.close()
    raise MediaError("The file is truncated: it ends before the duration its header announces.")


def _start(stream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time and stream.time_base else 0.0


def _duration(container, stream) -> float | None:
    if container.duration:
        return container.duration / 1_000_000
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return None


def _rotation(frame) -> int:
    try:
        return int(frame.rotation or 0)
    except AttributeError:
        return 0


def _reason(error: Exception) -> str:
    text = getattr(error, "strerror", None) or str(error)
    return text.split(":")[-1].strip()[:200] or type(error).__name__
