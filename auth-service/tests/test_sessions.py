"""Register, login, tokens, refresh rotation, logout, me and JWKS, with every bad case in the error shape."""

from __future__ import annotations

import base64
import hmac
import json
import statistics
import threading
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from services.testing import STRONG_PASSWORD, assert_error


def _accounts(app):
    auth_app = app.extensions.get("reelhouse.services", {}).get("auth", app)
    return auth_app.extensions["accounts"]


def test_register_creates_tenant_and_admin(api):
    body = api.register(tenant_name="  Acme   Films ", email="Zoë.Admin@Acme.TEST", display_name="Zoë")
    assert body["tenant"]["name"] == "Acme Films"
    assert body["user"] == {**body["user"], "email": "zoë.admin@acme.test", "role": "admin",
                            "display_name": "Zoë", "tenant_id": body["tenant"]["id"]}
    assert "password_hash" not in body["user"]
    assert body["expires_in"] == 900 and body["token_type"] == "Bearer"
    me = api.call("GET", "/api/auth/me", body["access_token"])
    assert me.status_code == 200
    assert me.get_json() == {"user": body["user"], "tenant": body["tenant"]}


def test_login_is_case_insensitive_on_email(api):
    api.register(email="boss@acme.test")
    response = api.login("BOSS@ACME.test")
    assert response.status_code == 200
    body = response.get_json()
    assert body["user"]["email"] == "boss@acme.test"
    assert api.call("GET", "/api/auth/me", body["access_token"]).status_code == 200


def test_wrong_password_and_unknown_email_look_the_same(api):
    api.register(email="boss@acme.test")
    wrong = assert_error(api.login("boss@acme.test", "not the password!"), 401, "invalid_credentials")
    unknown = assert_error(api.login("nobody@acme.test", "not the password!"), 401, "invalid_credentials")
    assert wrong == unknown

    def median_time(email):
        samples = []
        for _ in range(5):
            start = time.perf_counter()
            api.login(email, "not the password!")
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    known, missing = median_time("boss@acme.test"), median_time("nobody@acme.test")
    # An unknown email still pays for one argon2 verification, so it is not measurably faster.
    assert missing > 0.5 * known, (known, missing)


def test_duplicate_tenant_name_conflicts(api):
    api.register(tenant_name="Acme")
    response = api.client.post("/api/auth/register", json={
        "tenant_name": "ACME", "email": "other@acme.test", "password": STRONG_PASSWORD})
    assert_error(response, 409, "tenant_exists")


def test_same_email_in_two_tenants_needs_tenant_to_log_in(api):
    first = api.register(tenant_name="Acme", email="me@example.test")
    second = api.register(tenant_name="Globex", email="me@example.test")
    error = assert_error(api.login("me@example.test"), 409, "tenant_required")
    assert {t["name"] for t in error["tenants"]} == {"Acme", "Globex"}
    by_name = api.login("me@example.test", tenant="globex")
    assert by_name.status_code == 200
    assert by_name.get_json()["user"]["tenant_id"] == second["tenant"]["id"]
    by_id = api.login("me@example.test", tenant=first["tenant"]["id"])
    assert by_id.get_json()["user"]["tenant_id"] == first["tenant"]["id"]
    assert_error(api.login("me@example.test", tenant="Initech"), 401, "invalid_credentials")


@pytest.mark.parametrize("password", ["short", "aaaaaaaaaaaaaaaa", "x" * 2000])
def test_weak_password_is_refused(api, password):
    response = api.client.post("/api/auth/register", json={
        "tenant_name": "Acme", "email": "a@acme.test", "password": password})
    assert_error(response, 422, "weak_password")


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_malformed_json_is_400(api, raw):
    for path in ("/api/auth/register", "/api/auth/login", "/api/auth/refresh", "/api/auth/logout"):
        response = api.client.post(path, data=raw, content_type="application/json")
        assert_error(response, 400, "invalid_json")


def test_missing_and_mistyped_fields_are_422(api):
    error = assert_error(api.client.post("/api/auth/register", json={"email": "a@acme.test"}), 422,
                         "validation_error")
    assert set(error["fields"]) == {"tenant_name", "password"}
    error = assert_error(api.client.post("/api/auth/login", json={"email": 5, "password": STRONG_PASSWORD}), 422)
    assert error["fields"] == {"email": "must be a string"}
    assert_error(api.client.post("/api/auth/register", json={
        "tenant_name": "Acme", "email": "not-an-email", "password": STRONG_PASSWORD}), 422, "invalid_email")
    assert_error(api.client.post("/api/auth/register", json={
        "tenant_name": "   ", "email": "a@acme.test", "password": STRONG_PASSWORD}), 422, "validation_error")


def test_form_encoded_curl_body_still_parses(api):
    """`curl -d '{...}'` sends application/x-www-form-urlencoded; the JSON body is read anyway."""
    response = api.client.post("/api/auth/register", data=json.dumps({
        "tenant_name": "Acme", "email": "a@acme.test", "password": STRONG_PASSWORD}),
        content_type="application/x-www-form-urlencoded")
    assert response.status_code == 201


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class TestAccessTokens:
    @pytest.fixture
    def session(self, api):
        return api.register()

    def claims(self, app, session, **changes):
        claims = jwt.decode(session["access_token"], options={"verify_signature": False})
        claims.update(changes)
        return claims

    def sign(self, app, claims):
        key = _accounts(app).key
        return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid})

    def me(self, api, token):
        return api.call("GET", "/api/auth/me", token)

    def test_valid_token_passes(self, app, api, session):
        assert self.me(api, self.sign(app, self.claims(app, session))).status_code == 200

    def test_missing_token(self, api):
        assert_error(self.me(api, None), 401, "missing_token")
        response = api.client.get("/api/auth/me", headers={"Authorization": "Basic Zm9vOmJhcg=="})
        assert_error(response, 401, "missing_token")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")

    def test_garbage_token(self, api):
        assert_error(self.me(api, "not.a.jwt"), 401, "invalid_token")

    def test_expired_token(self, app, api, session):
        user = _accounts(app).store.users.get(session["user"]["id"])
        token = _accounts(app).access_token(user, now=time.time() - 3600)
        assert_error(self.me(api, token), 401, "token_expired")

    def test_alg_none_token(self, app, api, session):
        header = {"alg": "none", "typ": "JWT", "kid": _accounts(app).key.kid}
        token = f"{_b64(header)}.{_b64(self.claims(app, session))}."
        assert_error(self.me(api, token), 401, "invalid_token")

    def test_hs256_with_public_key_as_secret(self, app, api, session):
        key = _accounts(app).key
        secret = base64.urlsafe_b64decode(key.public_jwk["x"] + "==")  # the raw public key bytes
        signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': key.kid})}.{_b64(self.claims(app, session))}"
        signature = base64.urlsafe_b64encode(hmac.new(secret, signing_input.encode(), "sha256").digest())
        token = f"{signing_input}.{signature.rstrip(b'=').decode()}"
        assert_error(self.me(api, token), 401, "invalid_token")

    def test_token_signed_by_another_key(self, app, api, session):
        other = ed25519.Ed25519PrivateKey.generate()
        token = jwt.encode(self.claims(app, session), other, algorithm="EdDSA", headers={"kid": _accounts(app).key.kid})
        assert_error(self.me(api, token), 401, "invalid_token")

    @pytest.mark.parametrize("claim,value", [("aud", "someone-else"), ("iss", "evil"), ("typ", "refresh"),
                                             ("role", "superuser")])
    def test_wrong_claims(self, app, api, session, claim, value):
        assert_error(self.me(api, self.sign(app, self.claims(app, session, **{claim: value}))), 401, "invalid_token")

    @pytest.mark.parametrize("kid", ["unknown-kid", None])
    def test_unknown_or_missing_kid(self, app, api, session, kid):
        key = _accounts(app).key
        headers = {"kid": kid} if kid else {}
        token = jwt.encode(self.claims(app, session), key.private_key, algorithm=key.algorithm, headers=headers)
        if not kid:
            assert "kid" not in jwt.get_unverified_header(token)
        assert_error(self.me(api, token), 401, "invalid_token")

    @pytest.mark.parametrize("claim", ["nbf", "iat"])
    def test_not_yet_valid(self, app, api, session, claim):
        future = int(time.time()) + 3600
        claims = self.claims(app, session, **{claim: future, "exp": future + 900})
        assert_error(self.me(api, self.sign(app, claims)), 401, "invalid_token")

    @pytest.mark.parametrize("claim,value", [("sub", "someone-else"), ("tid", "another-tenant"), ("role", "admin")])
    def test_tampered_payload_keeps_no_signature(self, app, api, session, claim, value):
        header, _payload, signature = session["access_token"].split(".")
        token = f"{header}.{_b64(self.claims(app, session, **{claim: value}))}.{signature}"
        assert_error(self.me(api, token), 401, "invalid_token")

    def test_missing_exp(self, app, api, session):
        claims = self.claims(app, session)
        del claims["exp"]
        assert_error(self.me(api, self.sign(app, claims)), 401, "invalid_token")

    def test_jwks_verifies_issued_tokens(self, api, session):
        jwks = api.client.get("/api/auth/.well-known/jwks.json").get_json()
        assert len(jwks["keys"]) == 1 and jwks["keys"][0]["alg"] == "EdDSA"
        assert "d" not in jwks["keys"][0]  # never the private part
        key = jwt.PyJWK(jwks["keys"][0])
        claims = jwt.decode(session["access_token"], key.key, algorithms=["EdDSA"], audience="reelhouse")
        assert claims["sub"] == session["user"]["id"] and claims["tid"] == session["tenant"]["id"]
        assert claims["exp"] - claims["iat"] == 900


class TestRefresh:
    def refresh(self, api, token):
        return api.client.post("/api/auth/refresh", json={"refresh_token": token})

    def test_rotation_spends_the_old_token(self, api):
        first = api.register()
        second = self.refresh(api, first["refresh_token"])
        assert second.status_code == 200
        second = second.get_json()
        assert second["refresh_token"] != first["refresh_token"]
        assert api.call("GET", "/api/auth/me", second["access_token"]).status_code == 200
        third = self.refresh(api, second["refresh_token"])
        assert third.status_code == 200

    @staticmethod
    def age_spent_tokens(app, seconds: float = 11):
        """Move every spent token's use `seconds` into the past (beyond the two-tabs grace)."""
        from datetime import UTC, datetime, timedelta

        store = _accounts(app).store
        when = (datetime.now(UTC) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for record in store.refresh_tokens.find({}).items:
            if record["used_at"]:
                store.refresh_tokens.update(record["id"], {"used_at": when})

    def test_a_token_spent_moments_ago_is_superseded_not_stolen(self, api, app):
        """Two tabs, one cookie: the second request arrives just after the first rotated it."""
        first = api.register()
        second = self.refresh(api, first["refresh_token"]).get_json()
        assert_error(self.refresh(api, first["refresh_token"]), 409, "refresh_superseded")
        assert self.refresh(api, second["refresh_token"]).status_code == 200  # the session lives on

    def test_reuse_revokes_the_whole_family(self, api, app):
        first = api.register()
        second = self.refresh(api, first["refresh_token"]).get_json()
        self.age_spent_tokens(app)
        assert_error(self.refresh(api, first["refresh_token"]), 401, "refresh_token_reused")
        # The legitimate holder's newer token dies with the family.
        assert_error(self.refresh(api, second["refresh_token"]), 401, "invalid_refresh_token")
        # Another login (another family) is unaffected.
        other = api.login("admin@acme.test").get_json()
        assert self.refresh(api, other["refresh_token"]).status_code == 200

    def test_concurrent_refresh_with_one_token_lets_at_most_one_through(self, api, app):
        token = api.register()["refresh_token"]
        results = []

        def attempt():
            client = app.test_client()
            results.append(client.post("/api/auth/refresh", json={"refresh_token": token}).status_code)

        threads = [threading.Thread(target=attempt) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count(200) == 1 and set(results) <= {200, 409}, results

    def test_unknown_and_expired_refresh_tokens(self, api, app):
        session = api.register()
        assert_error(self.refresh(api, "made-up"), 401, "invalid_refresh_token")
        store = _accounts(app).store
        record = store.refresh_tokens.find_one({"user_id": session["user"]["id"]})
        store.refresh_tokens.update(record["id"], {"expires_at": "2000-01-01T00:00:00.000000Z"})
        assert_error(self.refresh(api, session["refresh_token"]), 401, "refresh_token_expired")

    def test_refresh_tokens_are_stored_hashed(self, api, app):
        session = api.register()
        stored = _accounts(app).store.refresh_tokens.find({}).items
        assert stored and all(session["refresh_token"] not in json.dumps(r) for r in stored)

    def test_logout_revokes_the_family(self, api):
        first = api.register()
        second = self.refresh(api, first["refresh_token"]).get_json()
        response = api.client.post("/api/auth/logout", json={"refresh_token": second["refresh_token"]})
        assert response.status_code == 204
        assert_error(self.refresh(api, second["refresh_token"]), 401, "invalid_refresh_token")


class TestCookieSessions:
    """Browsers: the refresh token lives only in an HttpOnly cookie scoped to /api/auth."""

    def cookie(self, api):
        return api.client.get_cookie("reelhouse_refresh", path="/api/auth")

    def test_register_and_login_set_the_cookie_and_keep_the_token_out_of_the_body(self, api, app):
        response = api.client.post("/api/auth/register", json={
            "tenant_name": "Acme", "email": "admin@acme.test", "password": STRONG_PASSWORD, "session": "cookie"})
        assert response.status_code == 201
        body = response.get_json()
        assert "refresh_token" not in body and body["access_token"] and body["user"]["role"] == "admin"
        header = response.headers["Set-Cookie"]
        for attribute in ("HttpOnly", "SameSite=Strict", "Path=/api/auth", "Max-Age=2592000"):
            assert attribute in header, header
        assert "Secure" not in header  # plain http here; see the https test
        assert response.headers["Cache-Control"] == "no-store"
        stored = _accounts(app).store.refresh_tokens.find({}).items
        assert len(stored) == 1 and self.cookie(api).value not in json.dumps(stored)  # hashed at rest
        login = api.login("admin@acme.test", session="cookie")
        assert login.status_code == 200 and "refresh_token" not in login.get_json()
        assert "HttpOnly" in login.headers["Set-Cookie"]

    def test_cookie_is_secure_over_https(self, api):
        api.register()
        response = api.client.post("/api/auth/login", base_url="https://localhost",
                                    json={"email": "admin@acme.test", "password": STRONG_PASSWORD, "session": "cookie"})
        assert response.status_code == 200
        assert "Secure" in response.headers["Set-Cookie"]

    def test_refresh_from_the_cookie_rotates_it_and_reuse_revokes(self, api, app):
        api.register(session="cookie")
        first = self.cookie(api).value
        response = api.client.post("/api/auth/refresh", json={})
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert "refresh_token" not in body and body["user"]["email"] == "admin@acme.test"
        assert api.call("GET", "/api/auth/me", body["access_token"]).status_code == 200
        second = self.cookie(api).value
        assert second != first
        # Another tab sending the old cookie a moment later: 409, and the browser's newer cookie is left alone.
        api.client.set_cookie("reelhouse_refresh", first, path="/api/auth")
        late = api.client.post("/api/auth/refresh", json={})
        assert_error(late, 409, "refresh_superseded")
        assert "Set-Cookie" not in late.headers
        api.client.set_cookie("reelhouse_refresh", second, path="/api/auth")
        # The spent cookie value replayed later (e.g. stolen) revokes the family and clears the cookie.
        TestRefresh.age_spent_tokens(app)
        replay = api.client.post("/api/auth/refresh", json={"refresh_token": first})
        assert_error(replay, 401, "refresh_token_reused")
        denied = api.client.post("/api/auth/refresh", json={})
        assert_error(denied, 401, "invalid_refresh_token")
        assert "Max-Age=0" in denied.headers["Set-Cookie"]
        assert self.cookie(api) is None

    def test_refresh_without_body_token_or_cookie_is_422(self, api):
        assert_error(api.client.post("/api/auth/refresh", json={}), 422, "validation_error")
        assert_error(api.client.post("/api/auth/logout", json={}), 422, "validation_error")

    def test_bad_session_mode_is_422(self, api):
        response = api.client.post("/api/auth/register", json={
            "tenant_name": "Acme", "email": "admin@acme.test", "password": STRONG_PASSWORD, "session": "jar"})
        assert_error(response, 422, "validation_error")
        assert_error(api.login("admin@acme.test", session="jar"), 422, "validation_error")

    def test_logout_revokes_the_cookie_session_and_clears_the_cookie(self, api):
        api.register(session="cookie")
        token = self.cookie(api).value
        response = api.client.post("/api/auth/logout", json={})
        assert response.status_code == 204
        assert "Max-Age=0" in response.headers["Set-Cookie"] and self.cookie(api) is None
        assert_error(api.client.post("/api/auth/refresh", json={"refresh_token": token}), 401, "invalid_refresh_token")

    def test_the_cookie_never_reaches_other_paths(self, api):
        api.register(session="cookie")
        assert self.cookie(api).path == "/api/auth"


def test_errors_have_the_contract_shape_for_framework_errors(api):
    assert_error(api.client.get("/api/auth/login"), 405, "method_not_allowed")
    assert_error(api.client.get("/api/auth/does-not-exist"), 404, "not_found")


def test_unexpected_errors_are_500_without_a_trace(app):
    from flask import Blueprint

    auth_app = app.extensions.get("reelhouse.services", {}).get("auth", app)
    bp = Blueprint("boom", __name__)

    @bp.get("/api/auth/boom")
    def boom():
        raise RuntimeError("secret internals")

    auth_app.register_blueprint(bp)
    response = app.test_client().get("/api/auth/boom")
    error = assert_error(response, 500, "internal_error")
    assert "secret internals" not in response.get_data(as_text=True) and "secret" not in error["message"]


def test_request_id_is_echoed_or_generated(api):
    given = api.client.get("/api/auth/.well-known/jwks.json", headers={"X-Request-ID": "trace-123"})
    assert given.headers["X-Request-ID"] == "trace-123"
    generated = api.client.get("/api/auth/.well-known/jwks.json", headers={"X-Request-ID": "bad id <script>"})
    generated_id = generated.headers["X-Request-ID"]
    assert generated_id not in ("", "bad id <script>") and len(generated_id) == 32


class TestRateLimits:
    @pytest.fixture
    def config(self, make_config):
        return make_config(AUTH_LOGIN_RATE_LIMIT="3 per minute", AUTH_REGISTER_RATE_LIMIT="2 per minute")

    def test_login_flood_gets_429_with_retry_after(self, api):
        api.register()
        answers = [api.login("admin@acme.test", "wrong password!!") for _ in range(3)]
        assert [a.status_code for a in answers] == [401, 401, 401]
        assert not any("Retry-After" in a.headers for a in answers)  # only a 429 tells the client to wait
        response = api.login("admin@acme.test")  # even the right password waits now
        assert_error(response, 429, "rate_limited")
        assert int(response.headers["Retry-After"]) > 0

    def test_register_flood_gets_429(self, api):
        api.register(tenant_name="One", email="a@one.test")
        api.register(tenant_name="Two", email="a@two.test")
        response = api.client.post("/api/auth/register", json={
            "tenant_name": "Three", "email": "a@three.test", "password": STRONG_PASSWORD})
        assert_error(response, 429, "rate_limited")
        assert "Retry-After" in response.headers

    def test_limits_are_per_address(self, api):
        api.register()
        for _ in range(3):
            api.login("admin@acme.test", "wrong password!!")
        elsewhere = api.client.post("/api/auth/login", json={"email": "admin@acme.test", "password": STRONG_PASSWORD},
                                    environ_base={"REMOTE_ADDR": "10.9.8.7"})
        assert elsewhere.status_code == 200


class TestAccountLockout:
    """Failed logins per account, from any address (AUTH_ACCOUNT_LOGIN_RATE_LIMIT)."""

    @pytest.fixture
    def config(self, make_config):
        return make_config(AUTH_LOGIN_RATE_LIMIT="100 per minute", AUTH_ACCOUNT_LOGIN_RATE_LIMIT="3 per minute")

    def login_from(self, api, address, password):
        return api.client.post("/api/auth/login", json={"email": "admin@acme.test", "password": password},
                               environ_base={"REMOTE_ADDR": address})

    def test_failures_from_many_addresses_lock_the_account_but_not_its_known_address(self, api):
        api.register()
        assert self.login_from(api, "10.0.0.1", STRONG_PASSWORD).status_code == 200  # the owner's usual address
        failures = [self.login_from(api, f"10.1.0.{n}", "wrong password!!").status_code for n in range(3)]
        assert failures == [401, 401, 401]
        locked = self.login_from(api, "10.2.0.1", STRONG_PASSWORD)  # even the right password, from elsewhere
        assert_error(locked, 429, "rate_limited")
        assert int(locked.headers["Retry-After"]) > 0
        assert self.login_from(api, "10.0.0.1", STRONG_PASSWORD).status_code == 200
        other = api.client.post("/api/auth/login", json={"email": "nobody@acme.test", "password": STRONG_PASSWORD},
                                environ_base={"REMOTE_ADDR": "10.2.0.1"})
        assert_error(other, 401, "invalid_credentials")  # another account is not locked


@pytest.mark.parametrize("raw", [b"[" * 30000 + b"]" * 30000, b'{"email": "a\\ud800@x.test", "password": "p"}',
                                 b'{"tenant_name": "A", "email": "a@b.test", "password": "abcdefghij\\ud800"}'])
def test_hostile_json_is_400_not_500(api, raw):
    for path in ("/api/auth/login", "/api/auth/register"):
        assert_error(api.client.post(path, data=raw, content_type="application/json"), 400, "invalid_json")


def test_oversized_bodies_are_413(api):
    huge = b'{"email": "a@b.test", "password": "' + b"x" * 100_000 + b'"}'
    assert_error(api.client.post("/api/auth/login", data=huge, content_type="application/json"), 413,
                 "payload_too_large")


def test_overlong_login_password_is_refused_without_hashing(api, app):
    api.register()
    start = time.perf_counter()
    assert_error(api.login("admin@acme.test", "x" * 5000), 401, "invalid_credentials")
    assert time.perf_counter() - start < 1.0


def test_rate_limit_storage_outage_fails_open_and_shows_in_readyz(make_config):
    from auth_service import create_app

    app = create_app(make_config(RATE_LIMIT_STORAGE_URL="redis://127.0.0.1:1"))
    client = app.test_client()
    response = client.post("/api/auth/login", json={"email": "a@b.test", "password": STRONG_PASSWORD})
    assert_error(response, 401, "invalid_credentials")  # not a 500
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["rate_limits"].startswith("unavailable")


def test_trusted_proxies_give_each_client_its_own_limit(make_config):
    from auth_service import create_app

    def flood(app, forwarded_for):
        client = app.test_client()
        body = {"email": "a@b.test", "password": STRONG_PASSWORD}
        return [client.post("/api/auth/login", json=body, headers={"X-Forwarded-For": ip}).status_code
                for ip in forwarded_for]

    limited = dict(AUTH_LOGIN_RATE_LIMIT="2 per minute")
    behind_proxy = create_app(make_config(TRUSTED_PROXIES=1, **limited))
    assert flood(behind_proxy, ["1.1.1.1", "1.1.1.1", "2.2.2.2", "2.2.2.2", "1.1.1.1"]) == [401, 401, 401, 401, 429]
    # Without a trusted proxy the header is ignored: it cannot be used to dodge the limit.
    direct = create_app(make_config(**limited))
    assert flood(direct, ["1.1.1.1", "2.2.2.2", "3.3.3.3"]) == [401, 401, 429]
