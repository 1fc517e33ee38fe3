"""The pipeline on generated clips: the ladder PyAV reads back from the store, aligned keyframes, images,
storyboard, the faststart original, callbacks and idempotent reruns."""

from __future__ import annotations

import math
import re

import av
import pytest

from services import keys
from services.media import probe
from transcode_worker.media.ladder import display_size, plan_ladder

LADDER_CLIPS = ["landscape", "portrait", "no_audio", "odd", "vp9"]
EXPECTED_RUNGS = {
    "landscape": [("360p", 640, 360), ("240p", 426, 240)],
    "portrait": [("360p", 360, 640), ("240p", 240, 426)],
    "no_audio": [("240p", 320, 240)],
    "odd": [("360p", 638, 360), ("240p", 426, 240)],
    "vp9": [("240p", 426, 240)],
}


def master_variants(text: str) -> list[tuple[str, int, int, int]]:
    """(uri, width, height, bandwidth) per #EXT-X-STREAM-INF of a master playlist."""
    lines = text.splitlines()
    variants = []
    for index, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            width, height = map(int, re.search(r"RESOLUTION=(\d+)x(\d+)", line).groups())
            bandwidth = int(re.search(r"BANDWIDTH=(\d+)", line).group(1))
            variants.append((lines[index + 1].strip(), width, height, bandwidth))
    return variants


@pytest.mark.parametrize("clip", LADDER_CLIPS)
def test_ladder_read_back_with_pyav_from_the_master_playlist(clip, pipeline_runs, media):
    run = pipeline_runs(clip)
    source = probe(run.source)
    master = run.hls("master.m3u8")
    variants = master_variants(master.read_text())
    assert [(uri.split("/")[0], w, h) for uri, w, h, _ in variants] == EXPECTED_RUNGS[clip]
    assert [(r["name"], r["width"], r["height"]) for r in run.result.renditions] == EXPECTED_RUNGS[clip]
    assert run.result.duration == source.duration
    assert (run.result.width, run.result.height) == display_size(source)

    # PyAV opens the master from the store and finds every rung's video (and audio when the source has some).
    with av.open(str(master)) as container:
        video = sorted((s.codec_context.width, s.codec_context.height) for s in container.streams.video)
        assert video == sorted((w, h) for _, w, h in EXPECTED_RUNGS[clip])
        assert len(container.streams.audio) == (len(variants) if source.audio_codec else 0)

    for uri, width, height, _ in variants:
        with av.open(str(run.hls(uri))) as rendition:
            stream = rendition.streams.video[0]
            assert stream.codec_context.name == "h264"
            frame = next(rendition.decode(stream))
            assert (frame.width, frame.height) == (width, height)
            assert frame.format.name == "yuv420p"
            duration = rendition.duration / 1_000_000
            assert abs(duration - source.duration) < 0.25, (uri, duration, source.duration)
            assert bool(rendition.streams.audio) == bool(source.audio_codec)
            if source.audio_codec:
                assert rendition.streams.audio[0].codec_context.name == "aac"
    assert not run.store.violations


def keyframe_times(path) -> list[float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [round(float(packet.pts * stream.time_base), 3) for packet in container.demux(stream)
                if packet.pts is not None and packet.is_keyframe]


@pytest.mark.parametrize("clip", LADDER_CLIPS)
def test_keyframes_aligned_across_rungs_on_the_segment_grid(clip, pipeline_runs):
    run = pipeline_runs(clip)
    per_rung = {name: keyframe_times(run.hls(name, "index.m3u8")) for name, _, _ in EXPECTED_RUNGS[clip]}
    first = next(iter(per_rung.values()))
    assert all(times == first for times in per_rung.values()), per_rung
    # One keyframe per segment, each segment starting on one (independent segments).
    first_rung = EXPECTED_RUNGS[clip][0][0]
    segments = re.findall(r"^seg_\d{5}\.m4s$", run.hls(first_rung, "index.m3u8").read_text(), re.MULTILINE)
    assert len(first) == len(segments) >= math.floor(run.result.duration / 2)
    gaps = [b - a for a, b in zip(first, first[1:], strict=False)]
    # the first 2 s come as two 1 s segments (a new video plays sooner), then the 2 s grid
    assert gaps[:2] == pytest.approx([1, 1], abs=0.05), first
    assert all(abs(gap - 2) < 0.05 for gap in gaps[2:]), gaps


@pytest.mark.parametrize("clip", LADDER_CLIPS)
def test_published_playlists_are_vod_and_complete(clip, pipeline_runs, media):
    run = pipeline_runs(clip)
    prefix = keys.hls_prefix(media.TENANT, run.video_id)
    for name, _, _ in EXPECTED_RUNGS[clip]:
        text = run.hls(name, "index.m3u8").read_text()
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and "EVENT" not in text
        assert text.rstrip().endswith("#EXT-X-ENDLIST")
        assert '#EXT-X-MAP:URI="init.mp4"' in text
        segments = re.findall(r"^seg_\d{5}\.m4s$", text, re.MULTILINE)
        stored = {k.rsplit("/", 1)[1] for k in run.store.keys(f"{prefix}{name}/")}
        assert stored == {"index.m3u8", "init.mp4", *segments}  # nothing more, nothing less
    assert sorted(run.renditions_ready) == sorted(n for n, _, _ in EXPECTED_RUNGS[clip])
    assert not run.store.violations
    # on_hls_ready came once the master was stored (and so every rung had a segment).
    master_put = min(t for t, k in run.store.puts if k.endswith("master.m3u8"))
    assert run.hls_ready_at is not None and run.hls_ready_at >= master_put


@pytest.mark.parametrize("clip", ["landscape", "portrait"])
def test_storyboard_cues_lie_inside_the_sprite(clip, pipeline_runs, media):
    run = pipeline_runs(clip)
    sprite = run.path(run.result.storyboard_image_key).read_bytes()
    width, height = media.jpeg_size(sprite)
    text = run.path(run.result.storyboard_index_key).read_text()
    assert text.startswith("WEBVTT")
    cues = re.findall(r"(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})\n(\S+)#xywh=(\d+),(\d+),(\d+),(\d+)", text)
    assert len(cues) == math.ceil(run.result.duration)  # one tile a second for clips this short
    previous_end = "00:00:00.000"
    for start, end, image, x, y, w, h in cues:
        assert image == "storyboard.jpg"
        assert start == previous_end  # contiguous cues
        previous_end = end
        x, y, w, h = map(int, (x, y, w, h))
        assert w == 160 and 0 <= x and x + w <= width and 0 <= y and y + h <= height
    # Tile aspect follows the picture: portrait tiles are tall.
    assert (h > w) == (clip == "portrait")


def test_thumbnail_is_a_representative_frame_not_the_black_opening(pipeline_runs, media, make_clip):
    run = pipeline_runs("landscape")
    # The clip really opens on black...
    assert media.mean_brightness(make_clip("landscape")) < 5
    thumbnail = run.path(run.result.thumbnail_key)
    assert media.jpeg_size(thumbnail.read_bytes()) == (320, 180)
    assert media.mean_brightness(thumbnail) > 40
    poster = run.path(run.result.poster_key)
    assert media.jpeg_size(poster.read_bytes()) == (640, 360)  # source size: under the 1280 cap
    assert media.mean_brightness(poster) > 40


def test_portrait_thumbnail_keeps_its_aspect(pipeline_runs, media):
    run = pipeline_runs("portrait")
    assert media.jpeg_size(run.path(run.result.thumbnail_key).read_bytes()) == (320, 568)


def top_level_boxes(path) -> list[str]:
    boxes = []
    with open(path, "rb") as file:
        while header := file.read(8):
            size, kind = int.from_bytes(header[:4], "big"), header[4:].decode("latin-1")
            if size == 1:
                size = int.from_bytes(file.read(8), "big") - 8
            elif size == 0:
                boxes.append(kind)
                break
            boxes.append(kind)
            file.seek(size - 8, 1)
    return boxes


def packets(path) -> dict[str, tuple[str, int]]:
    with av.open(str(path)) as container:
        counts = {}
        for stream in container.streams:
            counts[stream.type] = (stream.codec_context.name, 0)
        for packet in container.demux():
            if packet.size:
                name, count = counts[packet.stream.type]
                counts[packet.stream.type] = (name, count + 1)
        return counts


def test_h264_aac_source_gets_a_faststart_remux_without_reencoding(pipeline_runs, media):
    run = pipeline_runs("landscape")
    assert run.result.playable_original
    key = keys.playable_original_key(media.TENANT, run.video_id)
    assert run.result.playable_original_key == key
    remuxed = run.path(key)
    assert top_level_boxes(run.source).index("moov") > top_level_boxes(run.source).index("mdat")  # not faststart
    boxes = top_level_boxes(remuxed)
    assert boxes.index("moov") < boxes.index("mdat")
    assert packets(remuxed) == packets(run.source)  # same codecs, same packet counts: copied, not re-encoded
    # The original was announced before any rendition: playable while the ladder was still to come.
    first_hls_put = min(t for t, k in run.store.puts if "/hls/" in k)
    assert run.original_ready_at is not None and run.original_ready_at < first_hls_put


@pytest.mark.parametrize("clip", ["vp9", "odd"])
def test_sources_browsers_cannot_play_get_no_playable_original(clip, pipeline_runs, media):
    run = pipeline_runs(clip)  # VP9/Opus in MKV; H.264 4:4:4 (which browsers refuse) in MP4
    assert not run.result.playable_original and run.original_ready_at is None
    assert not run.store.exists(keys.playable_original_key(media.TENANT, run.video_id))


def test_progress_is_monotonic_rate_limited_and_ends_at_100(pipeline_runs):
    run = pipeline_runs("landscape")
    percents = [percent for _, _, percent in run.progress]
    assert percents == sorted(set(percents)) and percents[0] == 0 and percents[-1] == 100
    times = [t for t, _, _ in run.progress]
    assert all(b - a >= 0.49 for a, b in zip(times, times[1:], strict=False))
    assert run.progress[-1][1] == "finalize"


def test_first_segments_are_stored_before_the_images(pipeline_runs, media):
    """A viewer waits for the first segment; the images only show once the video is ready."""
    run = pipeline_runs("portrait")
    order = [k for _, k in run.store.puts]
    assert order.index(keys.thumbnail_key(media.TENANT, run.video_id)) > min(
        i for i, k in enumerate(order) if k.endswith("master.m3u8"))


def test_rerun_overwrites_the_same_keys(tmp_path, media, make_clip):
    store = media.CheckingStore(tmp_path / "store")
    source = make_clip("no_audio")
    first = media.run_pipeline(store, source, "again", tmp_path / "work")
    keys_after_first = set(store.keys())
    # A leftover of some older attempt under the HLS prefix goes; everything else is overwritten in place.
    stale = keys.hls_rendition_key(media.TENANT, "again", "240p", "seg_00999.m4s")
    store.put(stale, b"old")
    second = media.run_pipeline(store, source, "again", tmp_path / "work")
    assert set(store.keys()) == keys_after_first
    assert second.result.as_dict() == first.result.as_dict()
    assert set(first.result.outputs.values()) <= keys_after_first and first.result.original_playable
    assert not list((tmp_path / "work").iterdir())  # the work directory is cleaned up


def test_rotated_source_is_transcoded_upright(tmp_path, media, make_clip):
    source = tmp_path / "rotated.mp4"
    # A landscape clip tagged "display rotated by 90°", as phones record portrait video.
    media.run_ffmpeg_cli("-display_rotation", "90", "-i", str(make_clip("no_audio")), "-c", "copy", str(source))
    info = probe(source)
    assert (info.width, info.height) == (320, 240) and info.rotation in (90, -90, 270)
    assert [(r.name, r.width, r.height) for r in plan_ladder(info)] == [("240p", 240, 320)]
    run = media.run_pipeline(media.CheckingStore(tmp_path / "store"), source, "rot", tmp_path / "work")
    with av.open(str(run.hls("240p", "index.m3u8"))) as container:
        frame = next(container.decode(video=0))
        assert (frame.width, frame.height) == (240, 320)
    assert media.jpeg_size(run.path(run.result.thumbnail_key).read_bytes()) == (240, 320)
    # The faststart copy keeps the rotation (side data), so browsers show it upright too.
    assert run.result.playable_original
    assert probe(run.path(run.result.playable_original_key)).rotation == info.rotation


def test_short_video_track_over_longer_audio_plays_to_the_end(tmp_path, media):
    # A still picture over a song: one second of video, eight of audio. The thumbnail's seek (20 % in) finds
    # no frame, and HLS would squeeze seven seconds of audio into a "2 s" segment without padding the video.
    source = tmp_path / "song-with-cover.mp4"
    media.run_ffmpeg_cli("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=1",
                         "-f", "lavfi", "-i", "sine=frequency=440:duration=8",
                         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(source))
    run = media.run_pipeline(media.CheckingStore(tmp_path / "store"), source, "song", tmp_path / "work")
    playlist = run.hls("240p", "index.m3u8").read_text()
    assert len(re.findall(r"^seg_\d{5}\.m4s$", playlist, re.MULTILINE)) == 5  # 1 + 1 + 2 + 2 + 2 s
    with av.open(str(run.hls("240p", "index.m3u8"))) as container:
        assert abs(container.duration / 1_000_000 - 8) < 0.25
        times = [frame.time for frame in container.decode(video=0)]
        assert times[-1] > 7.5  # the picture lasts as long as the sound
    assert media.mean_brightness(run.path(run.result.thumbnail_key)) > 40
