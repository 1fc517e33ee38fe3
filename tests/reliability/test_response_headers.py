"""Response headers of the web app and the API, through `reelhouse up` and through the cluster's edge (nginx →
gateway → services): CSP, nosniff and Referrer-Policy everywhere, no server version in any header, and CORS only
for the configured origins (CORS_ORIGINS), preflights included.
"""

from __future__ import annotations

import re

import pytest
import requests

from services.testing import ClusterDeployment, ReelhouseProcess, register_account

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

TIMEOUT = 30
ALLOWED = "https://app.example.test"
STRANGERS = ("https://evil.example.test", "null", "https://app.example.test.evil.test", "http://app.example.test")
PAGES = ("/", "/library", "/api/docs")
API = ("/api/auth/me", "/api/videos", "/api/openapi.json", "/healthz", "/api/no-such-route",
       "/api/stream/nosuchvideo/original", "/api/auth/.well-known/jwks.json")
# a header that names software with a version (nginx/1.22.1, Werkzeug/3.0, gunicorn/23.0.0, Python/3.11)
VERSION = re.compile(r"\d+\.\d+|werkzeug|python", re.IGNORECASE)


@pytest.fixture(scope="module", params=["embedded", "cluster"])
def deployment(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"headers-{request.param}")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CORS_ORIGINS", ALLOWED)  # the cluster's services inherit the environment
        if request.param == "embedded":
            running = ReelhouseProcess(tmp / "data")
            try:
                yield running.url
            finally:
                running.stop()
        else:
            running = ClusterDeployment(tmp, store="local")
            try:
                yield running.url
            finally:
                running.stop()


@pytest.fixture(scope="module")
def token(deployment):
    return register_account(deployment)["token"]


def _get(url: str, token: str | None = None, **headers) -> requests.Response:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(url, headers=headers, timeout=TIMEOUT)


def _no_version_leak(response: requests.Response) -> None:
    for name in ("Server", "X-Powered-By", "Via", "X-AspNet-Version", "X-Runtime"):
        value = response.headers.get(name, "")
        assert not VERSION.search(value), (response.url, name, value)
    assert "X-Powered-By" not in response.headers


def test_pages_have_a_strict_content_security_policy(deployment):
    for path in PAGES:
        response = _get(deployment + path)
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html"), path
        policy = response.headers["Content-Security-Policy"]
        directives = dict((d.split(" ", 1) + [""])[:2] for d in (p.strip() for p in policy.split(";")) if d)
        assert directives.get("default-src") in ("'none'", "'self'"), (path, policy)
        assert directives.get("frame-ancestors") == "'none'", (path, policy)
        assert "'unsafe-inline'" not in directives.get("script-src", "") and "'unsafe-eval'" not in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] in ("same-origin", "no-referrer", "strict-origin")
        _no_version_leak(response)


def test_api_answers_are_not_sniffed_framed_or_leaking(deployment, token):
    for path in API:
        for bearer in (None, token):
            response = _get(deployment + path, bearer)
            assert response.status_code < 500, (path, response.status_code)
            assert response.headers["X-Content-Type-Options"] == "nosniff", path
            assert response.headers["Referrer-Policy"] == "same-origin", path
            if response.headers.get("Content-Type", "").startswith("application/json"):
                assert "default-src 'none'" in response.headers["Content-Security-Policy"], path
            _no_version_leak(response)
            assert "Traceback" not in response.text


def test_cors_only_for_the_configured_origin(deployment, token):
    for path in ("/api/videos", "/api/auth/me"):
        allowed = _get(deployment + path, token, Origin=ALLOWED)
        assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert allowed.headers["Access-Control-Allow-Credentials"] == "true"
        assert "Origin" in allowed.headers.get("Vary", "")
        assert "Upload-Offset" in allowed.headers["Access-Control-Expose-Headers"]
        for stranger in STRANGERS:
            refused = _get(deployment + path, token, Origin=stranger)
            assert refused.status_code == 200  # the browser, not the server, withholds the answer
            assert not any(h.lower().startswith("access-control-") for h in refused.headers), (stranger, path)


def test_cors_preflights(deployment):
    for path, method, headers in (("/api/uploads", "POST", "authorization, tus-resumable, upload-length"),
                                  ("/api/uploads/someid", "PATCH", "upload-offset, content-type, tus-resumable"),
                                  ("/api/videos/someid", "DELETE", "authorization")):
        asked = {"Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}
        allowed = requests.options(deployment + path, headers={"Origin": ALLOWED, **asked}, timeout=TIMEOUT)
        assert allowed.status_code in (200, 204), (path, allowed.status_code)
        assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert method in allowed.headers["Access-Control-Allow-Methods"]
        granted = {h.strip().lower() for h in allowed.headers["Access-Control-Allow-Headers"].split(",")}
        assert {h.strip() for h in headers.split(",")} <= granted, (path, granted)
        for stranger in STRANGERS:
            refused = requests.options(deployment + path, headers={"Origin": stranger, **asked}, timeout=TIMEOUT)
            assert not any(h.lower().startswith("access-control-") for h in refused.headers), (stranger, path)
            _no_version_leak(refused)
