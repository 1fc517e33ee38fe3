"""The distributed gateway (`reelhouse gateway`): forwarding to real HTTP upstreams on loopback.

The upstreams are small WSGI servers in threads that echo what reached them, so every header, byte and status
the gateway passes on (or refuses to) is checked on the wire."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from reelhouse_gateway import create_proxy_app
from services.bootstrap import bootstrap
from services.config import ConfigError
from services.testing import assert_error, free_port, rss_kib
from services.tokens import Principal, TokenError


class Echo:
    """An upstream that reports what it received; special paths misbehave on purpose."""

    def __init__(self, name: str):
        self.name = name
        self.seen: list[dict] = []
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def app(self, environ, start_response):
        request = Request(environ)
        path = request.path
        if path.endswith("/slow"):
            time.sleep(3)
        if path.endswith("/download"):
            size = int(request.args.get("mib", "1")) * 1024 * 1024
            block = b"r" * (1024 * 1024)

            def body():
                for _ in range(size // len(block)):
                    yield block
            return Response(body(), headers={"Content-Length": str(size)},
                            content_type="application/octet-stream")(environ, start_response)
        if path.endswith("/ranged"):
            return Response(b"0123456789"[2:5], status=206, headers={
                "Content-Range": "bytes 2-4/10", "Accept-Ranges": "bytes", "ETag": '"e1"'})(environ, start_response)
        if path.endswith("/nocontent"):
            start_response("204 No Content", [("Upload-Offset", "42"), ("Tus-Resumable", "1.0.0")])
            return []
        if path.endswith("/readyz"):
            return Response('{"status": "ok"}', content_type="application/json")(environ, start_response)
        digest, size = hashlib.sha256(), 0
        while chunk := request.stream.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
        seen = {"service": self.name, "method": request.method, "uri": environ.get("RAW_URI") or environ.get(
                    "REQUEST_URI") or request.full_path, "headers": dict(request.headers),
                "sha256": digest.hexdigest(), "size": size}
        self.seen.append(seen)
        status = int(request.args.get("status", "200"))
        return Response(json.dumps(seen), status=status, content_type="application/json",
                        headers={"Connection": "close-me-not", "X-Upstream": self.name, "Server": "echo/1.0",
                                 "Tus-Version": "1.0.0"})(environ, start_response)

    def close(self):
        self.server.shutdown()


class FakeVerifier:
    def principal(self, token: str) -> Principal:
        if ":" not in token:
            raise TokenError("invalid_token", "bad token")
        user_id, tenant_id = token.split(":")
        return Principal(user_id, tenant_id, "viewer")


@pytest.fixture
def upstreams():
    servers = {name: Echo(name) for name in ("auth", "upload", "stream", "notify")}
    yield servers
    for server in servers.values():
        server.close()


def service_env(upstreams, **extra):
    return {"AUTH_URL": upstreams["auth"].url, "UPLOAD_URL": upstreams["upload"].url,
            "STREAM_URL": upstreams["stream"].url, "NOTIFY_URL": upstreams["notify"].url, **extra}


@pytest.fixture
def make_proxy(make_config, upstreams):
    def make(**env):
        config = make_config(**service_env(upstreams, UPSTREAM_READ_TIMEOUT=1, **env))
        app = create_proxy_app(deps=bootstrap(config, verifier=FakeVerifier()))
        app.config["TESTING"] = True
        return app.test_client()
    return make


def test_every_prefix_reaches_its_service_with_path_query_and_headers_intact(make_proxy, upstreams):
    client = make_proxy()
    for path, service in (("/api/auth/login", "auth"), ("/api/uploads", "upload"), ("/api/videos/v1", "upload"),
                          ("/api/stream/v1/hls/master.m3u8", "stream"), ("/api/webhooks", "notify"),
                          ("/socket.io/", "notify")):
        response = client.get(path + "?token=a%2Fb&x=1", headers={"X-Request-ID": "req-7", "Range": "bytes=0-1"})
        seen = response.get_json()
        assert response.status_code == 200 and seen["service"] == service, (path, seen)
        assert seen["uri"] == path + "?token=a%2Fb&x=1"  # percent-encoding kept
        assert seen["headers"]["X-Request-Id"] == "req-7" and response.headers["X-Request-ID"] == "req-7"
        assert seen["headers"]["Range"] == "bytes=0-1"
        assert seen["headers"]["Host"] == "localhost"  # the public host, as the client sent it
        assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1" and seen["headers"]["X-Forwarded-Proto"] == "http"
        assert response.headers["X-Upstream"] == service and response.headers["Tus-Version"] == "1.0.0"
        assert "echo" not in response.headers.get("Server", "")  # the service's Server header stays inside
        assert "Connection" not in response.headers  # hop-by-hop
    assert client.get("/api/authx").status_code == 404  # whole path segments only
    assert upstreams["stream"].seen and not any(s["uri"].startswith("/api/authx") for s in upstreams["auth"].seen)


def test_client_claims_in_x_forwarded_headers_do_not_reach_the_services(make_proxy):
    spoof = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.test"}
    seen = make_proxy().get("/api/auth/me", headers=spoof).get_json()["headers"]
    assert (seen["X-Forwarded-For"], seen["X-Forwarded-Proto"], seen["X-Forwarded-Host"]) == (
        "127.0.0.1", "http", "localhost")
    # behind one trusted proxy (an ingress), its view of the client is what goes on
    trusted = make_proxy(TRUSTED_PROXIES=1).get("/api/auth/me", headers=spoof).get_json()["headers"]
    assert (trusted["X-Forwarded-For"], trusted["X-Forwarded-Proto"], trusted["X-Forwarded-Host"]) == (
        "203.0.113.9", "https", "evil.test")


def test_statuses_ranges_and_empty_bodies_pass_through(make_proxy):
    client = make_proxy()
    ranged = client.get("/api/stream/v/ranged", headers={"Range": "bytes=2-4"})
    assert ranged.status_code == 206 and ranged.data == b"234"
    assert ranged.headers["Content-Range"] == "bytes 2-4/10" and ranged.headers["ETag"] == '"e1"'
    empty = client.patch("/api/uploads/v/nocontent", data=b"x")
    assert empty.status_code == 204 and empty.headers["Upload-Offset"] == "42"
    assert "Content-Type" not in empty.headers  # none invented
    for status in (409, 413, 460):
        response = client.post(f"/api/uploads?status={status}")
        assert response.status_code == status and response.get_json()["service"] == "upload"
    preflight = client.options("/api/uploads", headers={"Origin": "https://app.test",
                                                        "Access-Control-Request-Method": "PATCH"})
    assert preflight.get_json()["method"] == "OPTIONS"  # the upload service answers tus OPTIONS, not the gateway


def test_bodies_arrive_whole(make_proxy):
    client = make_proxy()
    body = os.urandom(3 * 1024 * 1024 + 17)
    seen = client.patch("/api/uploads/v1", data=body, headers={"Content-Type": "application/offset+octet-stream",
                                                                "Upload-Offset": "0"}).get_json()
    assert seen["size"] == len(body) and seen["sha256"] == hashlib.sha256(body).hexdigest()
    assert seen["headers"]["Upload-Offset"] == "0" and seen["headers"]["Content-Length"] == str(len(body))


def test_a_service_down_slow_or_broken_gets_the_error_shape(make_proxy, upstreams):
    client = make_proxy()
    slow = client.get("/api/stream/v/slow")
    assert_error(slow, 504, "gateway_timeout")
    upstreams["stream"].close()
    down = client.get("/api/stream/v/hls/master.m3u8")
    body = assert_error(down, 503, "service_unavailable")
    assert "stream service" in body["message"] and down.headers["Retry-After"] == "5"
    # another service still answers
    assert client.get("/api/auth/me").status_code == 200


def test_an_upstream_that_cuts_the_connection_is_a_502(make_config, upstreams):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def rude():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.recv(65536)
            connection.close()  # no response at all

    threading.Thread(target=rude, daemon=True).start()
    try:
        env = service_env(upstreams, STREAM_URL=f"http://127.0.0.1:{listener.getsockname()[1]}")
        app = create_proxy_app(deps=bootstrap(make_config(**env), verifier=FakeVerifier()))
        assert_error(app.test_client().get("/api/stream/v/original"), 502, "bad_gateway")
    finally:
        listener.close()


def test_readyz_aggregates_the_services(make_proxy, upstreams):
    client = make_proxy()
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"auth": "ok", "upload": "ok", "stream": "ok", "notify": "ok"}
    upstreams["notify"].close()
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.get_json()["checks"]["notify"].startswith("unavailable")


def test_rate_limits_per_address_and_per_tenant(make_proxy):
    client = make_proxy(API_RATE_LIMIT_PER_ADDRESS="4 per minute", API_RATE_LIMIT_PER_TENANT="2 per minute")
    tenant_a, tenant_b = {"Authorization": "Bearer u1:ta"}, {"Authorization": "Bearer u2:tb"}
    assert [client.get("/api/videos", headers=tenant_a).status_code for _ in range(2)] == [200, 200]
    limited = client.get("/api/videos", headers=tenant_a)
    body = assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) > 0 and body["message"]
    assert client.get("/api/videos", headers=tenant_b).status_code == 200  # another tenant is not held back
    # the address budget (4) is now spent by those four requests, whatever the tenant
    assert_error(client.get("/api/videos", headers=tenant_b), 429, "rate_limited")
    assert_error(client.get("/api/stream/v/original?token=x"), 429, "rate_limited")
    # ops endpoints and the web app are not API traffic
    assert client.get("/healthz").status_code == 200
    ok = client.get("/api/auth/me", environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert ok.status_code == 200 and "Retry-After" not in ok.headers  # only on 429/503


def test_the_distributed_gateway_names_missing_service_urls(make_config, upstreams):
    with pytest.raises(ConfigError, match="STREAM_URL"):
        create_proxy_app(make_config(**{k: v for k, v in service_env(upstreams).items() if k != "STREAM_URL"}))


class Repeated:
    """A file-like body of `count` copies of `block`, with a length (so requests sends Content-Length)."""

    def __init__(self, block: bytes, count: int):
        self.block, self.left, self.digest = block, count * len(block), hashlib.sha256()

    def __len__(self):
        return self.left

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        data = self.block[: min(self.left, size if size > 0 else len(self.block), len(self.block))]
        self.left -= len(data)
        self.digest.update(data)
        return data


@pytest.mark.e2e
def test_large_bodies_stream_through_a_real_gateway_with_bounded_memory(tmp_path, upstreams):
    """256 MiB up and 256 MiB down through `reelhouse gateway` under gunicorn: its RSS grows by far less."""
    port = free_port()
    log = tmp_path / "gateway.log"
    env = {**os.environ, **service_env(upstreams), "REELHOUSE_DATA_DIR": str(tmp_path / "data"),
           "REELHOUSE_PORT": str(port), "LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "reelhouse_gateway", "gateway"], env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:  # not up yet, or too busy to answer within the timeout
                time.sleep(0.2)
        before, samples, sampling = rss_kib(proc.pid), [], threading.Event()

        def sample():
            while not sampling.wait(0.05):
                samples.append(rss_kib(proc.pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        mib = 256
        body = Repeated(os.urandom(1024 * 1024), mib)
        seen = requests.patch(url + "/api/uploads/big", data=body, timeout=120).json()
        assert seen["size"] == mib * 1024 * 1024 and seen["sha256"] == body.digest.hexdigest()
        received = 0
        with requests.get(url + f"/api/stream/big/download?mib={mib}", stream=True, timeout=120) as download:
            assert download.status_code == 200
            for chunk in download.iter_content(1024 * 1024):
                received += len(chunk)
        assert received == mib * 1024 * 1024
        sampling.set()
        sampler.join()
        growth_mib = (max(samples) - before) / 1024
        assert growth_mib < 48, f"gateway RSS grew by {growth_mib:.1f} MiB for 512 MiB through it"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def _start_gateway(tmp_path, upstreams, **env):
    port = free_port()
    log = tmp_path / f"gateway-{port}.log"
    proc = subprocess.Popen([sys.executable, "-m", "reelhouse_gateway", "gateway"], env={
        **os.environ, **service_env(upstreams), "REELHOUSE_DATA_DIR": str(tmp_path / "data"),
        "REELHOUSE_PORT": str(port), "LOG_LEVEL": "WARNING", **env},
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        try:
            if requests.get(url + "/healthz", timeout=2).status_code == 200:
                return url, port, proc
        except requests.RequestException:  # not up yet
            time.sleep(0.2)


@pytest.mark.e2e
def test_stalled_clients_are_cut_off_and_hold_no_service_thread(tmp_path, upstreams):
    url, port, proc = _start_gateway(tmp_path, upstreams, CLIENT_BODY_TIMEOUT="2")
    stalled = []
    try:
        for _ in range(12):  # small bodies announced, one byte sent: read at the gateway, never forwarded
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{")
            stalled.append(sock)
        started = time.monotonic()
        assert requests.post(url + "/api/auth/login", json={"email": "a@b.c"}, timeout=10).status_code == 200
        assert time.monotonic() - started < 2  # other clients are not held up meanwhile
        sock = stalled[0]
        sock.settimeout(10)
        answer = b""
        while b"request_timeout" not in answer and (chunk := sock.recv(65536)):  # headers and body may come apart
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in answer, answer
        assert not any(s["uri"] == "/api/auth/login" and s["size"] == 1 for s in upstreams["auth"].seen)
    finally:
        for sock in stalled:
            sock.close()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


@pytest.mark.e2e
def test_websocket_tunnels_are_capped_so_http_keeps_its_threads(tmp_path, upstreams, make_config):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(64)
    accepted = []

    def hold():  # a notify stand-in that accepts upgrades and keeps them open
        while True:
            try:
                connection, _ = holder.accept()
            except OSError:
                return
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            accepted.append(connection)

    threading.Thread(target=hold, daemon=True).start()
    url, port, proc = _start_gateway(tmp_path, upstreams, REELHOUSE_THREADS="16",
                                     NOTIFY_URL=f"http://127.0.0.1:{holder.getsockname()[1]}")
    clients = []
    try:
        answers = []
        for _ in range(10):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         b"Sec-WebSocket-Version: 13\r\n\r\n")
            sock.settimeout(10)
            answers.append(sock.recv(65536).decode())
            clients.append(sock)
        switched = [a for a in answers if a.startswith("HTTP/1.1 101")]
        refused = [a for a in answers if a.startswith("HTTP/1.1 503")]
        assert len(switched) == 8 and len(refused) == 2, answers  # 16 threads: at most 8 tunnels
        for index, answer in enumerate(answers):
            if answer.startswith("HTTP/1.1 503") and "too_many" not in answer:  # the body came separately
                answers[index] = answer + clients[index].recv(65536).decode()
        refused = [a for a in answers if a.startswith("HTTP/1.1 503")]
        assert all('"too_many_connections"' in a for a in refused)
        assert requests.get(url + "/healthz", timeout=5).status_code == 200  # HTTP still has threads
    finally:
        for sock in clients + accepted:
            sock.close()
        holder.close()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def _short_upstream(size: int, sent: int, stall: float = 0.0) -> tuple[socket.socket, str]:
    """An upstream announcing `size` bytes, sending `sent` of them, then (after `stall` s) closing."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def serve():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                               + f"Content-Length: {size}\r\n\r\n".encode() + b"x" * sent)
            time.sleep(stall)
            connection.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}"


def _raw_request(port: int, head: bytes, body: bytes, *, shut: bool = False, timeout: float = 15) -> bytes:
    """Sends a head and part of a body over one socket; the gateway's whole answer (until it closes)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + body)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        sock.settimeout(timeout)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


@pytest.mark.e2e
def test_large_bodies_are_spliced_intact_over_kept_alive_connections(tmp_path, upstreams):
    """Bodies of 1 MiB and more go socket to socket (splice); a connection keeps serving requests after them."""
    url, _port, proc = _start_gateway(tmp_path, upstreams)
    try:
        with requests.Session() as session:
            for mib in (1, 8, 3):
                body = Repeated(os.urandom(256 * 1024 + 17), mib * 4)  # odd sizes: pieces never line up
                size = len(body)
                seen = session.patch(url + "/api/uploads/big", data=body, timeout=60).json()
                assert seen["size"] == size and seen["sha256"] == body.digest.hexdigest()
                with session.get(url + f"/api/stream/big/download?mib={mib}", timeout=60) as download:
                    assert download.status_code == 200
                    assert download.headers["Content-Length"] == str(mib * 1024 * 1024)
                    assert download.content == b"r" * (mib * 1024 * 1024)
                assert session.get(url + "/api/auth/ping", timeout=10).json()["service"] == "auth"
            head = session.head(url + "/api/stream/big/download?mib=2", timeout=10)
            assert head.status_code == 200 and head.content == b""
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


@pytest.mark.e2e
def test_a_spliced_body_cut_short_on_either_side(tmp_path, upstreams):
    """A client stalling or ending early mid-upload gets 408 / 400; an upstream ending early mid-download cuts
    the client's connection (a short body, never a silently truncated 200)."""
    size = 4 * 1024 * 1024
    listener, short_url = _short_upstream(size, 3 * 1024 * 1024)
    url, port, proc = _start_gateway(tmp_path, upstreams, CLIENT_BODY_TIMEOUT="2", STREAM_URL=short_url)
    try:
        head = (b"PATCH /api/uploads/cut HTTP/1.1\r\nHost: x\r\nContent-Type: application/offset+octet-stream\r\n"
                + f"Content-Length: {size}\r\n\r\n".encode())
        started = time.monotonic()
        stalled = _raw_request(port, head, b"s" * (2 * 1024 * 1024))
        assert stalled.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in stalled, stalled[:300]
        assert time.monotonic() - started < 10
        short = _raw_request(port, head, b"s" * (2 * 1024 * 1024), shut=True)
        assert short.startswith(b"HTTP/1.1 400") and b'"incomplete_body"' in short, short[:300]
        assert not any(s["uri"] == "/api/uploads/cut" for s in upstreams["upload"].seen)

        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.get(url + "/api/stream/cut", timeout=30).content  # noqa: B018 - reading is the test
        assert requests.get(url + "/api/auth/ping", timeout=10).status_code == 200  # the gateway carries on
    finally:
        listener.close()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
