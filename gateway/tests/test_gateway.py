"""The embedded gateway: routing, ops endpoints, OpenAPI completeness, docs, web app, JSON logs."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
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
    assert body["checks"]["metadata"].startswith("ConnectionError") and body["checks"]["objects"] == "ok"


def test_metrics_count_requests_per_service(client):
    client.get("/api/auth/.well-known/jwks.json")
    client.get("/healthz")
    text = client.get("/metrics").get_data(as_text=True)
    assert re.search(r'reelhouse_http_requests_total\{method="GET",route="/api/auth/.well-known/jwks.json",'
                     r'service="auth-service",status="200"\} 1\.0', text), text[:2000]
    assert 'service="gateway"' in text
    assert "reelhouse_http_request_duration_seconds_bucket" in text


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
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                found.add((path, method.lower()))
    return found


def test_openapi_is_valid_31_and_matches_the_routes(app, client):
    spec = client.get("/api/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1")
    validate(spec)
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert documented == _rules(app)
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op.get("summary"), (path, method)
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")) and status != "503":
                    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


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
