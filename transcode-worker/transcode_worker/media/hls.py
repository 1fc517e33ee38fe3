"""The ffmpeg command of the ladder: decode once, split, scale and encode every rung into fMP4 HLS."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import ffmpeg

from services.media import FORMAT_WHITELIST, Probe

from .images import Stills
from .ladder import Rung
from .runner import ffmpeg_binary

if TYPE_CHECKING:  # passthrough imports this module
    from .passthrough import Passthrough

MASTER_NAME = "master.m3u8"
PLAYLIST_NAME = "index.m3u8"
INIT_NAME = "init.mp4"
SEGMENT_PATTERN = "seg_%05d.m4s"
MAX_FPS = 60
DEFAULT_FPS = 30


def input_options(source: str) -> dict:
    """Input options for any ffmpeg reading an uploaded file: only container demuxers, only file/web protocols,
    so a crafted upload (an HLS or concat playlist in disguise) cannot make ffmpeg open other files or hosts."""
    remote = str(source).startswith(("http://", "https://"))
    # Narrower than "file,http,https,tcp,tls": a local file has no business opening URLs, nor a URL local files.
    return {"protocol_whitelist": "http,https,tcp,tls" if remote else "file", "format_whitelist": FORMAT_WHITELIST}


def output_fps(probe: Probe) -> Fraction:
    """A constant output rate near the source's: a fixed GOP only means fixed time with a constant rate."""
    fps = probe.fps or 0.0
    if not 1 <= fps <= 240:
        return Fraction(DEFAULT_FPS)  # unknown or absurd (VFR files report all sorts): a safe default
    rate = _snap(fps)
    while rate > MAX_FPS:
        rate /= 2  # 120 -> 60, 100 -> 50: every other frame, still smooth
    return rate


def _snap(fps: float) -> Fraction:
    """The exact rate behind a rounded one: 29.97 -> 30000/1001, 23.976 -> 24000/1001, 25.0 -> 25."""
    if abs(fps - round(fps)) < 0.01:
        return Fraction(round(fps))
    ntsc = round(fps * 1.001)
    if abs(fps - ntsc * 1000 / 1001) < 0.01:
        return Fraction(ntsc * 1000, 1001)
    return Fraction(fps).limit_denominator(1000)


def first_segment_keyframes(segment_seconds: float) -> str:
    """-force_key_frames: at 0 and half a segment, then on the segment grid (s, 2s, 3s…) in every rung."""
    half, whole = _seconds(segment_seconds / 2), _seconds(segment_seconds)
    return f"expr:if(lt(n_forced,2),gte(t,n_forced*{half}),gte(t,(n_forced-1)*{whole}))"


def _seconds(value: float) -> str:
    return f"{value:g}"


def gop_frames(fps: Fraction, segment_seconds: float) -> int:
    return max(1, round(fps * Fraction(segment_seconds).limit_denominator(1000)))


def _encoded_video_options(index: int, rung: Rung, preset: str, fps: Fraction, segment_seconds: float,
                           passthrough: Passthrough | None) -> dict[str, str]:
    """x264 options of output video stream `index`. Keyframes at the same instants in every rung, so a player
    can switch rungs at any segment boundary: no extra keyframes on scene cuts, and keyframes forced on the
    segment grid (a fixed GOP), or where the copied top rung has its cuts."""
    if passthrough is None:
        gop, keyframes = gop_frames(fps, segment_seconds), first_segment_keyframes(segment_seconds)
    else:
        gop, keyframes = passthrough.gop_frames(), passthrough.force_key_frames()
    return {f"c:v:{index}": "libx264", f"preset:v:{index}": preset, f"profile:v:{index}": "high",
            f"b:v:{index}": str(rung.video_bitrate), f"maxrate:v:{index}": str(rung.maxrate),
            f"bufsize:v:{index}": str(rung.bufsize), f"g:v:{index}": str(gop),
            f"keyint_min:v:{index}": str(gop), f"sc_threshold:v:{index}": "0",
            f"force_key_frames:v:{index}": keyframes}


def hls_command(source: str, out_dir: str | Path, rungs: list[Rung], probe: Probe, *, segment_seconds: float = 2,
                preset: str = "veryfast", readrate: float | None = None, pad_video: bool = False,
                stills: Stills | None = None, passthrough: Passthrough | None = None) -> list[str]:
    """argv of ONE ffmpeg process writing `<out_dir>/<rung>/index.m3u8` (+ init.mp4, seg_NNNNN.m4s) per rung
    and `<out_dir>/master.m3u8`. `readrate` throttles reading the input (× realtime), e.g. to share a machine.
    `pad_video`: the video track ends before the audio (a still picture over a song): repeat its last frame.
    Segments last `segment_seconds`, except that the first is cut in two halves: a viewer waiting for a new
    video gets its first segment after half the encoding. `stills`: the thumbnail, poster and storyboard come out
    of the same decode as extra outputs. `passthrough`: the top rung (rungs[0]) is the source's video copied, cut
    where the source has keyframes, and the other rungs get theirs at the same instants."""
    if not rungs:
        raise ValueError("no rungs")
    if passthrough is not None and pad_video:
        raise ValueError("a padded video track cannot be copied")
    out_dir = Path(out_dir).absolute()
    if "%" in str(out_dir):
        raise ValueError("the output directory must not contain '%' (ffmpeg expands it)")
    fps = output_fps(probe)
    in_options = input_options(source)
    if readrate:
        in_options["readrate"] = str(readrate)
    stream = ffmpeg.input(source, **in_options)
    # Shared work happens once, before the split: a constant frame rate (so GOPs of `gop` frames are segments of
    # equal length in every rung) and 8-bit 4:2:0 (10-bit or 4:4:4 H.264 does not play in browsers).
    video = stream.video.filter("fps", fps=str(fps))
    if pad_video:
        # HLS cuts segments at video keyframes: with no video left, the rest of the audio would end up in one
        # segment that claims a couple of seconds. Clone the last picture to the end instead (-t trims the rest).
        video = video.filter("tpad", stop_mode="clone", stop_duration=f"{probe.duration:.3f}")
    copied = 1 if passthrough is not None else 0
    encoded = len(rungs) - copied
    branches = encoded + (stills.BRANCHES if stills else 0)
    # (No branch at all: a copied rung alone, bench/transcode.py's one process per rung.)
    video = video.filter("format", "yuv420p").filter_multi_output("split", branches) if branches else None
    audio = stream.audio.filter_multi_output("asplit", len(rungs)) if probe.audio_codec else None
    outputs, options, stream_map = [], {}, []
    for index, rung in enumerate(rungs):
        if index < copied:
            outputs.append(stream["v:0"])
            options[f"c:v:{index}"] = "copy"
        else:
            # setsar=1: square pixels; the sizes were computed from the displayed aspect already.
            outputs.append(video[index - copied].filter("scale", rung.width, rung.height).filter("setsar", 1))
            options.update(_encoded_video_options(index, rung, preset, fps, segment_seconds, passthrough))
        if audio is not None:
            outputs.append(audio[index])
            options[f"b:a:{index}"] = str(rung.audio_bitrate)
            stream_map.append(f"v:{index},a:{index},name:{rung.name}")
        else:
            stream_map.append(f"v:{index},name:{rung.name}")
    options.update({
        # The muxer cuts at the first keyframe past hls_time × the segments so far: with keyframes at 0, s/2, s,
        # 2s, 3s… and hls_time s/2 that is every keyframe, i.e. segments of s/2, s/2, then s. A copied rung
        # has the source's keyframes (say every second): hls_time s keeps its segments near s long.
        "f": "hls", "hls_time": _seconds(segment_seconds if passthrough else segment_seconds / 2),
        "hls_segment_type": "fmp4",
        "hls_fmp4_init_filename": INIT_NAME,
        "hls_segment_filename": str(out_dir / "%v" / SEGMENT_PATTERN),
        # EVENT: players may start while segments are still being added; VOD is written at the end (publisher).
        # temp_file: playlists are renamed into place, so a reader never sees half a playlist.
        "hls_playlist_type": "event", "hls_flags": "independent_segments+temp_file",
        "hls_list_size": "0", "var_stream_map": " ".join(stream_map), "master_pl_name": MASTER_NAME,
        # The uploader's tags (titles, GPS, device) stay private: outputs carry none of them.
        "map_metadata": "-1", "map_chapters": "-1",
    })
    if pad_video:
        options["t"] = f"{probe.duration:.3f}"
    if audio is not None:
        options.update({"c:a": "aac", "ac": "2"})  # stereo AAC-LC: what every browser plays
    hls = ffmpeg.output(*outputs, str(out_dir / "%v" / PLAYLIST_NAME), **options)
    if stills is not None:
        hls = ffmpeg.merge_outputs(hls, *stills.outputs(video[encoded], video[encoded + 1], probe, float(fps)))
    return (hls
            # progress every 0.1 s: the caller announces the first published segments between two reports
            .global_args("-hide_banner", "-nostdin", "-loglevel", "error", "-progress", "pipe:1", "-nostats",
                         "-stats_period", "0.1")
            .overwrite_output()
            .compile(cmd=ffmpeg_binary()))
