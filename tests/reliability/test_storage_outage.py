"""S3 errors: the object store cut off mid-upload, mid-transcode and while streaming.

"Unreachable" is a TCP forwarder in front of moto that is shut (new connections refused, open ones reset) and
opened again on the same port: S3 comes back with its data, as MinIO or AWS would after a network outage (a
restarted moto would come back empty, which no real S3 does). "Hung" is moto itself stopped with SIGSTOP and
resumed with SIGCONT: connections are accepted by the kernel but never answered.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest
import requests

from services import keys
from services.testing import (
    MotoS3Server,
    ReelhouseProcess,
    assert_error,
    make_clip,
    open_partial_patch,
    padded_clip,
    register_account,
    sha256_of,
    soak,
    tus_create,
    tus_patch,
    tus_settled_offset,
    tus_upload,
)

pytestmark = [pytest.mark.reliability, pytest.mark.infra]

MiB = 1024 * 1024
PART = 5 * MiB  # the smallest part S3 takes: more parts, more moments to cut in


class TcpProxy:
    """A loopback TCP forwarder to `target`; `cut()` refuses new connections and resets open ones, `restore()`
    listens again on the same port."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind(("127.0.0.1", self.port))
                break
            except OSError:
                # while cut, a client's outgoing connection may hold the port as its ephemeral end for a moment
                listener.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            doomed, self._open = self._open, set()
        for sock in doomed:
            try:  # a pump thread may have closed it a moment ago
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
                # close() alone leaves a connection open while a pump thread is blocked in recv() on it (Linux):
                # the client then waits out its read timeout (60 s) and never sees the outage
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(256 * 1024):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with self._lock:
                self._open.discard(sock)
            try:
                sock.close()
            except OSError:
                pass


@pytest.fixture
def moto():
    server = MotoS3Server().start_or_require()
    try:
        yield server
    finally:
        if server.process is not None:
            os.kill(server.process.pid, signal.SIGCONT)  # never leave a stopped process behind
        server.close()


@pytest.fixture
def proxy(moto):
    forwarder = TcpProxy((moto.host, moto.port))
    yield forwarder
    forwarder.cut()


def _s3_env(proxy: TcpProxy, bucket: str, **extra) -> dict:
    return {"STORAGE_URL": f"s3://{bucket}", "S3_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}",
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "UPLOAD_PART_SIZE": str(PART),
            **{k: str(v) for k, v in extra.items()}}


@pytest.fixture
def s3_up(tmp_path, proxy):
    """`reelhouse up` on S3 through the forwarder, no transcoding; stopped even if the test fails."""
    bucket = f"outage-{uuid.uuid4().hex[:12]}"
    server = ReelhouseProcess(tmp_path / "data", WORKER_CONCURRENCY="0", **_s3_env(proxy, bucket))
    server.bucket = bucket
    try:
        yield server
    finally:
        _stop(server)


def _stop(server: ReelhouseProcess) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):  # stop() has killed it then
        server.stop(timeout=30)


def _stored_sha(moto: MotoS3Server, bucket: str, key: str) -> str:
    from services.adapters.s3_objects import S3ObjectStore

    store = S3ObjectStore(bucket, endpoint_url=moto.endpoint_url, access_key="test", secret_key="test")  # noqa: S106
    with store.open(key) as stream:
        return sha256_of(stream)


def _read_reply(sock: socket.socket, timeout: float) -> str:
    """A whole HTTP/1.1 answer read off a raw socket (headers and a Content-Length body)."""
    sock.settimeout(timeout)
    reply = b""
    while b"\r\n\r\n" not in reply or len(reply.split(b"\r\n\r\n", 1)[1]) < _content_length(reply):
        data = sock.recv(65536)
        if not data:
            break
        reply += data
    return reply.decode(errors="replace")


def _content_length(reply: bytes) -> int:
    for line in reply.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def _timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_s3_unreachable_or_hung_mid_upload(tmp_path, moto, proxy, s3_up):
    """Cut between PATCHes and during one → 503 storage_unavailable, quickly; S3 hung → the client's timeout,
    nothing committed; S3 back → HEAD is consistent and the upload completes with the source's sha256."""
    size = soak(14 * MiB, 64 * MiB)
    source = padded_clip(tmp_path / "source.mp4", size, seed=7)
    data = source.read_bytes()
    account = register_account(s3_up.url)
    token = account["token"]
    location = tus_create(s3_up.url, token, size).headers["Location"]
    video_id = location.rsplit("/", 1)[1]

    # A small, complete video to stream while S3 is away.
    watched = tus_upload(s3_up.url, token, make_clip(tmp_path / "watched.mp4", 2), "Watched")
    original_url = requests.get(f"{s3_up.url}/api/videos/{watched}", timeout=10,
                                headers={"Authorization": f"Bearer {token}"}).json()["playback"]["original_url"]
    assert requests.get(s3_up.url + original_url, timeout=30).status_code == 200

    offset = 0
    assert tus_patch(s3_up.url, token, location, 0, data[:3 * MiB]).status_code == 204  # a staged chunk
    offset = 3 * MiB

    # 1. Unreachable between PATCHes: this PATCH fills a part and would stage a chunk.
    proxy.cut()
    answer, took = _timed(lambda: tus_patch(s3_up.url, token, location, offset, data[offset:offset + 4 * MiB]))
    assert_error(answer, 503, "storage_unavailable")
    assert int(answer.headers["Retry-After"]) > 0 and took < 60, took
    streamed, stream_took = _timed(lambda: requests.get(s3_up.url + original_url, timeout=90))
    assert_error(streamed, 503, "storage_unavailable")
    assert stream_took < 60
    assert requests.get(s3_up.url + "/healthz", timeout=10).status_code == 200
    assert tus_settled_offset(s3_up.url, token, location) == offset  # nothing of the refused PATCH counted

    # 2. Unreachable during a PATCH: S3 goes away while the body is arriving.
    proxy.restore()
    chunk = 4 * MiB
    with open_partial_patch(s3_up.url, token, location, offset, chunk) as sock:
        sock.sendall(data[offset:offset + chunk // 2])
        time.sleep(0.5)
        proxy.cut()
        sock.sendall(data[offset + chunk // 2:offset + chunk])
        reply = _read_reply(sock, timeout=90)
    assert reply.startswith("HTTP/1.1 503"), reply[:300]
    assert '"storage_unavailable"' in reply
    # What was stored before the cut (a part completed by the first half) stays committed, nothing after it.
    settled = tus_settled_offset(s3_up.url, token, location)
    assert offset <= settled < offset + chunk, settled
    offset = settled

    # 3. Hung (SIGSTOP): the request waits on S3's timeouts; the client gives up first and nothing is committed.
    proxy.restore()
    os.kill(moto.process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(requests.Timeout):
            tus_patch(s3_up.url, token, location, offset, data[offset:offset + 4 * MiB], timeout=5)
    finally:
        os.kill(moto.process.pid, signal.SIGCONT)

    # S3 back: resume from whatever the server says, in 4 MiB PATCHes.
    hung_at, offset = offset, tus_settled_offset(s3_up.url, token, location, timeout=90)
    assert offset in (hung_at, hung_at + 4 * MiB), offset  # nothing, or the whole PATCH once S3 answered
    while offset < size:
        answer = tus_patch(s3_up.url, token, location, offset, data[offset:offset + 4 * MiB])
        assert answer.status_code == 204, answer.text
        offset = int(answer.headers["Upload-Offset"])
    video = requests.get(f"{s3_up.url}/api/videos/{video_id}", timeout=10,
                         headers={"Authorization": f"Bearer {token}"}).json()
    assert video["status"] == "uploaded", video
    assert _stored_sha(moto, s3_up.bucket, keys.original_key(account["tenant"]["id"], video_id)) == sha256_of(
        source.open("rb"))
    assert requests.get(s3_up.url + original_url, timeout=30).status_code == 200


def _video(server: ReelhouseProcess, token: str, video_id: str) -> dict:
    answer = requests.get(f"{server.url}/api/videos/{video_id}", timeout=10,
                          headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def _wait(server, token, video_id, done, timeout: float, never=("ready",)) -> dict:
    """Poll the video until `done(video)`; fail if it shows a status in `never` first, or on the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        video = _video(server, token, video_id)
        if done(video):
            return video
        assert video["status"] not in never, video
        assert time.monotonic() < deadline, f"not there within {timeout} s: {video}"
        time.sleep(0.2)


def _check_complete_hls(moto: MotoS3Server, bucket: str, tenant_id: str, video_id: str) -> int:
    """Every rung's playlist is VOD (ENDLIST) and every segment it names is stored, non-empty; the segment count."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto.endpoint_url, region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")  # noqa: S106
    prefix = keys.video_prefix(tenant_id, video_id) + "hls/"
    sizes = {item["Key"][len(prefix):]: item["Size"]
             for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
             for item in page.get("Contents", [])}

    def text(name: str) -> str:
        return s3.get_object(Bucket=bucket, Key=prefix + name)["Body"].read().decode()

    rungs = [line.rsplit("/", 1)[0] for line in text("master.m3u8").splitlines() if line.endswith("index.m3u8")]
    assert rungs, sizes
    segments = 0
    for rung in rungs:
        playlist = text(f"{rung}/index.m3u8")
        assert "#EXT-X-ENDLIST" in playlist, playlist
        names = [line for line in playlist.splitlines() if line and not line.startswith("#")]
        names += [part.split('"')[1] for part in playlist.split("URI=")[1:]]  # the init segment
        for name in names:
            assert sizes.get(f"{rung}/{name}", 0) > 0, (rung, name, sorted(sizes))
        segments += len(names)
    return segments


def test_s3_outage_mid_transcode(tmp_path, moto, proxy):
    """S3 cut while a job runs → the job is retried and the video becomes ready only with every playlist and
    segment stored; S3 down for good → the video ends failed with a readable error after JOB_MAX_ATTEMPTS."""
    bucket = f"outage-{uuid.uuid4().hex[:12]}"
    server = ReelhouseProcess(tmp_path / "data", WORKER_CONCURRENCY="1", JOB_MAX_ATTEMPTS="2",
                              **_s3_env(proxy, bucket))
    try:
        account = register_account(server.url)
        token = account["token"]
        # Long enough that the job is still running when the test sees its progress and cuts S3 (an 8 s clip was
        # transcoded in about 1 s, sometimes before the cut)
        clip = make_clip(tmp_path / "long.mp4", soak(24, 30), size=soak("426x240", "640x360"))

        # 1. A short outage mid-job: retried, then ready and complete.
        video_id = tus_upload(server.url, token, clip, "Cut mid-transcode")
        _wait(server, token, video_id, lambda v: v["status"] == "processing" and v["progress"] > 0, 120)
        proxy.cut()
        down_until = time.monotonic() + soak(4, 20)
        while time.monotonic() < down_until:
            video = _video(server, token, video_id)
            assert video["status"] == "processing", video
            if video["playback"]["hls_url"]:
                assert_error(requests.get(server.url + video["playback"]["hls_url"], timeout=60), 503,
                             "storage_unavailable")
            time.sleep(0.5)
        proxy.restore()
        ready = _wait(server, token, video_id, lambda v: v["status"] == "ready", 240, never=("failed",))
        assert ready["renditions"] and ready["error"] is None, ready
        segments = _check_complete_hls(moto, bucket, account["tenant"]["id"], video_id)
        retries = [line for line in server.log.read_text().splitlines()
                   if "transcode failed, retrying" in line and video_id in line]
        assert retries, "the job was not retried"
        master = requests.get(server.url + ready["playback"]["hls_url"], timeout=30)
        assert master.status_code == 200 and "#EXTM3U" in master.text
        print(f"\nmid-transcode outage: {len(retries)} retry, {segments} segments complete once ready")

        # 2. S3 gone for good: two attempts, then failed with the reason, never ready.
        doomed = tus_upload(server.url, token, clip, "S3 never comes back")
        _wait(server, token, doomed, lambda v: v["status"] == "processing" and v["progress"] > 0, 120)
        proxy.cut()
        started = time.monotonic()
        failed = _wait(server, token, doomed, lambda v: v["status"] == "failed", 180)
        print(f"S3 down for good: failed after {time.monotonic() - started:.0f} s: {failed['error']}")
        assert failed["error"].startswith("Processing failed after 2 attempts"), failed
        proxy.restore()
    finally:
        _stop(server)
