"""SIGTERM on every service of a `make cluster` topology, one at a time, each with work in flight.

SIGTERM goes to the service's main process only, as an orchestrator sends it to a container's PID 1 (the
supervisor is kept from restarting it meanwhile with `<dir>/hold/<name>`). Then:

- stream, gateway: a slow ranged download through the ingress finishes whole (byte count and sha256);
- upload: a tus PATCH whose body is still arriving gets its 204 with the full offset, which the restarted service
  reports too;
- auth: a login whose JSON body is still arriving (sent straight to the service) gets its 200 and tokens;
- notify-1/2: with a Socket.IO client connected, the replica exits; a listener on the ingress gets events after;
- worker-1/2: the worker running a job hands it back after WORKER_GRACE_SECONDS (set to a few seconds here so
  the test does not wait 30 s), without spending an attempt; the other worker (or the restarted one) finishes it.

Each process must exit with status 0 within its grace period: gunicorn's --graceful-timeout (30 s) for the HTTP
services, WORKER_GRACE_SECONDS plus the hand-back for workers. The exit times are printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest
import requests

from services.testing import (
    STRONG_PASSWORD,
    ClusterDeployment,
    EventListener,
    check_vod,
    make_clip,
    open_partial_patch,
    padded_clip,
    register_account,
    soak,
    tus_create,
    tus_upload,
    wait_videos,
)

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

WORKER_GRACE = 3
HTTP_GRACE = 30  # gunicorn --graceful-timeout in the cluster
DOWNLOAD_MIB = soak(24, 128)
ROUNDS = soak(1, 3)  # SIGTERMs per service
EXIT_MARGIN = 5.0  # seconds beyond the grace for the process to be gone


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKER_GRACE_SECONDS", str(WORKER_GRACE))
        running = ClusterDeployment(tmp_path_factory.mktemp("sigterm"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def account(cluster):
    return register_account(cluster.url)


@pytest.fixture(scope="module")
def big_video(cluster, account, tmp_path_factory):
    """A real clip padded to DOWNLOAD_MIB, uploaded; its bytes and its original URL."""
    clip = padded_clip(tmp_path_factory.mktemp("big") / "big.mp4", DOWNLOAD_MIB * 1024 * 1024, seed=7)
    video_id = tus_upload(cluster.url, account["token"], clip, "Big", patch_bytes=16 * 1024 * 1024)
    video = wait_videos(cluster.url, account["token"], [video_id], timeout=180)[video_id]
    assert video["status"] == "ready" and video["playback"]["original_url"], video
    # the upload itself (src=upload), not its faststart remux: the padding makes it DOWNLOAD_MIB long
    return clip.read_bytes(), re.sub(r"src=\w+", "src=upload", video["playback"]["original_url"])


class Stopped:
    """Holds a service down, SIGTERMs its main process, and measures how long it takes to exit."""

    def __init__(self, cluster: ClusterDeployment, name: str):
        self.cluster, self.name = cluster, name
        self.pid = cluster.service(name)["pid"]
        self.hold = cluster.dir / "hold" / name
        self.exits_before = _count_exits(cluster, name)
        self.sent: float | None = None

    def __enter__(self) -> Stopped:
        self.hold.touch()
        return self

    def terminate(self) -> None:
        self.sent = time.monotonic()
        os.kill(self.pid, signal.SIGTERM)

    def wait_exit(self, limit: float) -> float:
        """Seconds from SIGTERM until the process was gone; fails past `limit` (+ a margin)."""
        deadline = self.sent + limit + EXIT_MARGIN
        while _alive(self.pid):
            assert time.monotonic() < deadline, f"{self.name} still running {limit + EXIT_MARGIN} s after SIGTERM"
            time.sleep(0.05)
        self.exited = time.monotonic() - self.sent
        return self.exited

    def exit_status(self, timeout: float = 10) -> int:
        """The status the supervisor logged for this pid's exit."""
        deadline = time.monotonic() + timeout
        pattern = re.compile(rf"^\s*cluster \| {re.escape(self.name)} exited \((-?\d+)\)", re.MULTILINE)
        while time.monotonic() < deadline:
            found = pattern.findall((self.cluster.dir / "logs" / "all.log").read_text())
            if len(found) > self.exits_before:
                return int(found[-1])
            time.sleep(0.2)
        raise AssertionError(f"the supervisor did not log {self.name}'s exit")

    def __exit__(self, *exc) -> None:
        self.hold.unlink(missing_ok=True)
        if self.sent is None:
            return  # failed before the SIGTERM: nothing to wait for
        deadline = time.monotonic() + 90
        while self.cluster.service(self.name)["pid"] == self.pid:  # restarted by the supervisor
            assert time.monotonic() < deadline, f"{self.name} was not started again"
            time.sleep(0.2)
        if exc[0] is None:  # the supervisor reaps (and logs) a held process only once it is released
            assert self.exit_status() == 0, f"{self.name} exited with {self.exit_status()} after SIGTERM"
        _wait_cluster_ready(self.cluster)


def _count_exits(cluster: ClusterDeployment, name: str) -> int:
    pattern = re.compile(rf"^\s*cluster \| {re.escape(name)} exited", re.MULTILINE)
    return len(pattern.findall((cluster.dir / "logs" / "all.log").read_text()))


def _alive(pid: int) -> bool:
    """Running (not a zombie waiting for the supervisor to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_cluster_ready(cluster: ClusterDeployment, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(cluster.url + "/readyz", timeout=10).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise AssertionError("the cluster was not ready again")


# --- HTTP services ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["stream", "gateway"])
def test_a_download_in_flight_finishes_when_its_service_is_stopped(cluster, big_video, name):
    data, original_url = big_video
    start = 1000
    expected = hashlib.sha256(data[start:]).hexdigest()
    for _ in range(ROUNDS):
        with Stopped(cluster, name) as stopped:
            digest, received = hashlib.sha256(), 0
            with requests.get(cluster.url + original_url, headers={"Range": f"bytes={start}-"}, stream=True,
                              timeout=60) as download:
                assert download.status_code == 206, download.text[:300]
                for chunk in download.iter_content(256 * 1024):
                    digest.update(chunk)
                    received += len(chunk)
                    if received >= 1024 * 1024 and stopped.sent is None:
                        stopped.terminate()  # mid-download
                    time.sleep(0.03)  # a slow viewer: the download outlasts the SIGTERM
            assert received == len(data) - start and digest.hexdigest() == expected
            took = stopped.wait_exit(HTTP_GRACE)
            print(f"{name}: download of {received} bytes finished; exited {took:.2f} s after SIGTERM")


def test_a_tus_patch_in_flight_is_committed_when_upload_is_stopped(cluster, account, tmp_path):
    token = account["token"]
    for round_ in range(ROUNDS):
        half = 4 * 1024 * 1024
        data = padded_clip(tmp_path / f"up{round_}.mp4", 2 * half, seed=round_).read_bytes()
        created = tus_create(cluster.url, token, len(data), "In flight")
        assert created.status_code == 201, created.text
        location = created.headers["Location"]
        with Stopped(cluster, "upload") as stopped:
            sock = open_partial_patch(cluster.url, token, location, 0, half)
            try:
                sock.sendall(data[:1024 * 1024])
                time.sleep(0.5)  # the upload service is receiving it
                stopped.terminate()
                for offset in range(1024 * 1024, half, 256 * 1024):
                    sock.sendall(data[offset:offset + 256 * 1024])
                    time.sleep(0.02)
                status, headers = _read_response(sock)
            finally:
                sock.close()
            assert status == 204 and headers.get("upload-offset") == str(half), (status, headers)
            took = stopped.wait_exit(HTTP_GRACE)
        head = requests.head(cluster.url + location, timeout=30, headers={
            "Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"})
        assert head.headers["Upload-Offset"] == str(half)  # what the answer said is what the restarted one has
        print(f"upload: PATCH of {half} bytes committed; exited {took:.2f} s after SIGTERM")


def test_a_login_in_flight_is_answered_when_auth_is_stopped(cluster, account):
    port = cluster.service("auth")["port"]
    body = json.dumps({"email": account["user"]["email"], "password": STRONG_PASSWORD}).encode()
    for _ in range(ROUNDS):
        with Stopped(cluster, "auth") as stopped:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            try:
                sock.sendall(b"POST /api/auth/login HTTP/1.1\r\nHost: auth\r\nContent-Type: application/json\r\n"
                             b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:5])
                time.sleep(0.5)  # the service has the request and waits for the rest of its body
                stopped.terminate()
                time.sleep(0.5)
                sock.sendall(body[5:])
                status, _headers, payload = _read_response(sock, with_body=True)
            finally:
                sock.close()
            assert status == 200 and "access_token" in json.loads(payload), (status, payload[:300])
            took = stopped.wait_exit(HTTP_GRACE)
            print(f"auth: login answered; exited {took:.2f} s after SIGTERM")


# A replica closes its websockets on SIGTERM (clients move to the other replica); held open, they kept it for
# gunicorn's whole graceful timeout (30 s) and were then cut off.
@pytest.mark.parametrize("name", ["notify-1", "notify-2"])
def test_a_notify_replica_exits_within_its_grace_with_clients_connected(cluster, account, tmp_path, name):
    token = account["token"]
    for round_ in range(ROUNDS):
        with Stopped(cluster, name) as stopped:
            direct = EventListener(f"http://127.0.0.1:{cluster.service(name)['port']}", token)
            log = cluster.dir / "logs" / f"{name}.log"
            seen = log.stat().st_size
            try:
                stopped.terminate()
                took = stopped.wait_exit(HTTP_GRACE)
                assert took < 10, f"{name} held on to its websocket for {took:.1f} s"
                # closed by its SIGTERM handler, not by a crash of the worker (which also ends it quickly)
                after = log.read_text(errors="replace")[seen:]
                assert "Traceback" not in after and "exited with code" not in after, after[-3000:]
            finally:
                direct.close()
        listener = EventListener(cluster.url, token)  # events flow through the replicas that are back
        try:
            clip = make_clip(tmp_path / f"n{round_}.mp4", 2, "320x180")
            video_id = tus_upload(cluster.url, token, clip, "After notify")
            listener.wait_for(video_id, "video.ready", timeout=120)
        finally:
            listener.close()
        print(f"{name}: exited {took:.2f} s after SIGTERM with a websocket client connected")


# --- workers --------------------------------------------------------------------------------------------------

def _holder(cluster: ClusterDeployment, video_id: str) -> tuple[str | None, dict]:
    """Which worker's process runs this video's job now, and the record."""
    from services.adapters.sqlite_metadata import SqliteMetadataStore

    store = SqliteMetadataStore(cluster.dir / "data" / "reelhouse.db")
    try:
        record = store.videos.get(video_id) or {}
    finally:
        store.close()
    worker = str(record.get("worker") or "")
    if record.get("status") == "processing":
        for name in ("worker-1", "worker-2"):
            if worker.endswith(f":{cluster.service(name)['pid']}"):
                return name, record
    return None, record


def _wait_holder(cluster: ClusterDeployment, video_id: str, other_than: int | None = None,
                 timeout: float = 120) -> tuple[str, dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        name, record = _holder(cluster, video_id)
        if name and cluster.service(name)["pid"] != other_than and record.get("progress", 0) > 0:
            return name, record
        time.sleep(0.1)
    raise AssertionError(f"no worker is transcoding {video_id}: {_holder(cluster, video_id)}")


def test_workers_hand_their_job_back_without_spending_an_attempt(cluster, account, tmp_path):
    token = account["token"]
    clip = make_clip(tmp_path / "long.mp4", soak(20, 40), "1280x720")
    video_id = tus_upload(cluster.url, token, clip, "Handed back")
    stopped_pids: list[int] = []
    for _ in range(2 * ROUNDS):  # each worker in turn: the one running the job
        name, record = _wait_holder(cluster, video_id, other_than=stopped_pids[-1] if stopped_pids else None)
        with Stopped(cluster, name) as stopped:
            stopped.terminate()
            took = stopped.wait_exit(WORKER_GRACE + 10)  # the grace, then ffmpeg stopped and the job re-published
            stopped_pids.append(stopped.pid)
            print(f"{name}: handed the job back (attempt {record.get('attempt')}); exited {took:.2f} s after "
                  "SIGTERM")
            assert took >= WORKER_GRACE - 0.5  # the job had its grace time first
    video = wait_videos(cluster.url, token, [video_id], timeout=soak(240, 600))[video_id]
    assert video["status"] == "ready", video
    _, record = _holder(cluster, video_id)
    assert record["attempt"] == 1, record  # a shutdown is not the job's fault: no attempt spent
    check_vod(cluster.url, video)


# --- helpers ------------------------------------------------------------------------------------------------

def _read_response(sock: socket.socket, with_body: bool = False):
    """Status, lower-cased headers (and body, read to the end) of an HTTP/1.1 response on a raw socket."""
    sock.settimeout(HTTP_GRACE + 10)
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {raw!r}"
        raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    if not with_body:
        return status, headers
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest.decode("utf-8", "replace")
