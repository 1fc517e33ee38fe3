"""Media fixtures: clips generated at test time with the imageio ffmpeg, a store that checks publishing order,
and pipeline runs shared by the tests that inspect their outputs."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import av
import pytest

from services.adapters.local_objects import LocalObjectStore
from services.media import probe
from transcode_worker.media.runner import ffmpeg_binary

TENANT = "tenant-a"

# name -> (ffmpeg arguments producing it, file suffix). Short and small: the suite runs on 2 cores.
CLIPS = {
    # Opens on black for 1.2 s: the thumbnail must not be the first frame.
    "landscape": ([
        "-f", "lavfi", "-i", "color=black:size=640x360:rate=30:duration=1.2",
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=3.8",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=5",
        "-filter_complex", "[0:v][1:v]concat=n=2:v=1:a=0[v]", "-map", "[v]", "-map", "2:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k"], ".mp4"),
    "portrait": ([
        "-f", "lavfi", "-i", "testsrc2=size=360x640:rate=25:duration=4",
        "-f", "lavfi", "-i", "sine=frequency=330:duration=4",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k"], ".mp4"),
    "no_audio": ([
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=24:duration=4",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"], ".mp4"),
    # Odd sizes need a pixel format without chroma subsampling; 4:4:4 H.264 is also not browser-playable.
    "odd": ([
        "-f", "lavfi", "-i", "testsrc2=size=642x362:rate=30:duration=4",
        "-f", "lavfi", "-i", "sine=frequency=550:duration=4",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p", "-c:a", "aac", "-b:a", "64k"], ".mp4"),
    "vp9": ([
        "-f", "lavfi", "-i", "testsrc2=size=480x270:rate=30:duration=4",
        "-f", "lavfi", "-i", "sine=frequency=660:duration=4",
        "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "500k",
        "-c:a", "libopus", "-b:a", "64k"], ".mkv"),
    # What a phone or an editor exports: H.264 High with B-frames, 4:2:0, constant 30 fps, an IDR every second,
    # AAC. Its video may be copied as the top rung (passthrough).
    "camera": ([
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=6",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=6",
        "-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-pix_fmt", "yuv420p",
        "-force_key_frames", "expr:gte(t,n_forced)", "-sc_threshold", "0", "-g", "300",
        "-maxrate", "1M", "-bufsize", "2M", "-c:a", "aac", "-b:a", "64k"], ".mp4"),
    # For early playback and cancel: long enough to watch while ffmpeg is still at work (with a read rate).
    "long": ([
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=20",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=20",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k"], ".mp4"),
}


def run_ffmpeg_cli(*args: str) -> None:
    subprocess.run([ffmpeg_binary(), "-hide_banner", "-nostdin", "-v", "error", "-y", *args], check=True,
                   timeout=120)


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def make_clip(clip_dir):
    """make_clip(name) -> path of the generated clip (made once per session)."""
    lock = threading.Lock()

    def make(name: str) -> Path:
        args, suffix = CLIPS[name]
        path = clip_dir / f"{name}{suffix}"
        with lock:
            if not path.exists():
                run_ffmpeg_cli(*args, str(path))
        return path

    return make


class CheckingStore(LocalObjectStore):
    """A local store that fails any put of a playlist naming an object not yet stored, and logs every put."""

    def __init__(self, root):
        super().__init__(root)
        self.puts: list[tuple[float, str]] = []
        self.violations: list[str] = []
        self._guard = threading.Lock()

    def put(self, key, data, content_type=None):
        if key.endswith(".m3u8"):
            text = data.decode() if isinstance(data, bytes) else data.read().decode()
            base = key.rsplit("/", 1)[0]
            for uri in playlist_uris(text):
                if not self.exists(f"{base}/{uri}"):
                    self.violations.append(f"{key} names {uri} before it is stored")
            data = text.encode()
        info = super().put(key, data, content_type)
        with self._guard:
            self.puts.append((time.monotonic(), key))
        return info

    def exists(self, key: str) -> bool:
        path = self.local_path(key)
        return path is not None and path.is_file()

    def keys(self, prefix: str = "") -> list[str]:
        return [info.key for info in self.list(prefix)]


def playlist_uris(text: str) -> list[str]:
    """Every URI a playlist references: media lines and URI="..." attributes."""
    uris = re.findall(r'URI="([^"]+)"', text)
    uris += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return uris


@dataclass
class Run:
    """One pipeline run and everything its callbacks saw."""

    store: CheckingStore
    source: Path
    video_id: str
    result: object = None
    progress: list[tuple[float, str, int]] = field(default_factory=list)
    renditions_ready: list[str] = field(default_factory=list)
    original_ready_at: float | None = None
    hls_ready_at: float | None = None
    seconds: float = 0.0

    def path(self, key: str) -> Path:
        return self.store.local_path(key)

    def hls(self, *parts: str) -> Path:
        return self.path(f"tenants/{TENANT}/videos/{self.video_id}/hls/" + "/".join(parts))


def run_pipeline(store: CheckingStore, source: Path, video_id: str, work_dir: Path, **options) -> Run:
    from transcode_worker.media.pipeline import transcode

    run = Run(store=store, source=source, video_id=video_id)
    started = time.monotonic()

    def original_ready():
        run.original_ready_at = time.monotonic()

    def hls_ready():
        run.hls_ready_at = time.monotonic()

    run.result = transcode(
        store, str(source), options.pop("probe", None) or probe(source), TENANT, video_id, work_dir=work_dir,
        on_progress=lambda stage, percent: run.progress.append((time.monotonic(), stage, percent)),
        on_rendition_ready=lambda rung: run.renditions_ready.append(rung.name),
        on_original_ready=original_ready, on_hls_ready=hls_ready, **options)
    run.seconds = time.monotonic() - started
    return run


@pytest.fixture(scope="session")
def pipeline_runs(tmp_path_factory, make_clip):
    """run(name) -> Run of the pipeline over clip `name` (each clip transcoded once per session)."""
    runs: dict[str, Run] = {}

    def run(name: str) -> Run:
        if name not in runs:
            root = tmp_path_factory.mktemp(f"run-{name}")
            store = CheckingStore(root / "store")
            runs[name] = run_pipeline(store, make_clip(name), f"video-{name}", root / "work")
        return runs[name]

    return run


@pytest.fixture
def checking_store(tmp_path) -> CheckingStore:
    return CheckingStore(tmp_path / "store")


def processes_mentioning(marker: str) -> list[int]:
    """Pids of live processes whose command line contains `marker` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z" and entry.name != str(os.getpid()):
            found.append(int(entry.name))
    return found


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's SOFn header, without an image library."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    i = 2
    while i < len(data):
        while data[i] == 0xFF and data[i + 1] == 0xFF:
            i += 1  # fill bytes
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[i + 5:i + 7], "big")
            width = int.from_bytes(data[i + 7:i + 9], "big")
            return width, height
        i += 2 + length
    raise AssertionError("no SOF marker")


def mean_brightness(path: Path) -> float:
    """Mean RGB value (0–255) of the first picture in `path`, row by row (lines may carry padding)."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0)).to_rgb()
    plane = frame.planes[0]
    data = bytes(plane)
    row = frame.width * 3
    total = sum(sum(data[y * plane.line_size:y * plane.line_size + row]) for y in range(frame.height))
    return total / (row * frame.height)


@pytest.fixture(scope="session")
def media():
    """Helpers for the test modules (imported in importlib mode, they cannot import one another)."""
    return SimpleNamespace(playlist_uris=playlist_uris, processes_mentioning=processes_mentioning,
                           jpeg_size=jpeg_size, mean_brightness=mean_brightness, run_pipeline=run_pipeline,
                           run_ffmpeg_cli=run_ffmpeg_cli, CheckingStore=CheckingStore, TENANT=TENANT)
