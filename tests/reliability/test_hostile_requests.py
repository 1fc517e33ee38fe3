"""Hostile headers and parameters against a running `reelhouse up`: oversized headers and request lines, non-UTF-8
metadata, ids with `../` in every id-bearing route, absurd paging, JSON bombs. Each → 4xx in the error shape
(never 5xx, never a stack trace, never a file from outside the API), quickly, and the server keeps serving."""

from __future__ import annotations

import base64
import http.client
import json
import time
from urllib.parse import quote

import pytest
import requests

from services.testing import ReelhouseProcess, register_account, rss_kib

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

HOSTILE_IDS = ("..", "%2e%2e", "..%2f..%2fkeys%2fplayback.key", "%2e%2e%2f%2e%2e%2fkeys%2fjwt-ed25519.pem",
               "..%5c..%5ckeys", "%2e%2e%2f", "%00", "%ff%fe", "a" * 300, "..%252f..%252fetc%252fpasswd")
JSON_BOMBS = {
    "arrays nested 100k deep": b"[" * 100_000 + b"]" * 100_000,
    "objects nested 50k deep": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "number 1e999999": b'{"title": 1e999999, "email": 1e999999, "url": 1e999999}',
    "integer of 5000 digits": b'{"title": ' + b"9" * 5000 + b"}",
    "NaN": b'{"title": NaN, "password": NaN}',
    "string of 60 KiB": json.dumps({"title": "x" * 60_000, "email": "x" * 60_000}).encode()[:65_000],
    "string of 2 MiB": json.dumps({"title": "x" * 2 * 1024 * 1024}).encode(),
    "duplicate keys": b'{"title": "a", "title": {"nested": []}, "role": "admin", "role": "owner"}',
    "invalid UTF-8": b'{"title": "\xff\xfe\xc3("}',
    "lone surrogate": b'{"title": "\\ud800"}',
    "not an object": b'[1, 2, 3]',
    "5000 keys": json.dumps({f"k{i}": i for i in range(5000)}).encode(),
}
JSON_ROUTES = (("POST", "/api/auth/register"), ("POST", "/api/auth/login"), ("POST", "/api/auth/refresh"),
               ("POST", "/api/auth/logout"), ("POST", "/api/auth/users"), ("PATCH", "/api/auth/users/{user}"),
               ("PATCH", "/api/videos/{video}"), ("POST", "/api/webhooks"))
SECRET_MARKERS = (b"PRIVATE KEY", b"root:x:0:0", b"[project]")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    process = ReelhouseProcess(tmp / "data")
    try:
        admin = register_account(process.url)
        yield {"url": process.url, "port": process.port, "token": admin["token"], "user": admin["user"]["id"],
               "pid": process.proc.pid, "data": tmp / "data",
               "video": _upload_stub(process.url, admin["token"]), "secrets": _secrets(tmp / "data")}
    finally:
        process.stop()


def _upload_stub(url: str, token: str) -> str:
    """An unfinished upload: a real video id for the routes that take one."""
    response = requests.post(url + "/api/uploads", timeout=30, headers={
        "Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0", "Upload-Length": "100"})
    assert response.status_code == 201, response.text
    return response.headers["Location"].rsplit("/", 1)[1]


def _secrets(data_dir) -> list[bytes]:
    """What must never come out in a response: the signing keys' contents."""
    return [path.read_bytes().strip() for path in (data_dir / "keys").iterdir() if path.is_file()]


def raw_request(port: int, method: str, path: str, headers: dict | None = None, body: bytes = b"",
                timeout: float = 30) -> tuple[int, dict, bytes]:
    """One request sent exactly as given (http.client keeps `..` and percent-encodings that requests
    would normalise); the status, headers and body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            connection.putheader(name, value)
        connection.endheaders(body or None)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def assert_error_shape(status: int, headers: dict, body: bytes, context: str, secrets=()) -> dict:
    """A 4xx in the contract's error shape, nothing leaked."""
    assert 400 <= status < 500, (context, status, body[:300])
    assert headers.get("Content-Type", "").startswith("application/json"), (context, headers, body[:300])
    error = json.loads(body)["error"]
    assert isinstance(error["code"], str) and error["code"] and isinstance(error["message"], str), (context, body)
    for secret in (*SECRET_MARKERS, *secrets):
        assert secret not in body, (context, "leaked", body[:300])
    assert b"Traceback" not in body, context
    return error


def assert_healthy(server: dict) -> None:
    assert requests.get(server["url"] + "/healthz", timeout=10).status_code == 200
    me = requests.get(server["url"] + "/api/auth/me", timeout=10, headers=_auth(server))
    assert me.status_code == 200, me.text


def _auth(server: dict) -> dict:
    return {"Authorization": f"Bearer {server['token']}"}


@pytest.mark.parametrize(("name", "headers", "path", "status", "code"), [
    ("one 64 KiB header", {"X-Big": "a" * 65536}, "/api/videos", 431, "request_header_fields_too_large"),
    ("an 8 KiB Authorization", {"Authorization": "Bearer " + "a" * 8200}, "/api/videos", 431,
     "request_header_fields_too_large"),
    ("200 headers", {f"X-Header-{i}": "v" for i in range(200)}, "/api/videos", 431,
     "request_header_fields_too_large"),
    ("a 10 KiB request line", {}, "/api/videos?q=" + "a" * 10240, 414, "uri_too_long"),
    ("a header that is not a header", {"Bad Header Name": "x"}, "/api/videos", 400, "bad_request"),
])
def test_oversized_or_malformed_headers_get_the_error_shape(server, name, headers, path, status, code):
    started = time.monotonic()
    got, response_headers, body = raw_request(server["port"], "GET", path, {**_auth(server), **headers})
    assert got == status, (name, got, body[:300])
    assert assert_error_shape(got, response_headers, body, name)["code"] == code
    assert "gunicorn" not in response_headers.get("Server", "").lower()
    assert time.monotonic() - started < 10
    assert_healthy(server)


@pytest.mark.parametrize(("name", "metadata"), [
    ("not base64", "title !!!not-base64!!!"),
    ("base64 of invalid UTF-8", "title " + base64.b64encode(b"\xff\xfe\xc3(").decode()),
    ("raw Latin-1 bytes", "title \xe9t\xe9"),
    ("a key twice", "title YQ==,title Yg=="),
    ("base64 of a lone surrogate", "title " + base64.b64encode("\ud800".encode("utf-8", "surrogatepass")).decode()),
])
def test_non_utf8_upload_metadata_is_refused(server, name, metadata):
    status, headers, body = raw_request(server["port"], "POST", "/api/uploads", {
        **_auth(server), "Tus-Resumable": "1.0.0", "Upload-Length": "100", "Upload-Metadata": metadata})
    assert status == 400, (name, status, body)
    assert assert_error_shape(status, headers, body, name)["code"] == "invalid_metadata"


def test_control_characters_and_paths_in_metadata_are_only_text(server):
    """A NUL, bidi overrides and `../` in a file name or title: kept as display text, never a path."""
    hostile = "../../\x00\u202eevil\x07" + "x" * 500
    encoded = base64.b64encode(hostile.encode()).decode()
    created = requests.post(server["url"] + "/api/uploads", timeout=30, headers={
        **_auth(server), "Tus-Resumable": "1.0.0", "Upload-Length": "100",
        "Upload-Metadata": f"filename {encoded},title {encoded}"})
    assert created.status_code == 201, created.text
    video = requests.get(server["url"] + created.headers["Location"].replace("/api/uploads/", "/api/videos/"),
                         headers=_auth(server), timeout=30).json()
    for text in (video["title"], video["filename"] or ""):
        assert "\x00" not in text and "\u202e" not in text and "\x07" not in text and len(text) <= 255, text
    named = [path for path in server["data"].parent.rglob("*") if "evil" in path.name]
    assert not named, named  # no file anywhere was named after the metadata


def test_invalid_utf8_title_in_a_json_patch_is_refused(server):
    for body in (b'{"title": "\xff\xfe"}', b'{"title": "\\udc80"}'):
        status, headers, answer = raw_request(server["port"], "PATCH", f"/api/videos/{server['video']}", {
            **_auth(server), "Content-Type": "application/json"}, body)
        assert_error_shape(status, headers, answer, repr(body))


def _id_routes(server: dict) -> list[tuple[str, str]]:
    """Every (method, path template) of the spec with a path parameter: the route table, not a hand list."""
    spec = requests.get(server["url"] + "/api/openapi.json", timeout=30).json()
    methods = ("get", "head", "post", "patch", "delete", "options")
    return [(method.upper(), path) for path, item in spec["paths"].items() if "{" in path
            for method in item if method in methods]


def test_traversal_ids_in_every_id_bearing_route(server):
    routes = _id_routes(server)
    assert len(routes) >= 20, routes
    tried = 0
    for method, template in routes:
        for hostile in HOSTILE_IDS:
            path = _fill(template, hostile)
            status, headers, body = raw_request(server["port"], method, path, {
                **_auth(server), "Tus-Resumable": "1.0.0", "Content-Type": "application/json"},
                b"{}" if method in ("POST", "PATCH") else b"")
            context = f"{method} {path}"
            if method == "HEAD" or (method == "OPTIONS" and status == 204):
                assert status in (204, 404, 405), (context, status)  # no body to check
            else:
                assert_error_shape(status, headers, body, context, server["secrets"])
            tried += 1
    print(f"{tried} hostile id requests over {len(routes)} routes")
    assert_healthy(server)


def _fill(template: str, hostile: str) -> str:
    """Every path parameter of `template` replaced by `hostile`."""
    path = template
    while "{" in path:
        start, end = path.index("{"), path.index("}")
        path = path[:start] + hostile + path[end + 1:]
    return path


def test_traversal_outside_the_api_never_reads_files(server):
    for path in ("/api/videos/../../keys/playback.key", "/api/stream/../../keys/jwt-ed25519.pem",
                 "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fpyproject.toml", "/_next/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
                 f"/api/stream/{server['video']}/hls/..%2f..%2f..%2fkeys/playback.key",
                 "/api/docs/../../../../etc/passwd", "//etc/passwd", "/api/stream//etc/passwd"):
        status, _, body = raw_request(server["port"], "GET", path, _auth(server))
        assert status < 500, (path, status)
        for secret in (*SECRET_MARKERS, *server["secrets"]):
            assert secret not in body, (path, body[:200])


@pytest.mark.parametrize("value", [str(10**30), "1" * 4000, "-1", "0", "abc", "1e3", "0x10", "1.5", "١٢", " 1",
                                   "%00", "9" * 20])
def test_absurd_paging_is_a_validation_error(server, value):
    spec = requests.get(server["url"] + "/api/openapi.json", timeout=30).json()
    listed = [path for path, item in spec["paths"].items()
              if any(p.get("name") == "per_page" for p in item.get("get", {}).get("parameters", []))]
    assert {"/api/videos", "/api/auth/users", "/api/webhooks"} <= set(listed), listed
    for path in listed:
        for name in ("page", "per_page"):
            query = f"{name}={quote(value, safe='%')}"
            status, headers, body = raw_request(server["port"], "GET", f"{path}?{query}", _auth(server))
            if "{" in path:
                assert_error_shape(status, headers, body, f"{path}?{query}")  # 404 or 422, either way the shape
            else:
                assert status == 422, (path, query, status, body[:200])
                assert_error_shape(status, headers, body, f"{path}?{query}")


def test_json_bombs_are_refused_quickly_with_bounded_memory(server):
    rss_before = rss_kib(server["pid"])
    slowest = 0.0
    for name, bomb in JSON_BOMBS.items():
        for method, template in JSON_ROUTES:
            path = template.format(user=server["user"], video=server["video"])
            started = time.monotonic()
            status, headers, body = raw_request(server["port"], method, path, {
                **_auth(server), "Content-Type": "application/json"}, bomb)
            elapsed = time.monotonic() - started
            slowest = max(slowest, elapsed)
            assert_error_shape(status, headers, body, f"{name} → {method} {path}")
            assert elapsed < 10, (name, method, path, elapsed)
    growth = (rss_kib(server["pid"]) - rss_before) / 1024
    print(f"{len(JSON_BOMBS)} bombs × {len(JSON_ROUTES)} routes: slowest {slowest:.2f} s, RSS growth {growth:.1f} MiB")
    assert growth < 100, growth
    assert_healthy(server)


def test_hostile_requests_through_the_cluster_edge(tmp_path):
    """The same refusals through `make cluster`: nginx (the edge), then `reelhouse gateway`, then the services;
    whichever layer refuses answers in the error shape."""
    from services.testing import ClusterDeployment

    cluster = ClusterDeployment(tmp_path, store="local")
    try:
        port = int(cluster.url.rsplit(":", 1)[1])
        token = register_account(cluster.url)["token"]
        auth = {"Authorization": f"Bearer {token}"}
        for name, headers, path, status in (
                ("64 KiB header, refused by nginx", {"X-Big": "a" * 65536}, "/api/videos", 431),
                ("10 KiB request line, refused by nginx", {}, "/api/videos?q=" + "a" * 10240, 414),
                ("200 headers, refused by the gateway", {f"X-Header-{i}": "v" for i in range(200)}, "/api/videos",
                 431),
                ("traversal id", {}, "/api/videos/%2e%2e%2f%2e%2e%2fkeys/share", 404),
                ("absurd page", {}, f"/api/videos?page={10**30}", 422)):
            got, response_headers, body = raw_request(port, "GET", path, {**auth, **headers})
            assert got == status, (name, got, body[:300])
            assert_error_shape(got, response_headers, body, name)
            assert "nginx" not in response_headers.get("Server", "") or "/" not in response_headers["Server"]
        for name, bomb in JSON_BOMBS.items():
            got, response_headers, body = raw_request(port, "PATCH", "/api/videos/nothing", {
                **auth, "Content-Type": "application/json"}, bomb)
            assert_error_shape(got, response_headers, body, f"{name} through the cluster")
            # and the request after it (not retried by the gateway: it has a body) is served normally
            got, response_headers, body = raw_request(port, "PATCH", "/api/videos/nothing", {
                **auth, "Content-Type": "application/json"}, b'{"title": "next"}')
            assert got == 404, (name, "the next request", got, body[:200])
        assert requests.get(cluster.url + "/api/auth/me", headers=auth, timeout=10).status_code == 200
    finally:
        cluster.stop()
