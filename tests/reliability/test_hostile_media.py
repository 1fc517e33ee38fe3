"""A catalogue of hostile media uploaded through the real API (tus) to `reelhouse up`: each video ends `failed`
with a readable error, within a bounded time and memory, its bytes deleted, and nothing outside its input read
(playlists and concat lists point at a loopback listener, a FIFO and local files: nobody connects, nobody opens).

The same playlists are also handed straight to the probe and to the worker's ffmpeg pipeline (past the upload's
sniffing), so the protocol and format whitelists are tested on their own."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import imageio_ffmpeg
import pytest
import requests

from services.media import MediaError, Probe, probe
from services.testing import ReelhouseProcess, make_clip, register_account

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

FAIL_WITHIN = 60  # seconds from the last byte to `failed`, per file
MEMORY_GROWTH_LIMIT_MIB = 300  # the server process tree above its idle size, per file


class Canaries:
    """A loopback listener and a FIFO that hostile files point at; they record whoever reaches them."""

    def __init__(self, tmp: Path):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.fifo = tmp / "canary.ts"  # a segment's extension, so only the whitelists stop ffmpeg
        os.mkfifo(self.fifo)
        self.connections: list = []
        self.fifo_opened = False
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True),
                         threading.Thread(target=self._wait_for_reader, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, address = self.listener.accept()
            except TimeoutError:
                continue
            self.connections.append(address)
            connection.close()

    def _wait_for_reader(self) -> None:
        # Opening a FIFO for writing blocks until someone opens it for reading: any reader but close() is ffmpeg.
        fd = os.open(self.fifo, os.O_WRONLY)
        if not self._stop.is_set():
            self.fifo_opened = True
        os.close(fd)

    def close(self) -> None:
        self._stop.set()
        reader = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)  # releases the blocked writer
        for thread in self._threads:
            thread.join(5)
        os.close(reader)
        self.listener.close()

    def assert_untouched(self) -> None:
        assert not self.connections, f"something connected to the canary listener: {self.connections}"
        assert not self.fifo_opened, "something opened the canary FIFO"


class TreeMemory:
    """Peak resident memory of a process and all its descendants (ffmpeg children included), sampled."""

    def __init__(self, pid: int):
        self.pid, self.peak_kib, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def total_kib(self) -> int:
        total, pending = 0, [str(self.pid)]
        while pending:
            pid = pending.pop()
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pending += (task / "children").read_text().split()
            except (FileNotFoundError, ProcessLookupError):
                continue  # exited between listing and reading
        return total

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, self.total_kib())
            time.sleep(0.02)

    def __enter__(self) -> TreeMemory:
        self.peak_kib = self.total_kib()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def _ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *args], check=True, timeout=120)


def build_catalogue(tmp: Path, canaries: Canaries) -> dict[str, tuple[str, bytes]]:
    """name → (the file name it is uploaded under, its bytes)."""
    clip = make_clip(tmp / "clip.mp4", 2).read_bytes()  # moov at the end, as ffmpeg writes by default
    wav, png, many = tmp / "tone.wav", tmp / "picture.png", tmp / "many.mkv"
    _ffmpeg("-f", "lavfi", "-i", "sine=duration=1", str(wav))
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64", "-frames:v", "1", str(png))
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64:rate=5", "-f", "lavfi", "-i", "sine=sample_rate=8000",
            "-t", "0.4", "-map", "0:v", *["-map", "1:a"] * 300, "-c:v", "libx264", "-preset", "ultrafast",
            "-c:a", "pcm_u8", str(many))
    hostname = "/etc/hostname" if Path("/etc/hostname").exists() else "/etc/passwd"
    segment = "#EXTINF:1.0,\n{}\n"
    return {
        "zero-byte": ("empty.mp4", b""),
        "truncated MP4": ("truncated.mp4", clip[: len(clip) // 2]),
        "WAV named .mp4": ("song.mp4", wav.read_bytes()),
        "PNG named .mkv": ("picture.mkv", png.read_bytes()),
        "16384×16384 MJPEG header": ("huge.mkv", claimed_mjpeg(tmp, 16384)),
        "15360×15360 H.264 SPS": ("huge.mp4", claimed_h264(tmp, 15360)),
        "28 h in 2 KB": ("long.mp4", sparse_video(tmp)),
        "301 streams": ("many.mkv", many.read_bytes()),
        "HLS playlist → loopback": ("list.mp4", (
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n" + segment.format(f"http://127.0.0.1:{canaries.port}/seg.ts")
            + "#EXT-X-ENDLIST\n").encode()),
        "HLS playlist → local files": ("list.m3u8", (
            # the FIFO first: a reader that got as far as any local file would open it (and be caught)
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n" + segment.format(str(canaries.fifo))
            + segment.format(f"file://{hostname}") + segment.format("canary.ts") + "#EXT-X-ENDLIST\n").encode()),
        "concat list → local files": ("list.mkv", (
            f"ffconcat version 1.0\nfile '{canaries.fifo}'\nfile 'canary.ts'\nfile '/etc/passwd'\n"
            f"file 'file:{hostname}'\n"
            f"file 'http://127.0.0.1:{canaries.port}/x.mp4'\n").encode()),
    }


def claimed_mjpeg(tmp: Path, side: int) -> bytes:
    """A Matroska MJPEG clip whose JPEG headers and track header both claim side×side (it holds 256×256)."""
    path = tmp / "mjpeg.mkv"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=256x256:rate=5", "-t", "1", "-c:v", "mjpeg", str(path))
    size = side.to_bytes(2, "big")
    data = path.read_bytes()
    patched = (data.replace(b"\xff\xc0\x00\x11\x08\x01\x00\x01\x00", b"\xff\xc0\x00\x11\x08" + size + size)
               .replace(b"\xb0\x82\x01\x00", b"\xb0\x82" + size).replace(b"\xba\x82\x01\x00", b"\xba\x82" + size))
    assert patched.count(size + size) >= 5 and patched != data, "the MJPEG headers were not where expected"
    return patched


def claimed_h264(tmp: Path, side: int) -> bytes:
    """An MP4 of five 64×64 H.264 frames whose sequence parameter set claims side×side: decoding the first frame
    would allocate the whole picture."""
    raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                          "color=c=blue:size=64x64:rate=5", "-frames:v", "5", "-c:v", "libx264", "-profile:v",
                          "baseline", "-preset", "ultrafast", "-f", "h264", "-"],
                         capture_output=True, check=True, timeout=60).stdout
    start = b"\x00\x00\x00\x01"
    units = [_patch_sps(unit, side // 16) if unit and unit[0] & 0x1F == 7 else unit for unit in raw.split(start)]
    (tmp / "huge.h264").write_bytes(start.join(units))
    _ffmpeg("-f", "h264", "-i", str(tmp / "huge.h264"), "-c", "copy", str(tmp / "huge.mp4"))
    return (tmp / "huge.mp4").read_bytes()


def sparse_video(tmp: Path) -> bytes:
    """Three frames 50,000 s apart: a complete, consistent file that lasts 27.8 hours in 1.5 KB."""
    path = tmp / "sparse.mp4"
    _ffmpeg("-f", "lavfi", "-i", "color=c=red:size=64x64:rate=1", "-frames:v", "3", "-vf", "setpts=PTS*50000",
            "-c:v", "libx264", "-preset", "ultrafast", "-fps_mode", "passthrough", "-video_track_timescale", "1",
            str(path))
    return path.read_bytes()


class _BitReader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | ((self.data[self.pos // 8] >> (7 - self.pos % 8)) & 1)
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
        return (1 << zeros) - 1 + self.u(zeros)


class _BitWriter:
    def __init__(self):
        self.bits: list[int] = []

    def u(self, n: int, value: int) -> None:
        self.bits += [(value >> (n - 1 - i)) & 1 for i in range(n)]

    def ue(self, value: int) -> None:
        value += 1
        self.u(value.bit_length() - 1, 0)
        self.u(value.bit_length(), value)

    def data(self) -> bytes:
        bits = self.bits + [0] * (-len(self.bits) % 8)
        return bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8))


def _patch_sps(unit: bytes, macroblocks: int) -> bytes:
    """A baseline-profile SPS NAL unit with its picture size set to `macroblocks`² and no cropping."""
    reader, writer = _BitReader(unit[1:].replace(b"\x00\x00\x03", b"\x00\x00")), _BitWriter()
    for _ in range(3):
        writer.u(8, reader.u(8))  # profile, constraint flags, level
    writer.ue(reader.ue())  # seq_parameter_set_id
    writer.ue(reader.ue())  # log2_max_frame_num_minus4
    poc_type = reader.ue()
    writer.ue(poc_type)
    assert poc_type in (0, 2), poc_type
    if poc_type == 0:
        writer.ue(reader.ue())
    writer.ue(reader.ue())  # max_num_ref_frames
    writer.u(1, reader.u(1))  # gaps_in_frame_num_allowed
    reader.ue(), reader.ue()
    writer.ue(macroblocks - 1), writer.ue(macroblocks - 1)
    frame_mbs_only = reader.u(1)
    writer.u(1, frame_mbs_only)
    if not frame_mbs_only:
        writer.u(1, reader.u(1))
    writer.u(1, reader.u(1))  # direct_8x8_inference
    if reader.u(1):
        for _ in range(4):
            reader.ue()
    writer.u(1, 0)  # frame_cropping_flag
    while reader.pos < len(reader.data) * 8:
        writer.u(1, reader.u(1))  # VUI and the trailing bits, verbatim
    escaped, zeros = bytearray(), 0
    for byte in writer.data():
        if zeros >= 2 and byte <= 3:
            escaped.append(3)
            zeros = 0
        escaped.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return unit[:1] + bytes(escaped)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile-media")
    canaries = Canaries(tmp)
    server = None
    try:
        catalogue = build_catalogue(tmp, canaries)
        server = ReelhouseProcess(tmp / "data")
        yield {"server": server, "account": register_account(server.url), "canaries": canaries,
               "catalogue": catalogue, "data": tmp / "data"}
    finally:
        if server is not None:
            server.stop()
        canaries.close()


def upload(url: str, token: str, filename: str, data: bytes) -> tuple[str, float]:
    """Creates the upload with its file name, sends every byte; the video id and when the last byte was sent."""
    auth = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
    metadata = ",".join(f"{key} {base64.b64encode(value.encode()).decode()}"
                        for key, value in (("filename", filename), ("title", filename)))
    created = requests.post(url + "/api/uploads", timeout=120, headers={
        **auth, "Upload-Length": str(len(data)), "Upload-Metadata": metadata})
    assert created.status_code == 201, created.text
    sent = time.monotonic()
    if data:
        response = requests.patch(url + created.headers["Location"], data=data, timeout=120, headers={
            **auth, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
        assert response.status_code in (204, 503), response.text  # 503: completion retried by the sweeper
    return created.headers["Location"].rsplit("/", 1)[1], sent


def wait_settled(url: str, token: str, video_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        video = requests.get(f"{url}/api/videos/{video_id}", timeout=30,
                             headers={"Authorization": f"Bearer {token}"}).json()
        if video["status"] in ("failed", "ready"):
            return video
        time.sleep(0.2)
    raise AssertionError(f"{video_id} did not settle within {timeout} s")


def test_hostile_media_fails_with_a_clear_error_in_bounded_time_and_memory(setup):
    server, token = setup["server"], setup["account"]["token"]
    memory = TreeMemory(server.proc.pid)
    idle_kib = memory.total_kib()
    results = {}
    for name, (filename, data) in setup["catalogue"].items():
        with TreeMemory(server.proc.pid) as sampled:
            video_id, sent = upload(server.url, token, filename, data)
            video = wait_settled(server.url, token, video_id, FAIL_WITHIN)
            elapsed = time.monotonic() - sent
        results[name] = (video["status"], video.get("error"), elapsed, (sampled.peak_kib - idle_kib) / 1024)
        print(f"{name:28s} {len(data):>9} B  {video['status']:6s} {elapsed:5.2f} s  "
              f"+{results[name][3]:6.1f} MiB  {video.get('error')}")
        assert video["status"] == "failed", (name, video)
        error = video.get("error") or ""
        assert 10 < len(error) < 300 and "Traceback" not in error and "/" not in error.replace("/s", ""), (name, error)
        assert elapsed < FAIL_WITHIN, (name, elapsed)
        assert results[name][3] < MEMORY_GROWTH_LIMIT_MIB, (name, results[name])
        leftovers = list((setup["data"] / "objects" / "tenants").rglob(f"*{video_id}*/*"))
        assert not leftovers, (name, leftovers)  # its bytes were deleted
    setup["canaries"].assert_untouched()
    assert requests.get(server.url + "/healthz", timeout=10).status_code == 200


PLAYLISTS = ("HLS playlist → loopback", "HLS playlist → local files", "concat list → local files")


@pytest.mark.parametrize("name", PLAYLISTS)
def test_playlists_past_the_sniffer_still_read_nothing(setup, name, tmp_path):
    """The probe and the worker's ffmpeg, given a playlist directly (as if it had passed the upload's sniffing):
    their protocol and format whitelists refuse it without reading anything it names."""
    from services.adapters.local_objects import LocalObjectStore
    from transcode_worker.media.pipeline import transcode

    source = tmp_path / setup["catalogue"][name][0]
    source.write_bytes(setup["catalogue"][name][1])
    (tmp_path / "canary.ts").symlink_to(setup["canaries"].fifo)  # what relative names in the list resolve to
    with pytest.raises(MediaError):
        probe(source, timeout=10)
    claimed = Probe(container="hls", duration=3.0, width=320, height=180, video_codec="h264", audio_codec=None,
                    fps=25.0, bit_rate=None)
    started = time.monotonic()
    with pytest.raises(Exception) as raised:  # noqa: PT011 - MediaError or TranscodeError: either way it stops
        transcode(LocalObjectStore(tmp_path / "objects"), str(source), claimed, "t", "v", work_dir=tmp_path / "w")
    assert time.monotonic() - started < 60
    assert "Traceback" not in str(raised.value)
    setup["canaries"].assert_untouched()
    assert not list((tmp_path / "objects").rglob("*.m4s"))
