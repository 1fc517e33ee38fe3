"""The embedded gateway: routing, ops endpoints, OpenAPI completeness, docs, web app, JSON logs."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import re

import pytest
from flask import Flask
from openapi_schema_validator import OAS31Validator
from openapi_schema_validator import validate as validate_schema
from openapi_spec_validator import validate

from reelhouse_gateway import create_app
from services.bootstrap import bootstrap
from services.logs import configure_logging
from services.testing import assert_error


def test_healthz_and_readyz(client):
    assert client.get("/healthz").get_json() == {"status": "ok", "service": "gateway"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"metadata": "ok", "objects": "ok", "jobs": "ok", "events": "ok"}


def test_readyz_reports_a_broken_dependency(config):
    deps = bootstrap(config)

    def broken():
        raise ConnectionError("database unreachable")

    deps.metadata.ping = broken
    response = create_app(deps=deps).test_client().get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["error"]["code"] == "not_ready"
    assert body["checks"]["metadata"] == "unavailable (ConnectionError)" and body["checks"]["objects"] == "ok"
    assert "database unreachable" not in response.get_data(as_text=True)  # the detail stays in the log


def test_metrics_count_requests_per_service(client):
    client.get("/api/auth/.well-known/jwks.json")
    client.get("/healthz")
    text = client.get("/metrics").get_data(as_text=True)
    assert re.search(r'reelhouse_http_requests_total\{method="GET",route="/api/auth/.well-known/jwks.json",'
                     r'service="auth-service",status="200"\} 1\.0', text), text[:2000]
    assert 'service="gateway"' in text
    assert "reelhouse_http_request_duration_seconds_bucket" in text


def _declared_methods(rule) -> set[str]:
    """The methods a route was declared with, without the ones answered for it automatically: the HEAD Werkzeug
    adds to every GET route, and the OPTIONS Flask answers itself unless the view handles OPTIONS (Flask records
    that as `rule.provide_automatic_options`, from the view's `provide_automatic_options`/`required_methods` and
    the methods passed to the route). A HEAD declared next to a GET cannot be told apart from the automatic one."""
    methods = set(rule.methods)
    if "GET" in methods:
        methods.discard("HEAD")
    if getattr(rule, "provide_automatic_options", False):
        methods.discard("OPTIONS")
    return methods


def test_declared_methods_leave_out_only_the_automatic_head_and_options():
    app = Flask(__name__)
    view = lambda **_: ""  # noqa: E731
    app.add_url_rule("/get", "get", view, methods=["GET"])
    app.add_url_rule("/head", "head", view, methods=["HEAD"])
    app.add_url_rule("/options", "options", view, methods=["OPTIONS"])
    app.add_url_rule("/post", "post", view, methods=["POST", "PATCH"])
    view.provide_automatic_options = False
    app.add_url_rule("/manual", "manual", view, methods=["DELETE"])
    found = {rule.rule: _declared_methods(rule) for rule in app.url_map.iter_rules() if rule.endpoint != "static"}
    assert found == {"/get": {"GET"}, "/head": {"HEAD"}, "/options": {"OPTIONS"}, "/post": {"POST", "PATCH"},
                     "/manual": {"DELETE"}}


def _rules(app):
    """(path in OpenAPI form, method) for every route the gateway answers, the mounted services' included."""
    apps = [app, *app.extensions["reelhouse.services"].values()]
    found = set()
    for each in apps:
        for rule in each.url_map.iter_rules():
            if rule.endpoint in ("static",) or rule.rule.startswith("/api/docs/assets") or rule.endpoint.startswith(
                    "frontend."):
                continue
            if each is not app and rule.rule in ("/healthz", "/readyz", "/metrics"):
                continue  # a mounted service's own ops routes are reached through its own port, not the gateway
            path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
            for method in _declared_methods(rule):
                found.add((path, method.lower()))
    return found


ERROR = {"$ref": "#/components/schemas/Error"}


def test_openapi_is_valid_31_and_matches_the_routes(app, client):
    spec = client.get("/api/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1")
    validate(spec)
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops
                  if method not in ("parameters", "summary", "description", "servers")}
    routes = _rules(app)
    assert ("/api/uploads", "options") in routes and ("/api/uploads/{upload_id}", "head") in routes
    assert documented == routes
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op.get("summary"), (path, method)
            assert {"414", "431"} <= set(op["responses"]), (path, method)  # the server's refusals, anywhere
            for status, response in op["responses"].items():
                if method == "head":
                    assert "content" not in response, (path, method, status)  # HEAD responses have no body
                elif (path, status) == ("/readyz", "503"):
                    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Ready"}
                elif status.startswith(("4", "5")):
                    assert response["content"]["application/json"]["schema"] == ERROR, (path, method, status)
            if path.startswith("/api/uploads"):  # tus: Tus-Resumable on every response, required on every request
                for status, response in op["responses"].items():
                    if status not in ("414", "431"):  # refused before the tus server sees the request
                        assert "Tus-Resumable" in response["headers"], (path, method, status)
                names = {_resolve(spec, p)["name"]: _resolve(spec, p) for p in op.get("parameters", [])}
                if method != "options":
                    assert names["Tus-Resumable"]["required"], (path, method)


def _resolve(spec: dict, node: dict) -> dict:
    """Follow local `$ref`s (`#/components/...`)."""
    while "$ref" in node:
        target = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def _conforms(spec: dict, path: str, method: str, response):
    """A real response against its operation in the spec: a documented status, a body valid against the
    documented schema (or no body where none is documented), the required headers present and valid, and no
    tus header that is not documented."""
    operation = spec["paths"][path][method.lower()]
    documented = operation["responses"].get(str(response.status_code))
    where = f"{method} {path} → {response.status_code} {response.get_data(as_text=True)[:300]}"
    assert documented is not None, f"undocumented status: {where}"
    content = documented.get("content")
    if content:
        assert response.mimetype in content, where
        schema = {**content[response.mimetype]["schema"], "components": spec["components"]}
        validate_schema(response.get_json(), schema, cls=OAS31Validator)
    else:
        assert response.data == b"", where
    headers = {name.lower(): _resolve(spec, header) for name, header in documented.get("headers", {}).items()}
    for name, header in headers.items():
        if name not in response.headers:
            assert not header.get("required"), f"missing {name}: {where}"
            continue
        value = response.headers[name]
        if header["schema"].get("type") == "integer":
            assert value.isdigit(), (name, value)
            value = int(value)
        validate_schema(value, header["schema"], cls=OAS31Validator)
    for name in response.headers.keys():
        if name.lower().startswith(("tus-", "upload-")) or name.lower() == "location":
            assert name.lower() in headers, f"undocumented header {name}: {where}"
    return response


def test_real_responses_match_the_spec(app, client, api):
    spec = client.get("/api/openapi.json").get_json()
    token = api.register()["access_token"]
    tus = {"Tus-Resumable": "1.0.0"}

    def call(method, url, template, *, auth=token, headers=None, **kwargs):
        response = api.call(method, url, auth, headers=dict(headers or {}), **kwargs)  # Api.call adds to headers
        return _conforms(spec, template, method, response)

    options = call("OPTIONS", "/api/uploads", "/api/uploads", auth=None)
    assert options.status_code == 204 and "creation-with-upload" in options.headers["Tus-Extension"]
    metadata = "filename Y2xpcC5tcDQ=,title TXkgY2xpcA=="  # clip.mp4, "My clip"
    created = call("POST", "/api/uploads", "/api/uploads", headers={**tus, "Upload-Length": "10",
                                                                    "Upload-Metadata": metadata})
    assert created.status_code == 201
    upload = created.headers["Location"]
    video_id = upload.rsplit("/", 1)[1]
    item = "/api/uploads/{upload_id}"
    assert call("OPTIONS", upload, item, auth=None).status_code == 204

    chunk = b"\x00\x00\x00\x18"
    digest = "sha1 " + base64.b64encode(hashlib.sha1(chunk).digest()).decode()  # noqa: S324 - tus checksum
    octets = {**tus, "Content-Type": "application/offset+octet-stream"}
    patched = call("PATCH", upload, item, data=chunk, headers={**octets, "Upload-Offset": "0",
                                                                 "Upload-Checksum": digest})
    assert patched.status_code == 204 and patched.headers["Upload-Offset"] == "4"
    conflict = call("PATCH", upload, item, data=chunk, headers={**octets, "Upload-Offset": "0"})
    assert conflict.status_code == 409 and conflict.headers["Upload-Offset"] == "4"
    assert call("PATCH", upload, item, data=b"abcd", headers={**octets, "Upload-Offset": "4",
                                                               "Upload-Checksum": digest}).status_code == 460
    assert call("PATCH", upload, item, data=b"ab", headers={**tus, "Upload-Offset": "4",
                                                             "Content-Type": "text/plain"}).status_code == 415
    assert call("PATCH", upload, item, data=b"ab", headers={"Upload-Offset": "4"}).status_code == 412
    assert call("POST", "/api/uploads", "/api/uploads",
                headers={**tus, "Upload-Length": str(10**15)}).status_code == 413
    head = call("HEAD", upload, item, headers=tus)
    assert head.status_code == 200 and head.headers["Upload-Length"] == "10"
    assert call("HEAD", upload, item, headers=tus, auth=None).status_code == 401

    page = call("GET", "/api/videos", "/api/videos")
    assert page.status_code == 200
    (video,) = page.get_json()["items"]
    assert video["id"] == video_id and video["status"] == "uploading" and video["title"] == "My clip"
    assert set(video) == set(spec["components"]["schemas"]["Video"]["properties"]) - {"share_url"}
    assert call("GET", "/api/videos?status=bogus", "/api/videos").status_code == 422
    one = "/api/videos/{video_id}"
    assert call("PATCH", f"/api/videos/{video_id}", one, json={"title": "Renamed"}).status_code == 200
    assert call("PATCH", f"/api/videos/{video_id}", one, json={}).status_code == 422

    # A processed video, as the transcode worker and stream service will leave it: every nullable field set.
    deps = app.extensions["reelhouse"]
    tenant_id = deps.metadata.videos.get(video_id)["tenant_id"]
    deps.metadata.videos.update(video_id, {
        "status": "ready", "progress": 100, "duration": 12.5, "width": 1920, "height": 1080,
        "renditions": [{"name": "720p", "width": 1280, "height": 720, "bitrate": 2_800_000}],
        "thumbnail_url": f"/api/stream/{video_id}/thumbnail.jpg", "poster_url": f"/api/stream/{video_id}/poster.jpg",
        "storyboard_url": f"/api/stream/{video_id}/storyboard.vtt",
        "playback": {"hls_url": f"/api/stream/{video_id}/hls/master.m3u8?token=t",
                     "original_url": f"/api/stream/{video_id}/original?token=t",
                     "token_expires_at": "2030-01-01T00:00:00.000000Z"},
    }, tenant_id=tenant_id)
    ready = call("GET", f"/api/videos/{video_id}", one)
    assert ready.status_code == 200 and ready.get_json()["renditions"][0]["name"] == "720p"
    assert call("GET", "/api/videos?status=ready", "/api/videos").get_json()["total"] == 1

    other = call("POST", "/api/uploads", "/api/uploads", headers={**tus, "Upload-Length": "5"}).headers["Location"]
    assert call("DELETE", other, item, headers=tus).status_code == 204
    assert call("HEAD", other, item, headers=tus).status_code == 404
    assert call("DELETE", f"/api/videos/{video_id}", one).status_code == 204
    assert call("GET", f"/api/videos/{video_id}", one).status_code == 404
    assert call("GET", f"/api/videos/{video_id}", one, auth=None).status_code == 401


def test_docs_page_uses_only_local_assets(client):
    page = client.get("/api/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "//" not in re.sub(r"<!doctype[^>]*>", "", html, flags=re.I).replace("://", "")  # no protocol-relative URLs
    assert not re.search(r"https?://", html)
    for src in re.findall(r'(?:src|href)="([^"]+)"', html):
        asset = client.get(src)
        assert asset.status_code == 200, src
        assert len(asset.data) > 0
    bundle = client.get("/api/docs/assets/swagger-ui-bundle.js").get_data(as_text=True)
    assert "isOAS31" in bundle  # Swagger UI 5: it can render OpenAPI 3.1
    assert_error(client.get("/api/docs/assets/../../../etc/passwd"), 404)
    assert_error(client.get("/api/docs/assets/index.html"), 404)


def test_root_explains_how_to_build_the_web_app_when_missing(make_config, tmp_path):
    app = create_app(make_config(FRONTEND_DIR=tmp_path / "nowhere"))
    page = app.test_client().get("/")
    assert page.status_code == 200 and "make frontend" in page.get_data(as_text=True)
    assert app.test_client().get("/watch").status_code == 404


@pytest.fixture
def built_frontend(tmp_path):
    out = tmp_path / "out"
    (out / "_next").mkdir(parents=True)
    (out / "index.html").write_text("<html>library</html>")
    (out / "watch.html").write_text("<html>watch page</html>")
    (out / "_next" / "app.js").write_text("console.log(1)")
    return out


def test_serves_the_exported_web_app(make_config, built_frontend):
    client = create_app(make_config(FRONTEND_DIR=built_frontend)).test_client()
    assert client.get("/").get_data(as_text=True) == "<html>library</html>"
    assert client.get("/watch?v=abc").get_data(as_text=True) == "<html>watch page</html>"
    assert client.get("/_next/app.js").get_data(as_text=True) == "console.log(1)"
    assert client.get("/some/client/route").get_data(as_text=True) == "<html>library</html>"
    assert_error(client.get("/_next/missing.js"), 404)
    assert_error(client.get("/api/nothing-here"), 404, "not_found")
    for escape in ("/../../etc/passwd", "/..%2f..%2fetc/passwd", "/%2e%2e/%2e%2e/etc/passwd"):
        assert "root:" not in client.get(escape).get_data(as_text=True)


def test_ui_pages_carry_a_csp_with_the_hashes_of_their_own_inline_scripts(make_config, built_frontend):
    import base64
    import hashlib

    inline = "self.__next_f=self.__next_f||[];self.__next_f.push([0])"
    (built_frontend / "watch.html").write_text(
        f'<html><script src="/_next/static/chunks/app.js" async=""></script><script>{inline}</script>'
        "<SCRIPT type=\"text/javascript\">\nconsole.log('two')\n</SCRIPT><p>watch</p></html>")
    (built_frontend / "_next" / "static" / "chunks").mkdir(parents=True)
    (built_frontend / "_next" / "static" / "chunks" / "app.js").write_text("console.log(1)")
    client = create_app(make_config(FRONTEND_DIR=built_frontend)).test_client()

    def sha(text):
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    page = client.get("/watch?v=abc")
    policy = page.headers["Content-Security-Policy"]
    directives = dict((d.split(" ", 1) + [""])[:2] for d in policy.split("; "))
    assert directives["script-src"].split() == ["'self'", sha(inline), sha("\nconsole.log('two')\n")]
    assert "unsafe-inline" not in directives["script-src"] and "unsafe-eval" not in policy
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert page.headers["X-Content-Type-Options"] == "nosniff" and page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Referrer-Policy"] == "same-origin" and page.headers["Cache-Control"] == "no-cache"
    # the page changes (a new build): the policy follows
    (built_frontend / "watch.html").write_text("<html><script>console.log('rebuilt')</script></html>")
    assert sha("console.log('rebuilt')") in client.get("/watch").headers["Content-Security-Policy"]
    # the app shell of an unknown route is index.html, with index.html's policy (no inline scripts there)
    shell = client.get("/library/somewhere")
    assert "script-src 'self';" in shell.headers["Content-Security-Policy"]
    asset = client.get("/_next/static/chunks/app.js")
    assert asset.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert "Content-Security-Policy" not in asset.headers and asset.headers["X-Content-Type-Options"] == "nosniff"


def test_help_page_has_a_strict_policy(make_config, tmp_path):
    page = create_app(make_config(FRONTEND_DIR=tmp_path / "nowhere")).test_client().get("/")
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_service_prefixes_reach_their_service(client):
    jwks = client.get("/api/auth/.well-known/jwks.json")
    assert jwks.status_code == 200 and "keys" in jwks.get_json()
    # The prefix must match a whole path segment.
    assert_error(client.get("/api/authx/.well-known/jwks.json"), 404)


def test_log_lines_are_json_with_the_request_id(client):
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        client.get("/api/auth/me", headers={"X-Request-ID": "req-42"})
    finally:
        configure_logging("INFO")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [line for line in lines if line["logger"] == "reelhouse.access"]
    assert access and access[-1]["request_id"] == "req-42" and access[-1]["status"] == 401
    assert access[-1]["path"] == "/api/auth/me" and access[-1]["service"] == "auth-service"
    logging.getLogger().handlers[:] = [h for h in logging.getLogger().handlers if not getattr(h, "_reelhouse", 0)]
