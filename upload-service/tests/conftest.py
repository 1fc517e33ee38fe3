"""Upload tests run against both object stores: the local directory and S3 (moto's server over HTTP)."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import imageio_ffmpeg
import pytest
from werkzeug.serving import make_server

from services.bootstrap import bootstrap
from services.ports import JobQueue


class RecordingJobQueue(JobQueue):
    """Test double for the JobQueue port: records what was published (the worker arrives with issue 4)."""

    def __init__(self):
        self.published: list[tuple[str, dict]] = []
        self.broken = False

    def publish(self, body, *, lane="express"):
        if self.broken:
            raise ConnectionError("broker unreachable")
        self.published.append((lane, body))

    def consume(self, handler, stop):
        raise AssertionError("nothing consumes in upload tests")

    def pending(self):
        return len(self.published)


class RecordingEvents:
    def __init__(self, bus):
        self.received: list[tuple[str, dict]] = []
        bus.subscribe(lambda topic, event: self.received.append((topic, event)))

    def of(self, video_id):
        return [(t, e) for t, e in self.received if e["video_id"] == video_id]


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.infra)])
def store_kind(request):
    return request.param


@pytest.fixture
def upload_config(make_config):
    return make_config()


@pytest.fixture
def deps(request, store_kind, upload_config):
    given = {"jobs": RecordingJobQueue()}
    if store_kind == "s3":
        given["objects"] = request.getfixturevalue("s3_store")
    deps = bootstrap(upload_config, **given)
    yield deps
    deps.close()


@pytest.fixture
def events(deps):
    return RecordingEvents(deps.events)


@pytest.fixture
def app(deps):
    from reelhouse_gateway import create_app

    app = create_app(deps=deps)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def editor(api):
    return api.register()["access_token"]


class LiveServer:
    """The app on a real socket (werkzeug, threaded), for clients that need TCP: tuspy, raw sockets."""

    def __init__(self, app):
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.thread.join(5)


@pytest.fixture
def live(app):
    server = LiveServer(app)
    yield server
    server.stop()


def make_clip(path: Path, seconds: float = 2, size: str = "320x240", *, audio: bool = True,
              bitrate: str | None = None) -> Path:
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
               f"testsrc2=size={size}:rate=25"]
    if audio:
        command += ["-f", "lavfi", "-i", "sine=frequency=440"]
    command += ["-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if bitrate:
        # CBR with filler data: the file really has the size the bitrate says (testsrc2 compresses too well).
        command += ["-b:v", bitrate, "-minrate", bitrate, "-maxrate", bitrate, "-bufsize", bitrate,
                    "-x264-params", "nal-hrd=cbr"]
    if audio:
        command += ["-c:a", "aac", "-shortest"]
    subprocess.run([*command, str(path)], check=True, timeout=120)
    return path


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    """Generated once per session: a small clip, a clip over two S3 parts, and files that are not videos."""
    root = tmp_path_factory.mktemp("media")
    small = make_clip(root / "small.mp4")
    big = make_clip(root / "big.mp4", seconds=4, size="640x360", bitrate="32M")
    truncated = root / "truncated.mp4"
    truncated.write_bytes(small.read_bytes()[: small.stat().st_size // 2])
    faststart = root / "faststart.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(small), "-c", "copy",
                    "-movflags", "+faststart", str(faststart)], check=True, timeout=60)
    truncated_faststart = root / "truncated-faststart.mp4"
    truncated_faststart.write_bytes(faststart.read_bytes()[: faststart.stat().st_size // 3])
    text = root / "notes.mp4"
    text.write_text("these are my notes, not a video\n" * 50)
    audio = root / "audio.m4a"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "sine", "-t", "1",
                    str(audio)], check=True, timeout=60)
    assert big.stat().st_size > 12 * 1024 * 1024, "the big clip must span several 5 MiB parts"
    return {"small": small, "big": big, "truncated": truncated, "truncated_faststart": truncated_faststart,
            "text": text, "audio": audio}
