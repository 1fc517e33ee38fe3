"""Files that are not usable video fail fast with a message for the user, and leave nothing behind."""

from __future__ import annotations

import time

import pytest

from services.media import MediaError
from transcode_worker.media.pipeline import transcode


@pytest.fixture
def bad_files(tmp_path, make_clip, media):
    files = {}
    files["zero-byte"] = tmp_path / "empty.mp4"
    files["zero-byte"].write_bytes(b"")
    landscape = make_clip("landscape").read_bytes()  # moov at the end, as ffmpeg writes by default
    files["truncated"] = tmp_path / "truncated.mp4"
    files["truncated"].write_bytes(landscape[: len(landscape) // 2])
    files["text"] = tmp_path / "notes.mp4"
    files["text"].write_text("These are my holiday notes, not a video.\n" * 50)
    files["audio-only"] = tmp_path / "song.mp4"
    media.run_ffmpeg_cli("-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "aac",
                         str(files["audio-only"]))
    return files


@pytest.mark.parametrize(("name", "message"), [
    ("zero-byte", "cannot be read as a video"),
    ("truncated", "cannot be read as a video"),
    ("text", "cannot be read as a video"),
    ("audio-only", "has no video stream"),
])
def test_bad_media_fails_quickly_with_a_clear_message(name, message, bad_files, checking_store, tmp_path):
    started = time.monotonic()
    with pytest.raises(MediaError) as raised:
        # No probe given: the pipeline probes, as a worker would on a file it has not seen.
        transcode(checking_store, str(bad_files[name]), None, "t", "bad", work_dir=tmp_path / "work")
    assert message in str(raised.value)
    assert "Traceback" not in str(raised.value) and len(str(raised.value)) < 300
    assert time.monotonic() - started < 5
    assert checking_store.keys() == []


def test_truncated_faststart_mp4_is_refused_and_leaves_nothing(make_clip, checking_store, tmp_path, media):
    # moov first, half the media data missing: headers and first frame are fine, so the probe demuxes the last
    # seconds to notice (the pipeline also checks what ffmpeg decoded, for damage the probe cannot see).
    faststart = tmp_path / "faststart.mp4"
    media.run_ffmpeg_cli("-i", str(make_clip("landscape")), "-c", "copy", "-movflags", "+faststart", str(faststart))
    data = faststart.read_bytes()
    truncated = tmp_path / "truncated-faststart.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="truncated"):
        transcode(checking_store, str(truncated), None, "t", "half", work_dir=tmp_path / "work")
    assert checking_store.keys() == []


def test_huge_frames_are_refused_at_the_probe(tmp_path):
    """A tiny file can claim a frame that takes gigabytes to decode and scale: refused before any work."""
    import subprocess

    import imageio_ffmpeg

    from services.media import probe

    huge = tmp_path / "huge.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    "color=c=black:size=8200x1000:rate=1", "-t", "1", "-c:v", "libx264", "-preset", "ultrafast",
                    str(huge)], check=True, timeout=120)
    with pytest.raises(MediaError, match="largest accepted is 7680×4320"):
        probe(str(huge))
