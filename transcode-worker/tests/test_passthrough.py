"""Reuse of a compliant H.264 source as the top rung: chosen only when safe, copied bit for bit, and every rung's
segments cut at the same instants."""

from __future__ import annotations

import hashlib
import re
from fractions import Fraction

import av
import pytest

from services.media import probe
from transcode_worker.media.hls import hls_command, output_fps
from transcode_worker.media.ladder import plan_ladder
from transcode_worker.media.passthrough import _cuts, _Refused, plan_passthrough

# name -> ffmpeg arguments of a 4 s 320x180 clip that must NOT be copied (its top rung is 320x180 itself).
SMALL = ["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30:duration=4", "-f", "lavfi", "-i",
         "sine=duration=4", "-c:a", "aac", "-c:v", "libx264", "-preset", "veryfast"]
EVERY_SECOND = ["-force_key_frames", "expr:gte(t,n_forced)", "-sc_threshold", "0", "-g", "300"]
REFUSED = {
    "long GOP (x264's default: one keyframe for the whole clip)": [
        "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30:duration=6", "-c:v", "libx264", "-preset", "ultrafast",
        "-pix_fmt", "yuv420p"],
    "4:4:4": [*SMALL, *EVERY_SECOND, "-pix_fmt", "yuv444p"],
    "interlaced": [*SMALL, *EVERY_SECOND, "-pix_fmt", "yuv420p", "-x264-params", "interlaced=1:tff=1"],
    "open GOP (keyframes that are no IDR)": [*SMALL, "-pix_fmt", "yuv420p", "-x264-params",
                                             "keyint=30:min-keyint=30:scenecut=0:open-gop=1"],
    "variable frame rate (a frame dropped)": [*SMALL, *EVERY_SECOND, "-pix_fmt", "yuv420p", "-vf",
                                              "select=not(eq(n\\,40))", "-fps_mode", "passthrough"],
    "far above the rung's bitrate": [*SMALL, *EVERY_SECOND, "-pix_fmt", "yuv420p", "-crf", "2"],
    "120 fps (the ladder has every other frame)": [
        "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=120:duration=2", "-c:v", "libx264", "-preset", "ultrafast",
        *EVERY_SECOND, "-pix_fmt", "yuv420p"],
    "HEVC": ["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30:duration=4", "-c:v", "libx265", "-preset",
             "ultrafast", "-x265-params", "log-level=error:keyint=30:min-keyint=30:scenecut=0", "-pix_fmt",
             "yuv420p"],
}


def plan_for(path):
    info = probe(path)
    return plan_passthrough(str(path), info, plan_ladder(info)[0], output_fps(info), 2)


def test_a_compliant_camera_clip_is_copied(make_clip):
    source = make_clip("camera")
    plan = plan_for(source)
    assert plan is not None
    assert plan.cuts == (2, 4)  # IDRs every second, 2 s segments
    assert (plan.rung.name, plan.rung.width, plan.rung.height) == ("360p", 640, 360)
    # The rung advertises the source's own bitrate (the API's `renditions`, the master's BANDWIDTH).
    assert 200_000 < plan.rung.video_bitrate <= plan.rung.maxrate <= 1_300_000


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_sources_that_are_not_safe_to_copy_are_encoded(case, tmp_path, media):
    path = tmp_path / "clip.mp4"
    media.run_ffmpeg_cli(*REFUSED[case], str(path))
    assert plan_for(path) is None


def test_a_rotated_or_resized_source_is_encoded(make_clip, tmp_path, media):
    rotated = tmp_path / "rotated.mp4"
    media.run_ffmpeg_cli("-display_rotation", "90", "-i", str(make_clip("camera")), "-c", "copy", str(rotated))
    assert plan_for(rotated) is None
    info = probe(make_clip("camera"))
    smaller_rung = plan_ladder(info)[1]  # 240p: not the source's size, so it cannot be the source's packets
    assert plan_passthrough(str(make_clip("camera")), info, smaller_rung, output_fps(info), 2) is None


def test_cuts_follow_the_muxer_and_refuse_an_ambiguous_keyframe():
    seconds = [Fraction(n, 30) for n in (0, 29, 58, 90, 121, 150)]  # irregular GOPs
    assert _cuts(seconds, Fraction(2), Fraction(1, 40)) == [Fraction(90, 30), Fraction(121, 30)]
    # 1.95 s lies within 1/40 s of the 2 s threshold: whether the muxer cuts there depends on where it starts.
    with pytest.raises(_Refused):
        _cuts([Fraction(0), Fraction(39, 20), Fraction(3)], Fraction(2), Fraction(1, 10))


def test_hls_command_copies_the_top_rung_and_forces_the_others_keyframes_on_its_cuts(make_clip, tmp_path):
    source = make_clip("camera")
    info = probe(source)
    plan = plan_for(source)
    rungs = [plan.rung, *plan_ladder(info)[1:]]
    argv = hls_command(str(source), tmp_path, rungs, info, passthrough=plan)
    assert argv[argv.index("-c:v:0") + 1] == "copy"
    assert argv[argv.index("-c:v:1") + 1] == "libx264"
    # Half a frame early, so the keyframe lands on the frame at 2 s and 4 s.
    assert argv[argv.index("-force_key_frames:v:1") + 1] == "0,1.983333,3.983333"
    assert "-force_key_frames:v:0" not in argv
    assert argv[argv.index("-hls_time") + 1] == "2"
    assert "split=1" in argv[argv.index("-filter_complex") + 1]  # only the encoded rung is scaled
    with pytest.raises(ValueError, match="padded"):
        hls_command(str(source), tmp_path, rungs, info, passthrough=plan, pad_video=True)


def video_packets(path) -> tuple[int, str]:
    digest = hashlib.sha256()
    count = 0
    with av.open(str(path)) as container:
        for packet in container.demux(container.streams.video[0]):
            if packet.size:
                count += 1
                digest.update(bytes(packet))
    return count, digest.hexdigest()


def test_the_pipeline_copies_the_top_rung_with_every_rung_aligned(pipeline_runs):
    run = pipeline_runs("camera")
    source = probe(run.source)
    renditions = {r["name"]: r for r in run.result.renditions}
    assert list(renditions) == ["360p", "240p"]
    top = plan_for(run.source).rung
    assert renditions["360p"]["bitrate"] == top.video_bitrate + top.audio_bitrate
    # Copied: the very packets of the source, none re-encoded.
    assert video_packets(run.hls("360p", "index.m3u8")) == video_packets(run.source)
    durations = {}
    keyframes = {}
    for name in renditions:
        text = run.hls(name, "index.m3u8").read_text()
        durations[name] = re.findall(r"#EXTINF:([\d.]+)", text)
        with av.open(str(run.hls(name, "index.m3u8"))) as container:
            stream = container.streams.video[0]
            keyframes[name] = [round(float(p.pts * stream.time_base), 3) for p in container.demux(stream)
                               if p.pts is not None and p.is_keyframe]
        with av.open(str(run.hls(name, "index.m3u8"))) as container:
            frames = sum(1 for _ in container.decode(video=0))
        assert frames == round(source.duration * 30), name  # every frame decodes, in every rung
    assert [float(d) for d in durations["360p"]] == pytest.approx([2, 2, 2], abs=0.01)
    assert durations["360p"] == durations["240p"]  # segments start at the same instants in every rung
    # The copied rung keeps the source's IDR every second; the encoded one has exactly the cuts.
    assert set(keyframes["240p"]) <= set(keyframes["360p"]) and len(keyframes["240p"]) == 3
    assert not run.store.violations
