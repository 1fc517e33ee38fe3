"""Tenant isolation, generated from the route table: every route of the embedded app (every service's Flask
url_map, as the gateway mounts them) is called against a running `reelhouse up` with another tenant's tokens
and with a viewer's; a route the matrix does not know fails the test, so a new endpoint cannot escape it.

Two tenants, A and B, each with an admin, an editor and a viewer, a ready (unlisted, shared) video, an
unfinished upload and a webhook. B's tokens on A's ids → 404 (README: another tenant's record answers 404,
never 403); write endpoints with a viewer's token → 403; no response to B and no event on B's Socket.IO
connection ever carries one of A's ids, names, titles or emails.
"""

from __future__ import annotations

import base64
import re
import time
import uuid
from dataclasses import dataclass, field

import pytest
import requests

from services.testing import STRONG_PASSWORD, EventListener, ReelhouseProcess, assert_error, make_clip
from services.tokens import ROLES

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

TIMEOUT = 30


@dataclass
class Tenant:
    name: str
    url: str
    tokens: dict[str, str] = field(default_factory=dict)  # role → access token
    users: dict[str, dict] = field(default_factory=dict)  # role → user
    tenant: dict = field(default_factory=dict)
    video: dict = field(default_factory=dict)  # ready, unlisted, with a share link
    upload_id: str = ""  # an unfinished tus upload
    webhook: dict = field(default_factory=dict)
    title: str = ""

    def call(self, method: str, path: str, role: str | None = "admin", **kwargs) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if role:
            headers["Authorization"] = f"Bearer {self.tokens[role]}"
        return requests.request(method, self.url + path, headers=headers, timeout=TIMEOUT, **kwargs)

    def markers(self) -> set[str]:
        """Strings that must never reach another tenant."""
        found = {self.tenant["id"], self.tenant["name"], self.video["id"], self.title, self.upload_id,
                 self.webhook["id"], self.webhook["url"]}
        for user in self.users.values():
            found |= {user["id"], user["email"]}
        return found


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _create_upload(tenant: Tenant, length: int, title: str, visibility: str) -> str:
    created = tenant.call("POST", "/api/uploads", "editor", headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": str(length),
        "Upload-Metadata": f"title {_b64(title)},visibility {_b64(visibility)},filename {_b64('clip.mp4')}"})
    assert created.status_code == 201, created.text
    return created.headers["Location"].rsplit("/", 1)[1]


def _upload(tenant: Tenant, clip: bytes, title: str) -> str:
    upload_id = _create_upload(tenant, len(clip), title, "unlisted")
    done = tenant.call("PATCH", f"/api/uploads/{upload_id}", "editor", data=clip, headers={
        "Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert done.status_code == 204, done.text
    return upload_id


def _wait_ready(tenant: Tenant, video_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        video = tenant.call("GET", f"/api/videos/{video_id}").json()
        if video["status"] == "ready":
            return video
        assert video["status"] != "failed", video
        time.sleep(0.5)
    raise AssertionError(f"{video_id} not ready within {timeout} s")


def _make_tenant(url: str, label: str) -> Tenant:
    tag = uuid.uuid4().hex[:8]
    tenant = Tenant(label, url, title=f"{label} confidential {tag}")
    body = requests.post(url + "/api/auth/register", timeout=TIMEOUT, json={
        "tenant_name": f"Tenant {label} {tag}", "email": f"admin-{tag}@{label.lower()}.test",
        "password": STRONG_PASSWORD}).json()
    tenant.tenant, tenant.users["admin"], tenant.tokens["admin"] = body["tenant"], body["user"], body["access_token"]
    for role in ("editor", "viewer"):
        email = f"{role}-{tag}@{label.lower()}.test"
        created = tenant.call("POST", "/api/auth/users", json={"email": email, "password": STRONG_PASSWORD,
                                                               "role": role})
        assert created.status_code == 201, created.text
        tenant.users[role] = created.json()
        login = requests.post(url + "/api/auth/login", json={"email": email, "password": STRONG_PASSWORD},
                              timeout=TIMEOUT)
        tenant.tokens[role] = login.json()["access_token"]
    hook = tenant.call("POST", "/api/webhooks", json={"url": f"http://127.0.0.1:9/hook-{tag}",
                                                      "events": ["video.ready"]})
    assert hook.status_code == 201, hook.text
    tenant.webhook = hook.json()
    return tenant


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A running `reelhouse up`, tenants A and B, and B's Socket.IO listener that saw all of A's activity."""
    tmp = tmp_path_factory.mktemp("isolation")
    clip = make_clip(tmp / "clip.mp4", 1, "160x90").read_bytes()
    server = ReelhouseProcess(tmp / "data", AUTH_LOGIN_RATE_LIMIT="1000 per minute",
                              AUTH_REGISTER_RATE_LIMIT="1000 per hour", WEBHOOK_ALLOW_LOOPBACK="1")
    listener = None
    try:
        a, b = _make_tenant(server.url, "A"), _make_tenant(server.url, "B")
        listener = EventListener(server.url, b.tokens["admin"])  # before A does anything with videos
        for tenant in (a, b):
            video_id = _upload(tenant, clip, tenant.title)
            tenant.upload_id = _create_upload(tenant, 10_000, f"{tenant.title} draft", "tenant")
            tenant.video = _wait_ready(tenant, video_id)
            share = tenant.call("POST", f"/api/videos/{video_id}/share", "editor")
            assert share.status_code == 200, share.text
        time.sleep(1)  # events of the last transcode are fanned out after the record turns ready
        yield {"server": server, "a": a, "b": b, "listener": listener}
    finally:
        if listener is not None:
            listener.close()
        server.stop()


# --- the route table ---------------------------------------------------------------------------------------

def app_routes() -> set[tuple[str, str]]:
    """(method, rule) of every route the embedded gateway serves: the gateway's own and every mounted service's."""
    import tempfile
    from pathlib import Path

    from reelhouse_gateway import create_app
    from services.config import Config

    with tempfile.TemporaryDirectory() as data:
        app = create_app(Config.from_env({"REELHOUSE_DATA_DIR": str(Path(data) / "data")}))
        try:
            apps = [app, *app.extensions["reelhouse.services"].values()]
            return {(method, rule.rule) for one in apps for rule in one.url_map.iter_rules()
                    for method in _methods(rule.methods)}
        finally:
            app.extensions["reelhouse"].close()


def _methods(methods: set[str]) -> set[str]:
    """The methods a rule was written for: Flask adds HEAD to GET rules and OPTIONS to all of them."""
    written = methods - {"OPTIONS", "HEAD"}
    return written or (methods - {"OPTIONS"}) or {"OPTIONS"}


# How the matrix treats each route. `id`: which of A's records fills the path; `writer`: the least role that may
# write (a viewer must get 403); `public`: answers without a token (no tenant data may show in it).
ID_ROUTES = {
    ("GET", "/api/auth/users/<user_id>"): {"id": "user", "writer": "admin"},
    ("PATCH", "/api/auth/users/<user_id>"): {"id": "user", "writer": "admin", "json": {"role": "admin"}},
    ("DELETE", "/api/auth/users/<user_id>"): {"id": "user", "writer": "admin"},
    ("OPTIONS", "/api/uploads/<upload_id>"): {"id": "upload", "public": True},
    ("HEAD", "/api/uploads/<upload_id>"): {"id": "upload", "tus": True, "reader": "editor"},
    ("PATCH", "/api/uploads/<upload_id>"): {"id": "upload", "writer": "editor", "tus": True},
    ("DELETE", "/api/uploads/<upload_id>"): {"id": "upload", "writer": "editor", "tus": True},
    ("GET", "/api/videos/<video_id>"): {"id": "video"},
    ("PATCH", "/api/videos/<video_id>"): {"id": "video", "writer": "editor", "json": {"title": "stolen"}},
    ("DELETE", "/api/videos/<video_id>"): {"id": "video", "writer": "editor"},
    ("POST", "/api/videos/<video_id>/share"): {"id": "video", "writer": "editor"},
    ("GET", "/api/stream/<video_id>/original"): {"id": "video"},
    ("GET", "/api/stream/<video_id>/hls/master.m3u8"): {"id": "video"},
    ("GET", "/api/stream/<video_id>/hls/<rendition>/<filename>"): {"id": "video"},
    ("GET", "/api/stream/<video_id>/thumbnail.jpg"): {"id": "video"},
    ("GET", "/api/stream/<video_id>/poster.jpg"): {"id": "video"},
    ("GET", "/api/stream/<video_id>/storyboard.jpg"): {"id": "video"},
    ("GET", "/api/stream/<video_id>/storyboard.vtt"): {"id": "video"},
    ("GET", "/api/webhooks/<webhook_id>"): {"id": "webhook", "writer": "admin"},
    ("DELETE", "/api/webhooks/<webhook_id>"): {"id": "webhook", "writer": "admin"},
    ("GET", "/api/webhooks/<webhook_id>/deliveries"): {"id": "webhook", "writer": "admin"},
}
TENANT_ROUTES = {  # no id: they answer with the caller's own tenant's data
    ("GET", "/api/auth/me"): {},
    ("GET", "/api/auth/users"): {"writer": "admin"},
    ("POST", "/api/auth/users"): {"writer": "admin", "json": {"email": "x@y.test", "password": STRONG_PASSWORD,
                                                               "role": "viewer"}},
    ("GET", "/api/videos"): {},
    ("POST", "/api/uploads"): {"writer": "editor", "tus_create": True},
    ("GET", "/api/webhooks"): {"writer": "admin"},
    ("POST", "/api/webhooks"): {"writer": "admin", "json": {"url": "http://127.0.0.1:9/x", "events": ["video.ready"]}},
}
PUBLIC_ROUTES = {  # no tenant data behind them; credentials endpoints are attacked in test_token_attacks.py
    ("POST", "/api/auth/register"): {"json": {}},
    ("POST", "/api/auth/login"): {"json": {}},
    ("POST", "/api/auth/refresh"): {"json": {}},
    ("POST", "/api/auth/logout"): {"json": {}},
    ("GET", "/api/auth/.well-known/jwks.json"): {},
    ("OPTIONS", "/api/uploads"): {},
    ("GET", "/healthz"): {}, ("GET", "/readyz"): {}, ("GET", "/metrics"): {},
    ("GET", "/static/<path:filename>"): {"path": "/static/app.js"},
    ("GET", "/api/openapi.json"): {}, ("GET", "/api/docs"): {},
    ("GET", "/api/docs/assets/<name>"): {"path": "/api/docs/assets/init.js"},
    ("GET", "/"): {}, ("GET", "/<path:path>"): {"path": "/watch"},
}
KNOWN = {**ID_ROUTES, **TENANT_ROUTES, **PUBLIC_ROUTES}


def _path(rule: str, owner: Tenant, kind: str | None, rendition: str = "360p/index.m3u8") -> str:
    ids = {"user": owner.users["editor"]["id"], "upload": owner.upload_id, "video": owner.video["id"],
           "webhook": owner.webhook["id"]}
    path = rule.replace("<rendition>/<filename>", rendition)
    return re.sub(r"<(?:\w+:)?\w+>", ids[kind] if kind else "x", path)


def _request(tenant: Tenant, method: str, path: str, role: str | None, spec: dict) -> requests.Response:
    headers, kwargs = {}, {}
    if spec.get("tus") or spec.get("tus_create"):
        headers = {"Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
                   "Upload-Length": "100"}
        kwargs["data"] = b"x" * 10 if method == "PATCH" else None
    if "json" in spec:
        kwargs["json"] = spec["json"]
    return tenant.call(method, path, role, headers=headers, **kwargs)


def _assert_nothing_of(owner: Tenant, response: requests.Response, sent_path: str) -> None:
    """Neither body nor headers carry one of the owner's markers (beyond the id the caller itself sent)."""
    text = response.text + " " + " ".join(f"{k}: {v}" for k, v in response.headers.items())
    leaked = {m for m in owner.markers() if m and m not in sent_path and m in text}
    assert not leaked, (response.request.method, sent_path, response.status_code, leaked)


def test_the_matrix_knows_every_route():
    unknown = app_routes() - set(KNOWN)
    assert not unknown, f"routes the isolation matrix does not cover (add them to test_tenant_isolation.py): {unknown}"
    assert not set(KNOWN) - app_routes(), "routes in the matrix that no longer exist"


def test_another_tenants_ids_answer_404_and_leak_nothing(world):
    a, b = world["a"], world["b"]
    checked = 0
    for (method, rule), spec in sorted(ID_ROUTES.items(), key=lambda item: item[0][0] == "DELETE"):
        if spec.get("public"):
            continue
        path = _path(rule, a, spec["id"])
        for role in ("admin", "editor", "viewer"):
            response = _request(b, method, path, role, spec)
            assert response.status_code in (403, 404), (method, path, role, response.status_code, response.text)
            if response.status_code == 403:  # a role check may come first, but only for a role below the route's
                least = spec.get("writer") or spec.get("reader")
                assert least and ROLES.index(role) < ROLES.index(least), (method, path, role)
            if method != "HEAD":  # a HEAD answer has no body to carry the error
                assert_error(response, response.status_code)
            _assert_nothing_of(a, response, path)
            checked += 1
    # and A's records are untouched by B's attempts:
    assert a.call("GET", f"/api/videos/{a.video['id']}").json()["title"] == a.title
    assert a.call("GET", f"/api/auth/users/{a.users['editor']['id']}").json()["role"] == "editor"
    assert a.call("GET", f"/api/webhooks/{a.webhook['id']}").status_code == 200
    assert a.call("HEAD", f"/api/uploads/{a.upload_id}", "editor", headers={"Tus-Resumable": "1.0.0"}
                  ).status_code == 200
    assert checked >= 50


def test_a_shared_or_playback_token_of_a_does_not_open_bs_video(world):
    a, b = world["a"], world["b"]
    a_token = re.search(r"token=([^&]+)", a.video["playback"]["hls_url"]).group(1)
    for route in ("original", "hls/master.m3u8", "thumbnail.jpg"):
        response = requests.get(f"{b.url}/api/stream/{b.video['id']}/{route}", params={"token": a_token},
                                timeout=TIMEOUT)
        assert_error(response, 403, "token_scope")
        _assert_nothing_of(a, response, "")


def test_tenant_routes_show_only_the_callers_tenant(world):
    a, b = world["a"], world["b"]
    for (method, rule), spec in TENANT_ROUTES.items():
        for role in ("admin", "editor", "viewer"):
            response = _request(b, method, rule, role, spec)
            writer = spec.get("writer")
            if writer and role != "admin" and (writer == "admin" or role == "viewer"):
                assert_error(response, 403, "forbidden")
            else:
                assert response.status_code < 400 or response.status_code == 409, (method, rule, role, response.text)
            _assert_nothing_of(a, response, "")
    listed = [v["id"] for v in b.call("GET", "/api/videos").json()["items"]]
    assert b.video["id"] in listed and a.video["id"] not in listed


def test_public_routes_carry_no_tenant_data(world):
    a, b = world["a"], world["b"]
    for (method, rule), spec in PUBLIC_ROUTES.items():
        path = spec.get("path", rule)
        for role in (None, "admin"):
            response = _request(b, method, path, role, spec)
            assert response.status_code < 500, (method, path, response.status_code)
            _assert_nothing_of(a, response, "")


def test_every_write_endpoint_refuses_a_viewer(world):
    b = world["b"]
    writes = {key: spec for key, spec in KNOWN.items() if spec.get("writer")}
    for (method, rule), spec in writes.items():
        path = _path(rule, b, spec.get("id"))
        response = _request(b, method, path, "viewer", spec)
        assert_error(response, 403, "forbidden")
        if spec["writer"] == "admin":
            assert_error(_request(b, method, path, "editor", spec), 403, "forbidden")
    assert b.call("GET", f"/api/videos/{b.video['id']}").json()["title"] == b.title  # nothing was written
    assert len(writes) >= 13


def test_bs_socket_never_hears_of_as_videos(world):
    a, b, listener = world["a"], world["b"], world["listener"]
    with listener.lock:
        events = list(listener.events)
    assert any(data.get("video_id") == b.video["id"] for _, data in events), "B's own events must arrive"
    leaked = [(name, data) for name, data in events if any(m in repr(data) for m in a.markers() if m)]
    assert not leaked, leaked
    for video_id in (a.video["id"], a.upload_id):
        answer = listener.client.call("subscribe", {"video_id": video_id}, timeout=10)
        assert answer.get("error", {}).get("code") == "not_found", answer
    mine = listener.client.call("subscribe", {"video_id": b.video["id"]}, timeout=10)
    assert mine == {"ok": True, "video_id": b.video["id"]}
