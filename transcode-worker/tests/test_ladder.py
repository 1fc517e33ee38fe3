"""Ladder planning, ffmpeg argv and storyboard geometry: pure functions, no ffmpeg run."""

from __future__ import annotations

from fractions import Fraction

import pytest

from services.media import Probe
from transcode_worker.media.hls import hls_command, output_fps
from transcode_worker.media.images import plan_storyboard, storyboard_vtt
from transcode_worker.media.ladder import plan_ladder
from transcode_worker.media.remux import is_browser_playable


def make_probe(width, height, *, fps=30.0, audio="aac", codec="h264", rotation=0, bit_rate=None,
               container="mov,mp4,m4a,3gp,3g2,mj2", duration=10.0) -> Probe:
    return Probe(container=container, duration=duration, width=width, height=height, video_codec=codec,
                 audio_codec=audio, fps=fps, bit_rate=bit_rate, rotation=rotation)


def sizes(rungs):
    return [(r.name, r.width, r.height) for r in rungs]


def test_1080p_gets_five_rungs_largest_first():
    assert sizes(plan_ladder(make_probe(1920, 1080))) == [
        ("1080p", 1920, 1080), ("720p", 1280, 720), ("480p", 854, 480), ("360p", 640, 360), ("240p", 426, 240)]


def test_2160p_adds_1440_and_2160():
    assert [r.name for r in plan_ladder(make_probe(3840, 2160))] == [
        "2160p", "1440p", "1080p", "720p", "480p", "360p", "240p"]


def test_portrait_rungs_by_short_side():
    assert sizes(plan_ladder(make_probe(360, 640))) == [("360p", 360, 640), ("240p", 240, 426)]


def test_rotated_phone_video_is_portrait():
    # Stored 1920x1080 with a 90° display matrix: ffmpeg autorotates, so the ladder is portrait.
    assert sizes(plan_ladder(make_probe(1920, 1080, rotation=90)))[0] == ("1080p", 1080, 1920)
    assert sizes(plan_ladder(make_probe(1920, 1080, rotation=-90)))[0] == ("1080p", 1080, 1920)


def test_odd_source_gets_even_sizes_with_aspect_kept():
    rungs = plan_ladder(make_probe(642, 362))
    assert sizes(rungs) == [("360p", 638, 360), ("240p", 426, 240)]
    for rung in rungs:
        assert abs(rung.width / rung.height - 642 / 362) < 0.01


@pytest.mark.parametrize(("width", "height", "expected"), [
    (200, 112, ("112p", 200, 112)), (201, 113, ("112p", 200, 112)), (100, 300, ("100p", 100, 300)),
    (3, 3, ("2p", 2, 2)),
])
def test_tiny_source_gets_one_rung_of_its_own_even_size(width, height, expected):
    assert sizes(plan_ladder(make_probe(width, height))) == [expected]


def test_bitrates_grow_with_size_and_audio_only_with_audio():
    rungs = plan_ladder(make_probe(1920, 1080))
    bitrates = [r.video_bitrate for r in rungs]
    assert bitrates == sorted(bitrates, reverse=True)
    assert rungs[0].video_bitrate == 5_000_000 and rungs[-1].video_bitrate == 400_000
    assert all(r.maxrate > r.video_bitrate and r.bufsize >= r.maxrate for r in rungs)
    assert all(r.audio_bitrate > 0 for r in rungs)
    assert all(r.audio_bitrate == 0 for r in plan_ladder(make_probe(1920, 1080, audio=None)))


def test_bitrate_never_above_what_the_source_justifies():
    rungs = plan_ladder(make_probe(1920, 1080, bit_rate=1_000_000))
    assert rungs[0].video_bitrate == 1_200_000  # H.264 source: at most 1.2× its own bitrate
    assert rungs[-1].video_bitrate == 400_000
    assert plan_ladder(make_probe(1920, 1080, bit_rate=10_000))[0].video_bitrate == 200_000  # floor


def test_rendition_entry_follows_the_api_contract():
    assert plan_ladder(make_probe(640, 360))[0].as_rendition() == {
        "name": "360p", "width": 640, "height": 360, "bitrate": 800_000 + 96_000}


def option(argv, name):
    return argv[argv.index(name) + 1]


def test_hls_command_one_process_aligned_keyframes(tmp_path):
    probe = make_probe(1280, 720, fps=30000 / 1001)
    rungs = plan_ladder(probe)
    argv = hls_command("/videos/in.mp4", tmp_path / "out", rungs, probe)
    for index in range(len(rungs)):  # every rung encoded alike
        assert option(argv, f"-c:v:{index}") == "libx264"
        assert option(argv, f"-g:v:{index}") == option(argv, f"-keyint_min:v:{index}") == "60"
        assert option(argv, f"-sc_threshold:v:{index}") == "0"
        # keyframes at 0 and 1 s, then every 2 s; the muxer cuts at each: segments of 1, 1, 2, 2… s
        assert option(argv, f"-force_key_frames:v:{index}") == (
            "expr:if(lt(n_forced,2),gte(t,n_forced*1),gte(t,(n_forced-1)*2))")
    assert option(argv, "-hls_time") == "1"
    assert option(argv, "-hls_segment_type") == "fmp4"
    assert option(argv, "-hls_playlist_type") == "event"
    assert option(argv, "-hls_flags") == "independent_segments+temp_file"
    assert option(argv, "-var_stream_map") == ("v:0,a:0,name:720p v:1,a:1,name:480p v:2,a:2,name:360p "
                                               "v:3,a:3,name:240p")
    assert option(argv, "-master_pl_name") == "master.m3u8"
    assert option(argv, "-hls_segment_filename") == str(tmp_path / "out" / "%v" / "seg_%05d.m4s")
    graph = option(argv, "-filter_complex")
    assert "fps=fps=30000/1001" in graph and "split=4" in graph and "asplit=4" in graph
    assert graph.count("scale=") == 4
    # Input safety: whitelists come before -i, and the progress goes to stdout.
    before_input = argv[:argv.index("-i")]
    assert option(before_input, "-protocol_whitelist") == "file"
    assert "matroska" in option(before_input, "-format_whitelist")
    assert option(argv, "-progress") == "pipe:1" and "-nostats" in argv and "-nostdin" in argv
    assert argv.count("-i") == 1  # decode once


def test_hls_command_for_a_url_allows_only_web_protocols(tmp_path):
    probe = make_probe(640, 360)
    argv = hls_command("https://s3.example/bucket/key?X-Amz-Signature=1", tmp_path, plan_ladder(probe), probe)
    assert option(argv, "-protocol_whitelist") == "http,https,tcp,tls"


def test_hls_command_without_audio_maps_no_audio(tmp_path):
    probe = make_probe(640, 360, audio=None)
    argv = hls_command("/in.mp4", tmp_path, plan_ladder(probe), probe)
    assert option(argv, "-var_stream_map") == "v:0,name:360p v:1,name:240p"
    assert "asplit" not in option(argv, "-filter_complex") and "-c:a" not in argv


@pytest.mark.parametrize(("fps", "expected"), [
    (30000 / 1001, Fraction(30000, 1001)), (25.0, Fraction(25)), (120.0, Fraction(60)), (None, Fraction(30)),
    (1000.0, Fraction(30)), (23.976, Fraction(24000, 1001))])
def test_output_fps_is_constant_and_at_most_60(fps, expected):
    assert output_fps(make_probe(640, 360, fps=fps)) == expected


def test_browser_playable():
    assert is_browser_playable(make_probe(640, 360))
    assert is_browser_playable(make_probe(640, 360, audio=None), "yuv420p")
    assert not is_browser_playable(make_probe(640, 360), "yuv444p")
    assert not is_browser_playable(make_probe(640, 360), "yuv420p10le")
    assert not is_browser_playable(make_probe(640, 360, codec="hevc"))
    assert not is_browser_playable(make_probe(640, 360, audio="opus"))
    assert not is_browser_playable(make_probe(640, 360, container="matroska,webm"))


@pytest.mark.parametrize(("duration", "interval", "count", "columns", "rows"), [
    (5.0, 1, 5, 5, 1), (150.0, 2, 75, 10, 8), (1000.0, 10, 100, 10, 10), (0.4, 1, 1, 1, 1), (7200, 72, 100, 10, 10)])
def test_storyboard_plan_keeps_at_most_100_tiles(duration, interval, count, columns, rows):
    plan = plan_storyboard(duration, 1280, 720)
    assert (plan.interval, plan.count, plan.columns, plan.rows) == (interval, count, columns, rows)
    assert (plan.tile_width, plan.tile_height) == (160, 90)
    assert plan.count <= plan.columns * plan.rows


def test_storyboard_vtt_cues_cover_the_video_inside_the_sprite():
    plan = plan_storyboard(25.5, 360, 640)
    text = storyboard_vtt(plan)
    assert text.startswith("WEBVTT\n\n")
    cues = [block.splitlines() for block in text.split("\n\n")[1:] if block.strip()]
    assert len(cues) == plan.count == 26
    assert cues[0] == ["00:00:00.000 --> 00:00:01.000", "storyboard.jpg#xywh=0,0,160,284"]
    assert cues[11] == ["00:00:11.000 --> 00:00:12.000", "storyboard.jpg#xywh=160,284,160,284"]
    assert cues[-1][0] == "00:00:25.000 --> 00:00:25.500"
    for _, target in cues:
        x, y, w, h = map(int, target.split("#xywh=")[1].split(","))
        assert x + w <= plan.width and y + h <= plan.height


def test_hls_command_pads_a_short_video_track_and_trims_to_the_duration(tmp_path):
    probe = make_probe(640, 360, duration=12.5)
    argv = hls_command("/in.mp4", tmp_path, plan_ladder(probe), probe, pad_video=True)
    assert "tpad=stop_duration=12.500:stop_mode=clone" in option(argv, "-filter_complex")
    assert option(argv, "-t") == "12.500"
    assert "tpad" not in option(hls_command("/in.mp4", tmp_path, plan_ladder(probe), probe), "-filter_complex")
