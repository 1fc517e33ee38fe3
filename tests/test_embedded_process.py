"""End to end: a real `reelhouse up` process, driven over HTTP like a user with curl would."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import uuid

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ed25519

from services.signing_keys import signing_key_from_pem
from services.testing import STRONG_PASSWORD, Api, HttpClient, ReelhouseProcess, assert_error

pytestmark = pytest.mark.e2e


Process = ReelhouseProcess


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


def test_register_me_docs_and_restart(data_dir):
    server = Process(data_dir, AUTH_LOGIN_RATE_LIMIT="5 per minute")
    try:
        registered = requests.post(server.url + "/api/auth/register", data=(
            f'{{"tenant_name": "Acme", "email": "me@acme.test", "password": "{STRONG_PASSWORD}"}}'), timeout=10)
        assert registered.status_code == 201, registered.text
        body = registered.json()
        auth = {"Authorization": f"Bearer {body['access_token']}"}
        me = requests.get(server.url + "/api/auth/me", headers=auth, timeout=10)
        assert me.status_code == 200 and me.json()["user"]["email"] == "me@acme.test"
        assert me.headers["X-Request-ID"]

        docs = requests.get(server.url + "/api/docs", timeout=10)
        assert docs.status_code == 200 and "swagger-ui" in docs.text
        assert requests.get(server.url + "/api/openapi.json", timeout=10).json()["openapi"] == "3.1.0"
        assert requests.get(server.url + "/readyz", timeout=10).json()["status"] == "ok"
        assert "reelhouse_http_requests_total" in requests.get(server.url + "/metrics", timeout=10).text

        bad = requests.post(server.url + "/api/auth/login", json={"email": "me@acme.test", "password": "nope"},
                            timeout=10)
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_credentials"
        statuses = [requests.post(server.url + "/api/auth/login", json={"email": "me@acme.test", "password": "x"},
                                  timeout=10).status_code for _ in range(6)]
        assert statuses[:4] == [401] * 4 and statuses[-1] == 429, statuses
        flooded = requests.post(server.url + "/api/auth/login", json={"email": "me@acme.test", "password": "x"},
                                timeout=10)
        assert flooded.json()["error"]["code"] == "rate_limited" and int(flooded.headers["Retry-After"]) > 0
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]

    key_file = data_dir / "keys" / "jwt-ed25519.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    log_lines = server.log.read_text().splitlines()
    assert any("Reelhouse is running at http://localhost:" in line for line in log_lines)

    # Restart on the same data: the same signing key and the same accounts.
    again = Process(data_dir)
    try:
        still = requests.get(again.url + "/api/auth/me", headers=auth, timeout=10)
        assert still.status_code == 200, still.text
        login = requests.post(again.url + "/api/auth/login",
                              json={"email": "me@acme.test", "password": STRONG_PASSWORD}, timeout=10)
        assert login.status_code == 200
        refreshed = requests.post(again.url + "/api/auth/refresh", json={"refresh_token": body["refresh_token"]},
                                  timeout=10)
        assert refreshed.status_code == 200
    finally:
        assert again.stop() == 0


def test_bad_configuration_fails_fast_naming_the_variable(data_dir):
    result = subprocess.run([sys.executable, "-m", "reelhouse_gateway", "up"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "REELHOUSE_DATA_DIR": str(data_dir),
                                             "DATABASE_URL": "postgres://nope"})
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr and "Traceback" not in result.stderr


# --- every bad case of the auth contract, over real HTTP against one running process -----------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = Process(tmp_path_factory.mktemp("auth") / "data", AUTH_LOGIN_RATE_LIMIT="1000 per minute",
                      AUTH_REGISTER_RATE_LIMIT="1000 per minute")
    yield process
    process.stop()


@pytest.fixture
def http(server):
    return Api(HttpClient(server.url))


@pytest.fixture
def tenant(http):
    name = f"Org {uuid.uuid4().hex[:8]}"
    session = http.register(tenant_name=name, email=f"admin@{name[4:]}.test")
    return session | {"domain": name[4:]}


def _signing_key(server):
    key_file = next(server.log.parent.rglob("keys/jwt-ed25519.pem"))
    return signing_key_from_pem(key_file.read_bytes())


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_login_failures_over_http(http, tenant):
    email = f"admin@{tenant['domain']}.test"
    wrong = assert_error(http.login(email, "not the password!"), 401, "invalid_credentials")
    unknown = assert_error(http.login(f"nobody@{tenant['domain']}.test", "not the password!"), 401)
    assert wrong == unknown
    assert_error(http.client.post("/api/auth/login", data=b"{not json"), 400, "invalid_json")
    assert_error(http.client.post("/api/auth/login", json={"email": email}), 422, "validation_error")
    assert_error(http.client.post("/api/auth/login", data=b'{"email": "a\\ud800@x.test", "password": "p"}'), 400)
    assert_error(http.client.post("/api/auth/login", data=b"[" * 30000 + b"]" * 30000), 400, "invalid_json")
    assert_error(http.client.post("/api/auth/login", data=b"{" + b" " * 200_000 + b"}"), 413, "payload_too_large")


def test_registration_failures_over_http(http, tenant):
    name = f"Org {tenant['domain']}"
    assert_error(http.client.post("/api/auth/register", json={
        "tenant_name": name.upper(), "email": "x@y.test", "password": STRONG_PASSWORD}), 409, "tenant_exists")
    assert_error(http.client.post("/api/auth/register", json={
        "tenant_name": "Another " + name, "email": "x@y.test", "password": "aaaaaaaaaaaa"}), 422, "weak_password")
    admin = tenant["access_token"]
    http.add_user(admin, f"ed@{tenant['domain']}.test", "editor")
    duplicate = http.call("POST", "/api/auth/users", admin, json={
        "email": f"ED@{tenant['domain']}.test", "password": STRONG_PASSWORD, "role": "viewer"})
    assert_error(duplicate, 409, "email_taken")
    assert_error(http.call("GET", "/api/auth/users?page=%C2%B2", admin), 422)
    assert_error(http.call("GET", "/api/auth/users?page=99999999999999999999999", admin), 422)


def test_forged_and_expired_tokens_over_http(http, tenant, server):
    key = _signing_key(server)
    claims = jwt.decode(tenant["access_token"], options={"verify_signature": False})

    def me(token):
        return http.call("GET", "/api/auth/me", token)

    assert me(tenant["access_token"]).status_code == 200
    expired = jwt.encode({**claims, "iat": claims["iat"] - 7200, "exp": claims["iat"] - 3600}, key.private_key,
                         algorithm="EdDSA", headers={"kid": key.kid})
    assert_error(me(expired), 401, "token_expired")
    none = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': key.kid})}.{_b64(claims)}."
    assert_error(me(none), 401, "invalid_token")
    other = jwt.encode(claims, ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": key.kid})
    assert_error(me(other), 401, "invalid_token")
    wrong_aud = jwt.encode({**claims, "aud": "elsewhere"}, key.private_key, algorithm="EdDSA",
                           headers={"kid": key.kid})
    assert_error(me(wrong_aud), 401, "invalid_token")


def test_refresh_reuse_over_http(http, tenant):
    first = tenant["refresh_token"]
    second = http.client.post("/api/auth/refresh", json={"refresh_token": first}).get_json()["refresh_token"]
    # at once (another tab): superseded, nothing revoked; after the 10 s grace, reuse revokes the family
    # (auth-service/tests/test_sessions.py moves the clock for that)
    assert_error(http.client.post("/api/auth/refresh", json={"refresh_token": first}), 409, "refresh_superseded")
    third = http.client.post("/api/auth/refresh", json={"refresh_token": second})
    assert third.status_code == 200 and third.get_json()["refresh_token"] not in (first, second)


def test_roles_and_isolation_over_http(http, tenant):
    admin = tenant["access_token"]
    viewer_user, viewer = http.add_user(admin, f"v@{tenant['domain']}.test", "viewer")
    assert_error(http.call("GET", "/api/auth/users", viewer), 403, "forbidden")
    assert_error(http.call("DELETE", f"/api/auth/users/{viewer_user['id']}", viewer), 403, "forbidden")
    other = http.register(tenant_name=f"Rival {uuid.uuid4().hex[:8]}", email="boss@rival.test")
    assert_error(http.call("GET", f"/api/auth/users/{other['user']['id']}", admin), 404, "not_found")
    assert_error(http.call("PATCH", f"/api/auth/users/{other['user']['id']}", admin, json={"role": "viewer"}), 404)


def test_a_removed_admin_loses_rights_at_once(http, tenant):
    founder = tenant["access_token"]
    second_user, second = http.add_user(founder, f"second@{tenant['domain']}.test", "admin")
    assert http.call("DELETE", f"/api/auth/users/{second_user['id']}", founder).status_code == 204
    backdoor = http.call("POST", "/api/auth/users", second, json={
        "email": f"backdoor@{tenant['domain']}.test", "password": STRONG_PASSWORD, "role": "admin"})
    assert_error(backdoor, 401, "invalid_token")
    demoted_user, demoted = http.add_user(founder, f"third@{tenant['domain']}.test", "admin")
    http.call("PATCH", f"/api/auth/users/{demoted_user['id']}", founder, json={"role": "viewer"})
    assert_error(http.call("GET", "/api/auth/users", demoted), 403, "forbidden")
