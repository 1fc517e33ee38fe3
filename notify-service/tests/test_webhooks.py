"""Webhooks: registration, SSRF refusal, tenant isolation, signed delivery and retry with backoff, against a real
HTTP receiver on 127.0.0.1 (WEBHOOK_ALLOW_LOOPBACK=1)."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from notify_service import webhooks
from services.adapters.memory_events import MemoryEventBus
from services.bootstrap import bootstrap
from services.tokens import Principal
from services.web import create_base_app


class FakeVerifier:
    """Tokens are "<user_id>:<tenant_id>"; the role comes from the user record, as in production."""

    def principal(self, token: str) -> Principal:
        user_id, tenant_id = token.split(":")
        return Principal(user_id, tenant_id, "viewer")


class Receiver:
    def __init__(self, statuses: list[int] | None = None):
        self.statuses = list(statuses or [])
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                receiver.requests.append({"headers": dict(self.headers), "body": body, "at": time.monotonic()})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def build(make_config, **env):
    config = make_config(**env)
    deps = bootstrap(config, events=MemoryEventBus(), verifier=FakeVerifier())
    app = create_base_app("notify-service", deps, import_name=webhooks.__name__)
    app.config["TESTING"] = True
    dispatcher = webhooks.register(app, deps)
    return app, deps, dispatcher


@pytest.fixture
def env(make_config):
    app, deps, dispatcher = build(make_config, WEBHOOK_ALLOW_LOOPBACK=1, WEBHOOK_RETRY_BASE_SECONDS=0.3,
                                  WEBHOOK_POLL_SECONDS=0.05)
    yield app, deps
    dispatcher.stop()
    deps.close()


def user(deps, tenant_id: str, role: str) -> dict:
    email = f"{role}-{tenant_id}-{uuid.uuid4().hex[:8]}@example.com"
    record = deps.metadata.users.add({"tenant_id": tenant_id, "email": email, "role": role})
    return {"Authorization": f"Bearer {record['id']}:{tenant_id}"}


def publish_ready(deps, tenant_id: str, video_id: str = "vid1") -> None:
    deps.events.publish("video.ready", {"video_id": video_id, "tenant_id": tenant_id, "seq": 5, "ts": time.time()})


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_signed_delivery_verifies_with_the_secret_shown_once(env, receiver):
    app, deps = env
    client, admin = app.test_client(), user(deps, "t1", "admin")
    created = client.post("/api/webhooks", json={"url": receiver.url}, headers=admin)
    assert created.status_code == 201, created.json
    secret = created.json["secret"]
    assert created.json["events"] == ["video.ready", "video.failed"]
    hook_id = created.json["id"]

    publish_ready(deps, "t1")
    request = wait_for(lambda: receiver.requests and receiver.requests[0])
    headers = request["headers"]
    assert headers["Content-Type"] == "application/json"
    assert headers["Reelhouse-Event"] == "video.ready"
    sig = dict(part.split("=", 1) for part in headers["Reelhouse-Signature"].split(","))
    expected = hmac.new(secret.encode(), f"{sig['t']}.{request['body']}".encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(sig["v1"], expected)
    assert abs(int(sig["t"]) - time.time()) < 60
    body = json.loads(request["body"])
    assert body["type"] == "video.ready" and body["id"] == headers["Reelhouse-Delivery"]
    assert body["data"]["video_id"] == "vid1" and body["data"]["status"] == "ready"

    for path in ("/api/webhooks", f"/api/webhooks/{hook_id}", f"/api/webhooks/{hook_id}/deliveries"):
        answer = client.get(path, headers=admin)
        assert answer.status_code == 200
        assert secret not in answer.get_data(as_text=True)
        assert "secret" not in answer.get_data(as_text=True)
    assert client.get("/api/webhooks", headers=admin).json["total"] == 1


def test_retries_with_backoff_until_delivered(env):
    app, deps = env
    receiver = Receiver([500, 500, 200])
    try:
        client, admin = app.test_client(), user(deps, "t1", "admin")
        hook = client.post("/api/webhooks", json={"url": receiver.url, "events": ["video.ready"]}, headers=admin).json
        publish_ready(deps, "t1")

        def delivered():
            items = client.get(f"/api/webhooks/{hook['id']}/deliveries", headers=admin).json["items"]
            return items and items[0]["status"] == "delivered" and items[0]

        delivery = wait_for(delivered)
        time.sleep(1.0)  # nothing more arrives once delivered
        assert len(receiver.requests) == 3
        assert delivery["attempts"] == 3 and delivery["last_status_code"] == 200
        # The same delivery every time, after a growing delay (base 0.3 s, then 0.6 s).
        assert len({r["headers"]["Reelhouse-Delivery"] for r in receiver.requests}) == 1
        gaps = [b["at"] - a["at"] for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
        assert gaps[0] >= 0.25 and gaps[1] >= 0.5
    finally:
        receiver.close()


def test_backoff_doubles_and_is_capped():
    assert [webhooks.backoff(n, 30) for n in (1, 2, 3)] == [30, 60, 120]
    assert webhooks.backoff(20, 30) == 3600


def test_claiming_is_compare_and_set(env, receiver):
    app, deps = env
    dispatcher = app.extensions["reelhouse.webhooks"]
    dispatcher.stop()  # drive it by hand
    hook = deps.metadata.webhooks.add({"tenant_id": "t1", "url": receiver.url, "events": ["video.ready"],
                                       "secret": "s", "active": True})
    dispatcher.on_event("video.ready", {"tenant_id": "t1", "video_id": "v"})
    due = deps.metadata.webhook_deliveries.find({"webhook_id": hook["id"]}).items[0]
    assert dispatcher._claim(due, time.time()) is not None
    assert dispatcher._claim(due, time.time()) is None  # a second replica with the same stale read loses


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/hook",
    "http://0.0.0.0/hook",
    "http://[::ffff:169.254.169.254]/",
    "file:///etc/passwd",
    "ftp://example.com/hook",
    "gopher://example.com/",
])
def test_ssrf_targets_are_refused(env, url):
    app, deps = env
    answer = app.test_client().post("/api/webhooks", json={"url": url}, headers=user(deps, "t1", "admin"))
    assert answer.status_code == 422
    assert answer.json["error"]["code"] == "unsafe_url"


def test_a_name_resolving_to_link_local_is_refused(env, monkeypatch):
    app, deps = env
    monkeypatch.setattr(webhooks.socket, "getaddrinfo", lambda *a, **k: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.10.20", 80)),
    ])
    answer = app.test_client().post("/api/webhooks", json={"url": "https://innocent.example/hook"},
                                    headers=user(deps, "t1", "admin"))
    assert answer.status_code == 422 and answer.json["error"]["code"] == "unsafe_url"


def test_loopback_is_refused_without_the_flag(make_config):
    app, deps, dispatcher = build(make_config)
    try:
        for url in ("http://localhost:9/hook", "http://127.0.0.1/hook", "http://[::1]/hook"):
            answer = app.test_client().post("/api/webhooks", json={"url": url}, headers=user(deps, "t1", "admin"))
            assert answer.status_code == 422 and answer.json["error"]["code"] == "unsafe_url", url
    finally:
        dispatcher.stop()
        deps.close()


def test_validation_errors_use_the_contract_shape(env):
    app, deps = env
    client, admin = app.test_client(), user(deps, "t1", "admin")
    for body in ({}, {"url": 5}, {"url": "http://127.0.0.1/", "events": ["video.progress"]},
                 {"url": "http://127.0.0.1/", "events": []}):
        answer = client.post("/api/webhooks", json=body, headers=admin)
        assert answer.status_code == 422 and answer.json["error"]["code"] == "validation_error", body


def test_only_admins_manage_webhooks(env, receiver):
    app, deps = env
    client = app.test_client()
    hook = client.post("/api/webhooks", json={"url": receiver.url}, headers=user(deps, "t1", "admin")).json
    assert client.get("/api/webhooks").status_code == 401
    for role in ("viewer", "editor"):
        headers = user(deps, "t1", role)
        assert client.post("/api/webhooks", json={"url": receiver.url}, headers=headers).status_code == 403
        assert client.get("/api/webhooks", headers=headers).status_code == 403
        assert client.delete(f"/api/webhooks/{hook['id']}", headers=headers).status_code == 403
        answer = client.get(f"/api/webhooks/{hook['id']}/deliveries", headers=headers)
        assert answer.status_code == 403 and answer.json["error"]["code"] == "forbidden"


def test_another_tenants_webhook_is_not_found(env, receiver):
    app, deps = env
    client = app.test_client()
    hook = client.post("/api/webhooks", json={"url": receiver.url}, headers=user(deps, "t1", "admin")).json
    other = user(deps, "t2", "admin")
    for method, path in (("get", f"/api/webhooks/{hook['id']}"), ("delete", f"/api/webhooks/{hook['id']}"),
                         ("get", f"/api/webhooks/{hook['id']}/deliveries")):
        answer = getattr(client, method)(path, headers=other)
        assert answer.status_code == 404 and answer.json["error"]["code"] == "not_found"
    assert client.get("/api/webhooks", headers=other).json["total"] == 0
    admin = user(deps, "t1", "admin")
    assert client.delete(f"/api/webhooks/{hook['id']}", headers=admin).status_code == 204
    assert client.get(f"/api/webhooks/{hook['id']}", headers=admin).status_code == 404


def test_other_tenants_videos_never_reach_this_tenants_hooks(env, receiver):
    app, deps = env
    client = app.test_client()
    other_receiver = Receiver()
    try:
        mine = client.post("/api/webhooks", json={"url": receiver.url}, headers=user(deps, "t1", "admin")).json
        client.post("/api/webhooks", json={"url": other_receiver.url}, headers=user(deps, "t2", "admin"))
        publish_ready(deps, "t2", "theirs")
        wait_for(lambda: other_receiver.requests)
        deps.events.publish("video.failed", {"video_id": "mine", "tenant_id": "t1", "error": "bad file"})
        wait_for(lambda: receiver.requests)
        time.sleep(0.3)
        assert [json.loads(r["body"])["data"]["video_id"] for r in receiver.requests] == ["mine"]
        assert json.loads(receiver.requests[0]["body"])["data"]["error"] == "bad file"
        assert [json.loads(r["body"])["data"]["video_id"] for r in other_receiver.requests] == ["theirs"]
        deliveries = client.get(f"/api/webhooks/{mine['id']}/deliveries", headers=user(deps, "t1", "admin")).json
        assert [d["video_id"] for d in deliveries["items"]] == ["mine"]
    finally:
        other_receiver.close()


def test_progress_events_and_unsubscribed_types_create_no_delivery(env, receiver):
    app, deps = env
    client = app.test_client()
    client.post("/api/webhooks", json={"url": receiver.url, "events": ["video.failed"]},
                headers=user(deps, "t1", "admin"))
    deps.events.publish("video.progress", {"video_id": "v", "tenant_id": "t1", "percent": 10})
    publish_ready(deps, "t1")
    time.sleep(0.3)
    assert receiver.requests == []
    assert deps.metadata.webhook_deliveries.find().total == 0


def test_address_is_checked_again_at_delivery_time(env, receiver, monkeypatch):
    app, deps = env
    client, admin = app.test_client(), user(deps, "t1", "admin")
    hook = client.post("/api/webhooks", json={"url": receiver.url}, headers=admin).json
    # DNS rebinding: the name now answers with the metadata address.
    monkeypatch.setattr(webhooks.socket, "getaddrinfo", lambda *a, **k: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 80))])
    publish_ready(deps, "t1")

    def attempted():
        items = client.get(f"/api/webhooks/{hook['id']}/deliveries", headers=admin).json["items"]
        return items and items[0]["attempts"] >= 1 and items[0]["last_error"] and items[0]

    delivery = wait_for(attempted)
    assert "metadata" in delivery["last_error"] and delivery["status"] == "pending"
    assert receiver.requests == []


def test_the_connection_goes_to_the_checked_address_not_a_later_dns_answer(env, receiver, monkeypatch):
    """DNS rebinding after the check: the name answers a safe address while checked, then another one; the POST
    still reaches the checked address (pinned), with the URL's host name in the Host header."""
    app, deps = env
    client, admin = app.test_client(), user(deps, "t1", "admin")
    port = receiver.server.server_address[1]
    real_getaddrinfo = socket.getaddrinfo
    lookups = []

    def resolver(host, *args, **kwargs):
        if host != "hooks.example":
            return real_getaddrinfo(host, *args, **kwargs)
        lookups.append(host)
        # the registration check and the delivery check see loopback; any lookup after them sees TEST-NET-1
        address = "127.0.0.1" if len(lookups) <= 2 else "192.0.2.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", resolver)
    hook = client.post("/api/webhooks", json={"url": f"http://hooks.example:{port}/hook"}, headers=admin)
    assert hook.status_code == 201, hook.json
    publish_ready(deps, "t1")
    wait_for(lambda: receiver.requests)
    assert receiver.requests[0]["headers"]["Host"] == f"hooks.example:{port}"
    assert len(lookups) == 2  # nothing resolved the name again after the check
    assert wait_for(lambda: client.get(f"/api/webhooks/{hook.json['id']}/deliveries", headers=admin)
                    .json["items"][0]["status"] == "delivered")


def test_pinned_adapter_keeps_the_host_name_for_tls():
    adapter = webhooks.PinnedAdapter("127.0.0.1")
    pool = adapter.poolmanager.connection_from_url("https://hooks.example:8443/x")
    connection = pool._new_conn()
    assert connection.pinned_address == "127.0.0.1" and connection.host == "hooks.example"


def test_webhook_settings_come_from_the_environment(make_config):
    config = make_config(WEBHOOK_ALLOW_LOOPBACK=1, WEBHOOK_RETRY_BASE_SECONDS=0.5)
    assert config.webhook_allow_loopback is True and config.webhook_retry_base == 0.5
    default = make_config()
    assert default.webhook_allow_loopback is False and default.webhook_retry_base == 30.0
