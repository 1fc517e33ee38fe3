"""Socket.IO against a real `reelhouse up` process (gunicorn gthread, threading mode, simple-websocket):
auth on connect, tenant isolation, subscribe checks, visibility of private videos, and events of a real
upload → transcode in `seq` order, over the websocket transport and the polling → websocket upgrade."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import imageio_ffmpeg
import pytest
import requests
import socketio

from services.testing import STRONG_PASSWORD, free_port
from services.testing import EventListener as Listener

pytestmark = pytest.mark.e2e
TUS = {"Tus-Resumable": "1.0.0"}


def make_clip(path: Path, seconds: float = 2) -> Path:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=320x180:rate=25", "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", str(path)], check=True, timeout=120)
    return path


def start_server(tmp: Path, **extra_env):
    port, log = free_port(), tmp / f"up-{uuid.uuid4().hex[:6]}.log"
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "REELHOUSE_DATA_DIR": str(tmp / f"data-{port}"), "REELHOUSE_PORT": str(port),
           "WORKER_CONCURRENCY": "1", **extra_env}
    proc = subprocess.Popen([sys.executable, "-m", "reelhouse_gateway", "up"], env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if requests.get(url + "/healthz", timeout=2).status_code == 200:
                return url, proc
        except requests.RequestException:  # not up yet, or too busy to answer within the timeout
            time.sleep(0.2)
    if proc.poll() is None:
        stop_server(proc)  # never leave a server behind a failed start
    raise AssertionError(log.read_text())


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("notify")
    url, proc = start_server(tmp)
    try:
        yield {"url": url, "clip": make_clip(tmp / "clip.mp4")}
    finally:
        stop_server(proc)


def register(url: str) -> dict:
    body = requests.post(url + "/api/auth/register", timeout=30, json={
        "tenant_name": f"Org {uuid.uuid4().hex[:6]}", "email": f"{uuid.uuid4().hex[:8]}@org.test",
        "password": STRONG_PASSWORD}).json()
    return {"token": body["access_token"], "user": body["user"]}


def add_user(url: str, admin_token: str, role: str) -> str:
    email = f"{role}-{uuid.uuid4().hex[:8]}@org.test"
    created = requests.post(url + "/api/auth/users", timeout=30, headers={"Authorization": f"Bearer {admin_token}"},
                            json={"email": email, "password": STRONG_PASSWORD, "role": role})
    assert created.status_code == 201, created.text
    return requests.post(url + "/api/auth/login", timeout=30,
                         json={"email": email, "password": STRONG_PASSWORD}).json()["access_token"]


def upload(url: str, token: str, clip: Path, visibility: str | None = None) -> str:
    data = clip.read_bytes()
    auth = {"Authorization": f"Bearer {token}", **TUS}
    meta = f"title {base64.b64encode(b'Live').decode()}"
    if visibility:
        meta += f",visibility {base64.b64encode(visibility.encode()).decode()}"
    created = requests.post(url + "/api/uploads", timeout=30, headers={
        **auth, "Upload-Length": str(len(data)), "Upload-Metadata": meta})
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    response = requests.patch(url + location, data=data, timeout=60, headers={
        **auth, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert response.status_code == 204, response.text
    return location.rsplit("/", 1)[1]


def refusal(url: str, auth) -> str:
    client, reasons = socketio.Client(reconnection=False), []
    client.on("connect_error", lambda data: reasons.append(data))
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(url, auth=auth, transports=["websocket"], wait_timeout=5)
    deadline = time.monotonic() + 5
    while not reasons and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reasons, "no connect_error"
    return str(reasons[0])


def test_refused_without_token_or_with_a_forged_one(server):
    url = server["url"]
    assert "access token" in refusal(url, None)
    assert "access token" in refusal(url, {})
    forged = refusal(url, {"token": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."})
    assert forged and "Traceback" not in forged
    assert refusal(url, {"token": "not-a-jwt"})


@pytest.mark.parametrize("transports", [["websocket"], None], ids=["websocket", "polling-upgrade"])
def test_uploader_receives_every_event_in_order_and_other_tenant_nothing(server, transports):
    url = server["url"]
    a, b = register(url), register(url)
    mine, theirs = Listener(url, a["token"], transports), Listener(url, b["token"], transports)
    try:
        assert mine.client.transport() == "websocket" or transports is None
        video_id = upload(url, a["token"], server["clip"])
        events = mine.wait_for(video_id, "video.ready")
        names = [name for name, _ in events]
        statuses = [data["status"] for name, data in events if name == "video.status"]
        assert statuses[:3] == ["uploading", "uploaded", "processing"], events
        assert "video.progress" in names and names.index("video.progress") > names.index("video.status")
        assert names[-1] == "video.ready" or "video.ready" in names
        # each playable URL is announced before the end: the faststart original, then HLS
        playable = [data["playback"] for name, data in events if name == "video.playable"]
        assert playable == ["original", "hls"], events
        assert names.index("video.playable") < names.index("video.ready")
        seqs = [data["seq"] for _, data in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
        assert all(data["tenant_id"] == a["user"]["tenant_id"] and "ts" in data for _, data in events)

        # tenant B: nothing of A's upload, and subscribing to it is refused like a missing video
        time.sleep(0.5)
        assert theirs.events == []
        ack = theirs.client.call("subscribe", {"video_id": video_id}, timeout=10)
        assert ack["error"]["code"] == "not_found" and ack["error"]["message"]
        assert mine.client.call("subscribe", {"video_id": video_id}, timeout=10) == {"ok": True, "video_id": video_id}
        assert mine.client.call("unsubscribe", {"video_id": video_id}, timeout=10)["ok"] is True
        assert mine.client.call("subscribe", {}, timeout=10)["error"]["code"] == "invalid_request"
        # deleting it: the library of every member hears of it; the other tenant still hears nothing
        deleted = requests.delete(f"{url}/api/videos/{video_id}", timeout=30,
                                  headers={"Authorization": f"Bearer {a['token']}"})
        assert deleted.status_code == 204
        gone = [data for name, data in mine.wait_for(video_id, "video.deleted", timeout=15) if name == "video.deleted"]
        assert len(gone) == 1 and gone[0]["seq"] > seqs[-1]
        assert "owner_id" not in gone[0] and "visibility" not in gone[0]  # routing data stays on the bus
        time.sleep(0.5)
        assert theirs.events == []
    finally:
        mine.close()
        theirs.close()


def test_a_file_that_is_not_a_video_ends_with_video_failed(server, tmp_path):
    url = server["url"]
    account = register(url)
    listener = Listener(url, account["token"], ["websocket"])
    try:
        junk = tmp_path / "notes.mp4"
        junk.write_bytes(b"this is a shopping list, not a film\n" * 200)
        video_id = upload(url, account["token"], junk)
        events = listener.wait_for(video_id, "video.failed", timeout=60)
        failed = [data for name, data in events if name == "video.failed"]
        assert len(failed) == 1 and failed[0]["error"] and "Traceback" not in failed[0]["error"]
        assert not any(name == "video.ready" for name, _ in events)
        seqs = [data["seq"] for _, data in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
        video = requests.get(f"{url}/api/videos/{video_id}", timeout=10,
                             headers={"Authorization": f"Bearer {account['token']}"}).json()
        assert video["status"] == "failed" and video["error"] == failed[0]["error"]
    finally:
        listener.close()


def test_private_video_events_reach_owner_and_editor_not_viewer(server):
    url = server["url"]
    admin = register(url)
    editor_token, viewer_token = add_user(url, admin["token"], "editor"), add_user(url, admin["token"], "viewer")
    uploader = add_user(url, admin["token"], "editor")
    editor, viewer, owner = Listener(url, editor_token), Listener(url, viewer_token), Listener(url, uploader)
    try:
        video_id = upload(url, uploader, server["clip"], visibility="private")
        owner.wait_for(video_id, "video.ready")
        editor.wait_for(video_id, "video.ready", timeout=10)
        time.sleep(0.5)
        assert viewer.of(video_id) == []
        ack = viewer.client.call("subscribe", {"video_id": video_id}, timeout=10)
        assert ack["error"]["code"] == "not_found"
        # a fresh token re-authenticates the same socket
        assert viewer.client.call("auth", {"token": viewer_token}, timeout=10)["ok"] is True
        assert viewer.client.call("auth", {"token": "forged"}, timeout=10)["error"]["code"]
        # deleted: the owner and the editors hear it, the viewer does not (not even that it existed)
        assert requests.delete(f"{url}/api/videos/{video_id}", timeout=30,
                               headers={"Authorization": f"Bearer {uploader}"}).status_code == 204
        owner.wait_for(video_id, "video.deleted", timeout=15)
        editor.wait_for(video_id, "video.deleted", timeout=15)
        time.sleep(0.5)
        assert viewer.of(video_id) == []
    finally:
        for listener in (editor, viewer, owner):
            listener.close()


def login(url: str, email: str) -> str:
    return requests.post(url + "/api/auth/login", timeout=30,
                         json={"email": email, "password": STRONG_PASSWORD}).json()["access_token"]


def test_socket_is_disconnected_when_its_token_expires_unless_reauthenticated(tmp_path):
    url, proc = start_server(tmp_path, ACCESS_TOKEN_TTL="30")
    try:
        account = register(url)
        email = account["user"]["email"]
        lapsing, renewed = Listener(url, account["token"]), Listener(url, login(url, email))
        started = time.monotonic()
        # half the shortest TTL the config allows (30 s): a token taken now expires ~15 s after the first one,
        # which is what shows that re-authenticating moved this socket's deadline
        time.sleep(15)
        ack = renewed.client.call("auth", {"token": login(url, email)}, timeout=10)
        assert ack["ok"] is True and ack["role"] == "admin"
        while lapsing.client.connected and time.monotonic() - started < 45:
            time.sleep(0.2)
        assert not lapsing.client.connected
        assert 28 <= time.monotonic() - started < 40
        assert renewed.client.connected  # its fresh token runs until ~45 s
        renewed.close()
    finally:
        stop_server(proc)


def test_two_notify_processes_on_rabbitmq_both_deliver(tmp_path):
    """One replica as the notify image runs it (gevent), one in threading mode: both deliver the same events."""
    import socket as sockets

    try:
        sockets.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        pytest.fail("RabbitMQ is needed on 127.0.0.1:5672")
    from services.adapters.rabbitmq_events import RabbitEventBus

    broker, namespace = "amqp://guest:guest@127.0.0.1:5672/%2F", f"notify-{uuid.uuid4().hex[:8]}"
    shared = {"BROKER_URL": broker, "BROKER_NAMESPACE": namespace, "REELHOUSE_DATA_DIR": str(tmp_path / "data")}
    gateway_url, gateway = start_server(tmp_path, WORKER_CONCURRENCY="0", **shared)
    notifiers: list[tuple[str, subprocess.Popen]] = []
    listeners: list[Listener] = []
    try:
        account = register(gateway_url)
        token, tenant_id = account["token"], account["user"]["tenant_id"]
        created = requests.post(gateway_url + "/api/uploads", timeout=30, headers={
            "Authorization": f"Bearer {token}", **TUS, "Upload-Length": "1000",
            "Upload-Metadata": f"title {base64.b64encode(b'Shared').decode()}"})
        assert created.status_code == 201, created.text
        video_id = created.headers["Location"].rsplit("/", 1)[1]
        for mode, worker in (("gevent", ["-k", "gevent"]), ("threading", ["-k", "gthread", "--threads", "16"])):
            port = free_port()
            log = tmp_path / f"notify-{port}.log"
            proc = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-w", "1", *worker,
                                     "-b", f"127.0.0.1:{port}", "notify_service:create_app()"],
                                    env={**os.environ, **shared, "NOTIFY_ASYNC_MODE": mode}, stdout=log.open("wb"),
                                    stderr=subprocess.STDOUT, start_new_session=True)
            notifiers.append((f"http://127.0.0.1:{port}", proc))
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                try:
                    if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        break
                except requests.RequestException:  # not up yet, or too busy to answer within the timeout
                    time.sleep(0.2)
        listeners = [Listener(url, token, ["websocket"]) for url, _ in notifiers]
        bus = RabbitEventBus(broker, namespace=namespace)
        try:
            event = {"video_id": video_id, "tenant_id": tenant_id, "seq": 99, "ts": time.time(),
                     "stage": "encode", "percent": 42}
            bus.publish("video.progress", event)
            for listener in listeners:
                got = listener.wait_for(video_id, "video.progress", timeout=15)
                assert got == [("video.progress", event)]
            for (url, _), mode in zip(notifiers, ("gevent", "threading"), strict=True):
                metrics = requests.get(url + "/metrics", timeout=10).text
                assert f'reelhouse_notify_connected_sockets{{async_mode="{mode}"}} 1.0' in metrics
                assert 'reelhouse_notify_events_total{topic="video.progress"} 1.0' in metrics

            # a burst, as fast as the bus takes it: each socket of the tenant gets every event once, in order (under
            # gevent most are written straight to the socket, see notify_service/websocket.py); another tenant's none
            outsiders = [Listener(url, register(gateway_url)["token"], ["websocket"]) for url, _ in notifiers]
            listeners += outsiders
            burst = [{**event, "seq": 100 + n, "ts": time.time(), "percent": n % 100} for n in range(300)]
            for item in burst:
                bus.publish("video.progress", item)
            for listener in listeners[:2]:
                deadline = time.monotonic() + 30
                while len(listener.of(video_id)) < 1 + len(burst) and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert listener.of(video_id) == [("video.progress", e) for e in [event, *burst]]
            time.sleep(0.5)
            assert [o.events for o in outsiders] == [[], []]
        finally:
            bus.close()  # the namespace's exchange is deleted below, after the replicas stopped
    finally:
        for listener in listeners:
            listener.close()
        for _, proc in notifiers:
            stop_server(proc)
        stop_server(gateway)
        from services.adapters.rabbitmq_jobs import RabbitJobQueue

        RabbitEventBus(broker, namespace=namespace).delete_topology()
        RabbitJobQueue(broker, namespace=namespace).delete_topology()


def test_websocket_offer_of_permessage_deflate_is_declined(server):
    """Browsers always offer permessage-deflate; the notify service declines it (a zlib compressor per socket costs
    ~256 KiB and CPU on every frame, for ~200-byte events), and the socket works uncompressed."""
    import socket as sockets

    host, port = server["url"].removeprefix("http://").split(":")
    key = base64.b64encode(os.urandom(16)).decode()
    with sockets.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}:{port}\r\n"
                      f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            assert chunk, answer
            answer += chunk
        head, _, rest = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        assert b"sec-websocket-extensions" not in head.lower(), head
        while len(rest) < 2 or len(rest) < 2 + (rest[1] & 0x7F):
            rest += sock.recv(4096)
        # the Engine.IO open packet, in an uncompressed (RSV1 clear) text frame
        assert rest[0] == 0x81 and rest[2:3] == b"0", rest
