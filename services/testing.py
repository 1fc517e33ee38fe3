"""Test support shared by every service's tests (fixtures live in the root conftest.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

STRONG_PASSWORD = "correct horse battery"  # noqa: S105 - test fixture


def soak(fast, full):
    """`full` under `make soak` (REELHOUSE_SOAK=1), `fast` otherwise: the size of a reliability scenario."""
    return full if os.environ.get("REELHOUSE_SOAK") == "1" else fast


def require_infra(what: str) -> None:
    """Skip when a real component is missing, except in CI (REELHOUSE_REQUIRE_INFRA=1), where it fails."""
    message = f"{what} is not available"
    if os.environ.get("REELHOUSE_REQUIRE_INFRA") == "1":
        pytest.fail(message + " and REELHOUSE_REQUIRE_INFRA=1")
    pytest.skip(message)


def rss_kib(pid: int) -> int:
    """Resident memory of a gunicorn master's worker (its only child), else of the process `pid` itself."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    target = children[0] if children else str(pid)
    for line in Path(f"/proc/{target}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {target}")


class ReelhouseProcess:
    """`reelhouse up` in a subprocess on a free port with its own data directory (stopped with SIGTERM)."""

    def __init__(self, data_dir: Path, **env):
        import requests

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"reelhouse-{self.port}.log"
        environment = {**os.environ, "REELHOUSE_DATA_DIR": str(data_dir), "REELHOUSE_PORT": str(self.port), **env}
        # A session of its own: a crash can be simulated (and a hung stop cleaned up) for the whole process group.
        self.proc = subprocess.Popen([sys.executable, "-m", "reelhouse_gateway", "up"], env=environment,
                                     stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"reelhouse up exited early:\n{self.log.read_text()}")
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:  # not up yet, or too busy to answer within the timeout
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"reelhouse up did not answer within 60 s:\n{self.log.read_text()}")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; if it does not end in time, SIGKILL its whole group, reap it, and raise."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the process and its gunicorn workers (and their ffmpeg), as a crash of the machine would."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)


@contextmanager
def gunicorn_app(source: str, env: dict | None = None, threads: int = 4):
    """A WSGI module's `source` (defining `app`) served by a real `gunicorn -k gthread -w 1`; yields its port."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "gunicorn_test_app.py").write_text(source)
        port = free_port()
        root = Path(__file__).resolve().parents[1]
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-k", "gthread", "--threads", str(threads), "-w", "1",
             "-b", f"127.0.0.1:{port}", "--pythonpath", f"{tmp},{root}", "--no-control-socket",
             "gunicorn_test_app:app"],
            env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("gunicorn did not start") from None
                    time.sleep(0.1)
            yield port
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoS3Server:
    """moto's S3-compatible server in a subprocess on a loopback port, spoken to with boto3 like MinIO.

    `stop()` ends the process (`hard=True`: SIGKILL, as a crash would) and `start()` brings it back on the same
    port, so tests can cut the store off mid-operation. moto keeps everything in memory: a restarted server is
    empty (no buckets, no objects, no multipart uploads), unlike MinIO. It enforces S3's 5 MiB minimum part size
    (S3_UPLOAD_PART_MIN_SIZE is pinned to 5 MiB here whatever the environment says).
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", startup_timeout: float = 30.0):
        self.host = host
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.log_path = Path(tempfile.gettempdir()) / f"reelhouse-moto-{os.getpid()}-{self.port}.log"

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint_url + "/moto-api/", timeout=1) as response:  # noqa: S310
                return response.status < 500
        except urllib.error.HTTPError as error:
            return error.code < 500
        except OSError:
            return False

    def start_or_require(self) -> MotoS3Server:
        """start(), or fail/skip per REELHOUSE_REQUIRE_INFRA when the server cannot run here."""
        try:
            return self.start()
        except (OSError, RuntimeError) as error:
            self.close()
            require_infra(f"the moto S3 server ({error})")
            raise

    def start(self) -> MotoS3Server:
        if self.running:
            return self
        env = dict(os.environ, S3_UPLOAD_PART_MIN_SIZE=str(5 * 1024 * 1024), PYTHONUNBUFFERED="1")
        deadline = time.monotonic() + self.startup_timeout
        while True:  # a port just given up may take a moment to be free again
            with self.log_path.open("wb") as log:
                self.process = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT, env=env)
            while self.process.poll() is None and time.monotonic() < deadline:
                if self._answers():
                    return self
                time.sleep(0.05)
            if self.process.poll() is None:  # still not answering at the deadline
                self.stop(hard=True)
                raise RuntimeError(f"moto S3 server did not answer on {self.endpoint_url}: {self._log_tail()}")
            tail = self._log_tail()
            if "address already in use" not in tail.lower() or time.monotonic() >= deadline:
                raise RuntimeError(f"moto S3 server exited with {self.process.returncode}: {tail}")
            time.sleep(0.2)

    def stop(self, hard: bool = False) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        if hard:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> MotoS3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class Api:
    """A thin helper over a Flask test client for registering tenants and calling with tokens."""

    def __init__(self, client):
        self.client = client

    def register(self, tenant_name="Acme", email="admin@acme.test", password=STRONG_PASSWORD, **extra):
        response = self.client.post("/api/auth/register", json={
            "tenant_name": tenant_name, "email": email, "password": password, **extra})
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def login(self, email, password=STRONG_PASSWORD, **extra):
        return self.client.post("/api/auth/login", json={"email": email, "password": password, **extra})

    def call(self, method, path, token=None, **kwargs):
        headers = dict(kwargs.pop("headers", None) or {})  # never the caller's dict: it may be shared
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def add_user(self, admin_token, email, role, password=STRONG_PASSWORD):
        response = self.call("POST", "/api/auth/users", admin_token,
                             json={"email": email, "password": password, "role": role})
        assert response.status_code == 201, response.get_json()
        user = response.get_json()
        tokens = self.login(email, password).get_json()
        return user, tokens["access_token"]


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The contract's error shape with the expected status (and code); a Flask test or a requests response."""
    if not hasattr(response, "get_json"):
        response = HttpResponse(response)
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:500])
    body = response.get_json()
    assert set(body) >= {"error"} and isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    assert "Traceback" not in response.get_data(as_text=True)
    return body["error"]


class HttpResponse:
    """A requests response with the Flask test response methods the helpers use."""

    def __init__(self, response):
        self.raw = response
        self.status_code = response.status_code
        self.headers = response.headers
        self.data = response.content

    def get_json(self):
        return self.raw.json()

    def get_data(self, as_text: bool = False):
        return self.raw.text if as_text else self.raw.content


class HttpClient:
    """Enough of Flask's test client over real HTTP that `Api` works against a running server."""

    def __init__(self, base_url: str, timeout: float = 30):
        import requests

        self.base_url, self.timeout, self.session = base_url.rstrip("/"), timeout, requests.Session()

    def open(self, path, method="GET", headers=None, json=None, data=None, content_type=None, **_):
        headers = dict(headers or {})
        if content_type:
            headers["Content-Type"] = content_type
        response = self.session.request(method, self.base_url + path, headers=headers, json=json, data=data,
                                        timeout=self.timeout)
        return HttpResponse(response)

    def get(self, path, **kwargs):
        return self.open(path, "GET", **kwargs)

    def post(self, path, **kwargs):
        return self.open(path, "POST", **kwargs)


# --- end-to-end helpers: a running deployment driven over HTTP and Socket.IO like a user would ---------------

CONTRACT_EVENTS = ("video.status", "video.progress", "video.playable", "video.rendition_ready", "video.ready",
                   "video.failed", "video.deleted")


def make_clip(path: Path, seconds: float, size: str = "320x180", preset: str = "ultrafast") -> Path:
    """An H.264/AAC MP4 generated with ffmpeg's test sources."""
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size={size}:rate=25", "-f", "lavfi", "-i", "sine", "-t", str(seconds),
                    "-c:v", "libx264", "-preset", preset, "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
                    str(path)], check=True, timeout=300)
    return path


def register_account(url: str) -> dict:
    """A new organisation and its admin: {"token", "user", "tenant"}."""
    import uuid

    import requests

    response = requests.post(url + "/api/auth/register", timeout=30, json={
        "tenant_name": f"Org {uuid.uuid4().hex[:8]}", "email": f"{uuid.uuid4().hex[:8]}@org.test",
        "password": STRONG_PASSWORD})
    assert response.status_code == 201, response.text
    body = response.json()
    return {"token": body["access_token"], "user": body["user"], "tenant": body["tenant"]}


def tus_upload(url: str, token: str, clip: Path, title: str = "Clip", patch_bytes: int = 4 * 1024 * 1024) -> str:
    """Uploads a file over tus in PATCHes of `patch_bytes`; returns the video id."""
    import base64

    import requests

    data = clip.read_bytes()
    auth = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
    created = requests.post(url + "/api/uploads", timeout=30, headers={
        **auth, "Upload-Length": str(len(data)),
        "Upload-Metadata": f"title {base64.b64encode(title.encode()).decode()}"})
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    for offset in range(0, len(data), patch_bytes):
        response = requests.patch(url + location, data=data[offset:offset + patch_bytes], timeout=120, headers={
            **auth, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
        assert response.status_code == 204, response.text
    return location.rsplit("/", 1)[1]


class EventListener:
    """A python-socketio client recording every contract event it receives."""

    def __init__(self, url: str, token: str | None, transports: tuple[str, ...] | list[str] | None = ("websocket",)):
        """`transports=None`: the client's default, long-polling first and then the upgrade to websocket."""
        import threading

        import socketio

        self.client = socketio.Client(reconnection=False)
        self.events: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        for name in CONTRACT_EVENTS:
            self.client.on(name, self._recorder(name))
        self.client.connect(url, auth={"token": token} if token else None,
                            transports=list(transports) if transports else None, wait_timeout=15)

    def _recorder(self, name):
        def record(data):
            with self.lock:
                self.events.append((name, data))
        return record

    def of(self, video_id: str) -> list[tuple[str, dict]]:
        with self.lock:
            return [(name, data) for name, data in self.events if data.get("video_id") == video_id]

    def wait_for(self, video_id: str, name: str, timeout: float = 120) -> list[tuple[str, dict]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(n == name for n, _ in self.of(video_id)):
                return self.of(video_id)
            time.sleep(0.1)
        raise AssertionError(f"no {name} for {video_id} within {timeout} s; got {self.of(video_id)}")

    def close(self):
        self.client.disconnect()


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Wait until `url`/readyz answers 200, failing with the log's tail if the process exits or time runs out."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-4000:]
        try:
            if requests.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:  # not up yet, or too busy to answer within the timeout
            pass
        time.sleep(0.2)
    raise AssertionError(log.read_text()[-4000:])


def cluster_prerequisites() -> None:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        require_infra("RabbitMQ on 127.0.0.1:5672")
    if not Path("/usr/sbin/nginx").exists():
        require_infra("nginx (Debian package nginx-light), the cluster's ingress")


class EmbeddedDeployment:
    """`reelhouse up` in its own session (process group) on a free port."""

    def __init__(self, tmp: Path):
        port = free_port()
        self.url, self.log = f"http://127.0.0.1:{port}", tmp / "up.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "reelhouse_gateway", "up"], env={
            **os.environ, "REELHOUSE_DATA_DIR": str(tmp / "data"), "REELHOUSE_PORT": str(port)},
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        wait_ready(self.url, self.proc, self.log)
        self.socket_urls = [self.url]

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(60)


class ClusterDeployment:
    """`make cluster` (reelhouse cluster up --detach) in a temporary directory; s3 store unless told."""

    def __init__(self, tmp: Path, store: str = "s3"):
        from reelhouse_gateway import cluster

        cluster_prerequisites()
        self.dir = tmp / "cluster"
        self.state = cluster.start_detached(self.dir, free_port(), store=store)
        self.url = self.state["url"]
        gateway = self.state["services"]["gateway"]["port"]
        notify_2 = self.state["services"]["notify-2"]["port"]
        # through nginx to a notify replica (ip_hash picks one for 127.0.0.1), through the gateway's own websocket
        # tunnel (to notify-1), and straight to the second replica: every replica delivers every event
        self.socket_urls = [self.url, f"http://127.0.0.1:{gateway}", f"http://127.0.0.1:{notify_2}"]

    def service(self, name: str) -> dict:
        from reelhouse_gateway import cluster

        return cluster.state(self.dir)["services"][name]

    def stop(self) -> None:
        from reelhouse_gateway import cluster

        assert cluster.stop_detached(self.dir)


# --- reliability helpers: tus by hand, so tests can cut a request anywhere ----------------------------------

TUS_HEADERS = {"Tus-Resumable": "1.0.0"}
OCTET_STREAM = "application/offset+octet-stream"


def padded_clip(path: Path, size: int, seed: int = 0) -> Path:
    """A real (2 s) H.264/AAC MP4 grown to exactly `size` bytes by a trailing `free` box of seeded random bytes:
    it passes the upload's probe, and its bytes are incompressible and position-dependent (a lost or repeated
    byte anywhere changes the sha256)."""
    import random
    import struct

    clip = make_clip(path.with_suffix(".clip.mp4"), 2)
    head = clip.read_bytes()
    clip.unlink()
    pad = size - len(head)
    assert pad >= 8, f"{size} bytes cannot hold the clip ({len(head)} bytes)"
    path.write_bytes(head + struct.pack(">I", pad) + b"free" + random.Random(seed).randbytes(pad - 8))
    return path


def tus_create(url: str, token: str, length: int, title: str = "Clip", timeout: float = 30):
    """POST /api/uploads; the response (Location on 201)."""
    import base64

    import requests

    return requests.post(url + "/api/uploads", timeout=timeout, headers={
        **TUS_HEADERS, "Authorization": f"Bearer {token}", "Upload-Length": str(length),
        "Upload-Metadata": f"title {base64.b64encode(title.encode()).decode()}"})


def tus_patch(url: str, token: str, location: str, offset: int, body: bytes, timeout: float = 60):
    import requests

    return requests.patch(url + location, data=body, timeout=timeout, headers={
        **TUS_HEADERS, "Authorization": f"Bearer {token}", "Upload-Offset": str(offset),
        "Content-Type": OCTET_STREAM})


def tus_settled_offset(url: str, token: str, location: str, timeout: float = 30) -> int:
    """The upload's offset once no request holds it any more (an interrupted PATCH commits what arrived and
    lets go; a crashed server's lease runs out): an empty PATCH at the HEAD offset answers 204 only then."""
    import requests

    deadline = time.monotonic() + timeout
    while True:
        head = requests.head(url + location, timeout=10, headers={**TUS_HEADERS, "Authorization": f"Bearer {token}"})
        assert head.status_code == 200, (head.status_code, head.headers)
        offset = int(head.headers["Upload-Offset"])
        probe = tus_patch(url, token, location, offset, b"", timeout=10)
        if probe.status_code == 204:
            return int(probe.headers["Upload-Offset"])
        assert probe.status_code == 409, (probe.status_code, probe.text)  # busy, or moved on meanwhile
        assert time.monotonic() < deadline, f"upload still busy after {timeout} s: {probe.text}"
        time.sleep(0.2)


def open_partial_patch(url: str, token: str, location: str, offset: int, length: int) -> socket.socket:
    """A raw PATCH announcing `length` body bytes with only its headers sent: the caller sends some of the body,
    then closes the socket (a dropped connection) or reads the answer."""
    host, port = url.split("://", 1)[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall((f"PATCH {location} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                  f"Tus-Resumable: 1.0.0\r\nUpload-Offset: {offset}\r\nContent-Type: {OCTET_STREAM}\r\n"
                  f"Content-Length: {length}\r\n\r\n").encode())
    return sock


def sha256_of(stream) -> str:
    import hashlib

    digest = hashlib.sha256()
    while chunk := stream.read(1024 * 1024):
        digest.update(chunk)
    return digest.hexdigest()


# --- reliability helpers: a cluster's videos, and whether their HLS is whole ---------------------------------

def wait_videos(url: str, token: str, video_ids, timeout: float, until=("ready", "failed")) -> dict[str, dict]:
    """Poll GET /api/videos/<id> until every video's status is in `until`; the last record of each."""
    import requests

    auth, records = {"Authorization": f"Bearer {token}"}, {}
    deadline = time.monotonic() + timeout
    pending = list(video_ids)
    while pending:
        for video_id in list(pending):
            response = requests.get(f"{url}/api/videos/{video_id}", headers=auth, timeout=30)
            if response.status_code == 200:
                records[video_id] = response.json()
                if records[video_id]["status"] in until:
                    pending.remove(video_id)
        if pending and time.monotonic() > deadline:
            raise AssertionError(f"not {until} within {timeout} s: "
                                 f"{ {v: records.get(v, {}).get('status') for v in pending} }")
        if pending:
            time.sleep(0.5)
    return records


def _media_playlists(master_url: str, master: str) -> list[str]:
    import re
    from urllib.parse import urljoin

    uris = [line for line in master.splitlines() if line and not line.startswith("#")]
    uris += re.findall(r'#EXT-X-MEDIA:.*URI="([^"]+)"', master)
    return [urljoin(master_url, uri) for uri in uris]


def check_vod(url: str, video: dict) -> dict[str, dict]:
    """A `ready` video's HLS is whole: each media playlist is VOD (#EXT-X-ENDLIST), names every segment once, every
    segment (and the init segment) answers 200 with bytes, the #EXTINF durations add up to the source's duration,
    and init + segments decode (PyAV) to as many seconds. Returns {playlist path: {segments, extinf, decoded}}."""
    import io
    import re
    from urllib.parse import urljoin, urlsplit

    import av
    import requests

    master_url = url + video["playback"]["hls_url"]
    master = requests.get(master_url, timeout=30)
    assert master.status_code == 200 and master.text.startswith("#EXTM3U"), (master.status_code, master.text[:300])
    source, found = float(video["duration"]), {}
    for playlist_url in _media_playlists(master_url, master.text):
        text = requests.get(playlist_url, timeout=30).text
        name = urlsplit(playlist_url).path.rsplit("/", 2)[-2]
        assert text.rstrip().endswith("#EXT-X-ENDLIST"), (name, text[-300:])
        segments = [line for line in text.splitlines() if line and not line.startswith("#")]
        paths = [uri.split("?")[0] for uri in segments]
        assert segments and len(set(paths)) == len(paths), (name, paths)  # none listed twice
        extinf = sum(float(value) for value in re.findall(r"#EXTINF:([\d.]+)", text))
        assert abs(extinf - source) <= 0.5, (name, extinf, source)
        init = re.search(r'#EXT-X-MAP:URI="([^"]+)"', text)
        whole = io.BytesIO()
        for uri in ([init.group(1)] if init else []) + segments:
            response = requests.get(urljoin(playlist_url, uri), timeout=30)
            assert response.status_code == 200 and response.content, (name, uri, response.status_code)
            whole.write(response.content)
        whole.seek(0)
        decoded = _decoded_seconds(av, whole)
        assert abs(decoded - source) <= 0.5, (name, decoded, source)
        found[name] = {"segments": len(segments), "extinf": round(extinf, 3), "decoded": round(decoded, 3)}
    assert found, master.text
    return found


def _decoded_seconds(av, data) -> float:
    """Seconds of media that decode from `data`: the end of the last frame of its first stream."""
    with av.open(data) as container:
        stream = container.streams[0]
        end = 0.0
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            length = (frame.samples / frame.sample_rate) if stream.type == "audio" else float(
                1 / (stream.average_rate or 25))
            end = max(end, frame.time + length)
    return end
