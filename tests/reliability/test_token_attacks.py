"""Token attacks against a running `reelhouse up`: forged and doctored JWTs, refresh-token reuse and logout, login
brute force per address and per account, and playback/share tokens (scope, expiry, rotation).

The server signs with a key the test generated (JWT_PRIVATE_KEY) and a known PLAYBACK_SECRET, so the test can mint
tokens that are correctly signed but wrong in exactly one way; each is refused by the server, and a control token
minted the same way is accepted (the forgeries fail for the reason under test, not for a mistake in minting).
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import time
import uuid

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from services.testing import (
    STRONG_PASSWORD,
    ReelhouseProcess,
    assert_error,
    make_clip,
    register_account,
    soak,
    tus_upload,
)

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

TIMEOUT = 30
PLAYBACK_SECRET = "p" * 16 + uuid.uuid4().hex  # noqa: S105 - a test deployment's secret
PROTECTED = ("/api/auth/me", "/api/videos")  # auth service and upload service verify separately


def _pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _b64(data: dict | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Deployment:
    """A `reelhouse up` with a known signing key and playback secret; restartable on the same data dir."""

    def __init__(self, tmp, **env):
        self.key = ed25519.Ed25519PrivateKey.generate()
        self.tmp, self.env = tmp, {"JWT_PRIVATE_KEY": _pem(self.key), "PLAYBACK_SECRET": PLAYBACK_SECRET,
                                   "AUTH_LOGIN_RATE_LIMIT": "1000 per minute",
                                   "AUTH_REGISTER_RATE_LIMIT": "1000 per hour", **env}
        self.server = ReelhouseProcess(tmp / "data", **self.env)
        self.kid = requests.get(self.url + "/api/auth/.well-known/jwks.json", timeout=TIMEOUT).json()["keys"][0]["kid"]

    @property
    def url(self) -> str:
        return self.server.url

    def restart(self, **env) -> None:
        self.server.stop()
        self.env.update(env)
        self.server = ReelhouseProcess(self.tmp / "data", **self.env)

    def sign(self, claims: dict, key=None, algorithm: str = "EdDSA", headers: dict | None = None) -> str:
        return jwt.encode(claims, key or self.key, algorithm=algorithm,
                          headers={"kid": self.kid} if headers is None else headers)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tokens")
    deployment = Deployment(tmp, PLAYBACK_TOKEN_TTL="60")
    try:
        yield deployment
    finally:
        deployment.server.stop()


@pytest.fixture(scope="module")
def account(deployment):
    return register_account(deployment.url)


def _get(url: str, token: str | None, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(url, headers=headers, timeout=TIMEOUT, **kwargs)


def _claims(token: str, **changes) -> dict:
    claims = jwt.decode(token, options={"verify_signature": False})
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


# --- forged and doctored access tokens ----------------------------------------------------------------------

def _alg_none(d: Deployment, token: str) -> str:
    return f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': d.kid})}.{_b64(_claims(token))}."


def _key_confusion(d: Deployment, token: str) -> str:
    """HS256 with the public key's bytes (as served in the JWKS) as the HMAC secret."""
    public = d.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': d.kid})}.{_b64(_claims(token))}"
    for secret in (public, d.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo)):
        signature = _b64(hmac.new(secret, signing_input.encode(), "sha256").digest())
        yield f"{signing_input}.{signature}"


def _tampered(token: str, **changes) -> str:
    header, _payload, signature = token.split(".")
    return f"{header}.{_b64(_claims(token, **changes))}.{signature}"


def _forgeries(d: Deployment, token: str) -> dict[str, tuple[str, str]]:
    """name → (token, expected error code)."""
    now = int(time.time())
    other_ed = ed25519.Ed25519PrivateKey.generate()
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = {
        "alg none": (_alg_none(d, token), "invalid_token"),
        "expired": (d.sign(_claims(token, iat=now - 3600, exp=now - 1800)), "token_expired"),
        "nbf in the future": (d.sign(_claims(token, nbf=now + 600, exp=now + 1200)), "invalid_token"),
        "iat in the future": (d.sign(_claims(token, iat=now + 600, exp=now + 1200)), "invalid_token"),
        "wrong iss": (d.sign(_claims(token, iss="someone-else")), "invalid_token"),
        "wrong aud": (d.sign(_claims(token, aud="another-app")), "invalid_token"),
        "no aud": (d.sign(_claims(token, aud=None)), "invalid_token"),
        "refresh typ": (d.sign(_claims(token, typ="refresh")), "invalid_token"),
        "tampered sub": (_tampered(token, sub="u" * 16), "invalid_token"),
        "tampered tenant": (_tampered(token, tid="t" * 16), "invalid_token"),
        "tampered role": (_tampered(token, role="superuser"), "invalid_token"),
        "tampered exp": (_tampered(token, exp=now + 10**8), "invalid_token"),
        "unknown kid": (d.sign(_claims(token), headers={"kid": "not-a-key"}), "invalid_token"),
        "missing kid": (d.sign(_claims(token), headers={}), "invalid_token"),
        "another deployment's key": (d.sign(_claims(token), key=other_ed), "invalid_token"),
        "another RSA key, RS256": (d.sign(_claims(token), key=other_rsa, algorithm="RS256"), "invalid_token"),
        "garbage": ("a.b.c", "invalid_token"),
    }
    for n, confused in enumerate(_key_confusion(d, token)):
        forged[f"HS256 with the public key #{n}"] = (confused, "invalid_token")
    return forged


def test_forged_and_doctored_access_tokens_are_refused(deployment, account):
    token = account["token"]
    control = deployment.sign(_claims(token))  # minted exactly like the forgeries, but honest
    for path in PROTECTED:
        assert _get(deployment.url + path, control).status_code == 200
    forgeries = _forgeries(deployment, token)
    for name, (forged, code) in forgeries.items():
        for path in PROTECTED:
            response = _get(deployment.url + path, forged)
            assert response.status_code == 401, (name, path, response.status_code, response.text)
            assert_error(response, 401, code)
            assert "WWW-Authenticate" in response.headers
    assert len(forgeries) >= 18


def test_a_viewer_cannot_promote_itself(deployment, account):
    url = deployment.url
    email = f"viewer-{uuid.uuid4().hex[:6]}@org.test"
    created = requests.post(url + "/api/auth/users", headers={"Authorization": f"Bearer {account['token']}"},
                            json={"email": email, "password": STRONG_PASSWORD, "role": "viewer"}, timeout=TIMEOUT)
    assert created.status_code == 201, created.text
    viewer = requests.post(url + "/api/auth/login", json={"email": email, "password": STRONG_PASSWORD},
                           timeout=TIMEOUT).json()["access_token"]
    assert_error(_get(url + "/api/auth/users", viewer), 403, "forbidden")
    assert_error(_get(url + "/api/auth/users", _tampered(viewer, role="admin")), 401, "invalid_token")


# --- refresh tokens and logout ------------------------------------------------------------------------------

def _refresh(url: str, token: str) -> requests.Response:
    return requests.post(url + "/api/auth/refresh", json={"refresh_token": token}, timeout=TIMEOUT)


def _login(url: str, email: str, password: str = STRONG_PASSWORD, address: str | None = None) -> requests.Response:
    headers = {"X-Forwarded-For": address} if address else {}
    return requests.post(url + "/api/auth/login", json={"email": email, "password": password}, headers=headers,
                         timeout=TIMEOUT)


def test_refresh_token_reuse_revokes_the_family(deployment, account):
    url, email = deployment.url, account["user"]["email"]
    first = _login(url, email).json()
    elsewhere = _login(url, email).json()  # another login: another family, untouched
    second = _refresh(url, first["refresh_token"])
    assert second.status_code == 200, second.text
    second = second.json()
    assert_error(_refresh(url, first["refresh_token"]), 409, "refresh_superseded")  # two tabs: not theft yet
    time.sleep(10.5)  # README: a token spent more than 10 s ago is reuse
    assert_error(_refresh(url, first["refresh_token"]), 401, "refresh_token_reused")
    assert_error(_refresh(url, second["refresh_token"]), 401, "invalid_refresh_token")  # the thief's too
    assert _refresh(url, elsewhere["refresh_token"]).status_code == 200


def test_logout_revokes_the_refresh_family_and_the_access_token_lapses(deployment, account):
    url, email = deployment.url, account["user"]["email"]
    session = _login(url, email).json()
    rotated = _refresh(url, session["refresh_token"]).json()
    assert requests.post(url + "/api/auth/logout", json={"refresh_token": session["refresh_token"]},
                         timeout=TIMEOUT).status_code == 204  # logging out with any token of the family
    assert_error(_refresh(url, rotated["refresh_token"]), 401, "invalid_refresh_token")
    # README: access tokens are not revoked, they lapse within ACCESS_TOKEN_TTL (15 min); expiry itself is
    # checked by the "expired" forgery above, signed with the real key.
    claims = _claims(rotated["access_token"])
    assert claims["exp"] - claims["iat"] == 900
    assert _get(url + "/api/auth/me", rotated["access_token"]).status_code == 200


# --- login brute force ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """Behind one trusted proxy (X-Forwarded-For names the client), with short windows so locks lift in the test.
    Windows are fixed and start at the first counted attempt: 12 s leave room for argon2 on a busy machine."""
    tmp = tmp_path_factory.mktemp("bruteforce")
    server = ReelhouseProcess(tmp / "data", TRUSTED_PROXIES="1", AUTH_LOGIN_RATE_LIMIT="5 per 12 seconds",
                              AUTH_ACCOUNT_LOGIN_RATE_LIMIT="5 per 12 seconds")
    try:
        yield server
    finally:
        server.stop()


def _wait_window(response: requests.Response) -> None:
    time.sleep(int(response.headers["Retry-After"]) + 1)


def test_login_brute_force_is_limited_per_address(guarded):
    url = guarded.url
    owner = register_account(url)["user"]["email"]
    attacker = "203.0.113.7"
    answers = [_login(url, f"guess{n}@org.test", "wrong password!!", attacker).status_code for n in range(5)]
    assert answers == [401] * 5
    limited = _login(url, owner, address=attacker)  # even the right password waits
    assert_error(limited, 429, "rate_limited")
    assert 0 < int(limited.headers["Retry-After"]) <= 12
    assert _login(url, owner, address="198.51.100.20").status_code == 200  # the owner, elsewhere
    if soak(False, True):  # the per-account test below waits for its lock to lift in the fast run too
        _wait_window(limited)
        assert _login(url, owner, address=attacker).status_code == 200  # the lock lifted by itself


def test_login_brute_force_is_limited_per_account_without_locking_the_owner_out(guarded):
    url = guarded.url
    owner = register_account(url)["user"]["email"]
    home = "198.51.100.1"
    assert _login(url, owner, address=home).status_code == 200  # the owner's usual address
    # a botnet: every attempt from another address, so no per-address limit is ever reached
    guesses = [_login(url, owner, f"guess number {n}!", f"192.0.2.{n}").status_code for n in range(1, 6)]
    assert guesses == [401] * 5
    locked = _login(url, owner, address="192.0.2.99")  # the right password from a new address: locked too
    assert_error(locked, 429, "rate_limited")
    assert "for this account" in locked.json()["error"]["message"]
    assert _login(url, owner, "another guess!!", "192.0.2.100").status_code == 429
    assert _login(url, owner, address=home).status_code == 200  # the owner still gets in from home
    other = register_account(url)["user"]["email"]
    assert _login(url, other, address="192.0.2.101").status_code == 200  # other accounts are not affected
    _wait_window(locked)
    assert _login(url, owner, address="192.0.2.102").status_code == 200  # and the lock expires


# --- playback and share tokens -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def videos(deployment, account, tmp_path_factory):
    """Two ready videos of one tenant (X unlisted, Y tenant-visible) and one of another tenant (Z)."""
    clip = make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", 1, "160x90")
    other = register_account(deployment.url)
    x = tus_upload(deployment.url, account["token"], clip, "X")
    y = tus_upload(deployment.url, account["token"], clip, "Y")
    z = tus_upload(deployment.url, other["token"], clip, "Z")
    auth = {"Authorization": f"Bearer {account['token']}"}
    assert requests.patch(f"{deployment.url}/api/videos/{x}", json={"visibility": "unlisted"}, headers=auth,
                          timeout=TIMEOUT).status_code == 200
    ready = {vid: _wait_ready(deployment.url, token, vid)
             for vid, token in ((x, account["token"]), (y, account["token"]), (z, other["token"]))}
    return {"x": ready[x], "y": ready[y], "z": ready[z], "other": other}


def _wait_ready(url: str, token: str, video_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        video = _get(f"{url}/api/videos/{video_id}", token).json()
        if video["status"] == "ready" and video["playback"].get("hls_url"):
            return video
        assert video["status"] != "failed", video
        time.sleep(0.5)
    raise AssertionError(f"{video_id} not ready in {timeout} s")


def _token_of(url: str) -> str:
    return re.search(r"[?&](?:token|share)=([^&]+)", url).group(1)


def _rendition(url: str, video: dict) -> str:
    """The first rendition playlist the video's master playlist names (`<rung>/<file>`)."""
    master = requests.get(url + video["playback"]["hls_url"], timeout=TIMEOUT)
    assert master.status_code == 200, master.text
    line = next(li for li in master.text.splitlines() if li and not li.startswith("#"))
    return line.split("?")[0].rsplit("/hls/", 1)[-1]


def _stream(url: str, video_id: str, route: str, token: str) -> requests.Response:
    return requests.get(f"{url}/api/stream/{video_id}/{route}", params={"token": token}, timeout=TIMEOUT)


def test_playback_token_scope(deployment, videos):
    url, x, y, z = deployment.url, videos["x"], videos["y"], videos["z"]
    x_token = _token_of(x["playback"]["hls_url"])
    rendition = _rendition(url, x)
    for route in ("original", "hls/master.m3u8", f"hls/{rendition}", "thumbnail.jpg", "poster.jpg",
                  "storyboard.vtt"):
        assert _stream(url, x["id"], route, x_token).status_code in (200, 206), route
        assert_error(_stream(url, y["id"], route, x_token), 403, "token_scope")  # same tenant, other video
        assert_error(_stream(url, z["id"], route, x_token), 403, "token_scope")  # other tenant
    now = int(time.time())
    base = {"iss": "reelhouse", "aud": "reelhouse-playback", "typ": "play", "iat": now, "exp": now + 60,
            "sub": _claims(x_token)["sub"]}
    cross = jwt.encode({**base, "vid": z["id"], "tid": _claims(x_token)["tid"]}, PLAYBACK_SECRET, algorithm="HS256")
    assert_error(_stream(url, z["id"], "original", cross), 404, "not_found")  # Z is not in X's tenant
    doctored = x_token.split(".")
    doctored[1] = _b64({**_claims(x_token), "vid": y["id"]})
    assert_error(_stream(url, y["id"], "original", ".".join(doctored)), 401, "invalid_token")


def test_playback_token_expiry(deployment, account, videos):
    url, x = deployment.url, videos["x"]
    issued = _claims(_token_of(x["playback"]["hls_url"]))
    assert issued["exp"] - issued["iat"] == 60  # PLAYBACK_TOKEN_TTL
    now = int(time.time())
    expired = jwt.encode({**issued, "iat": now - 120, "exp": now - 60}, PLAYBACK_SECRET, algorithm="HS256")
    for route in ("original", "hls/master.m3u8"):
        assert_error(_stream(url, x["id"], route, expired), 401, "token_expired")
    forever = {k: v for k, v in issued.items() if k != "exp"}  # a play token must expire
    assert_error(_stream(url, x["id"], "original", jwt.encode(forever, PLAYBACK_SECRET, algorithm="HS256")),
                 401, "invalid_token")
    if soak(False, True):  # the real thing: a token the server issued, used after its TTL
        token = _token_of(_get(f"{url}/api/videos/{x['id']}", account["token"]).json()["playback"]["hls_url"])
        time.sleep(max(0, _claims(token)["exp"] - time.time()) + 1)
        assert_error(_stream(url, x["id"], "hls/master.m3u8", token), 401, "token_expired")


def test_share_link_rotation_revokes_earlier_links(deployment, account, videos):
    url, x = deployment.url, videos["x"]
    auth = {"Authorization": f"Bearer {account['token']}"}
    first = _get(f"{url}/api/videos/{x['id']}", account["token"]).json()["share_url"]
    share = _token_of(first)
    logged_out = requests.get(f"{url}/api/stream/{x['id']}/hls/master.m3u8", params={"token": share},
                              timeout=TIMEOUT)
    assert logged_out.status_code == 200
    derived = _token_of(next(li for li in logged_out.text.splitlines() if "token=" in li))  # the playlist's URIs
    rotated = requests.post(f"{url}/api/videos/{x['id']}/share", headers=auth, timeout=TIMEOUT)
    assert rotated.status_code == 200, rotated.text
    new_share = _token_of(rotated.json()["share_url"])
    assert new_share != share
    for old in (share, derived):
        assert_error(_stream(url, x["id"], "original", old), 401, "share_revoked")
    assert _stream(url, x["id"], "original", new_share).status_code in (200, 206)
    private = requests.patch(f"{url}/api/videos/{x['id']}", json={"visibility": "private"}, headers=auth,
                             timeout=TIMEOUT)
    assert private.status_code == 200
    assert_error(_stream(url, x["id"], "original", new_share), 401, "share_revoked")  # no longer unlisted
    assert requests.patch(f"{url}/api/videos/{x['id']}", json={"visibility": "unlisted"}, headers=auth,
                          timeout=TIMEOUT).status_code == 200


def test_a_removed_users_playback_token_stops_working(deployment, account, videos):
    url, y = deployment.url, videos["y"]
    email = f"leaver-{uuid.uuid4().hex[:6]}@org.test"
    auth = {"Authorization": f"Bearer {account['token']}"}
    user = requests.post(url + "/api/auth/users", headers=auth, timeout=TIMEOUT,
                         json={"email": email, "password": STRONG_PASSWORD, "role": "viewer"}).json()
    leaver = _login(url, email).json()["access_token"]
    token = _token_of(_get(f"{url}/api/videos/{y['id']}", leaver).json()["playback"]["hls_url"])
    assert _stream(url, y["id"], "original", token).status_code in (200, 206)
    assert requests.delete(f"{url}/api/auth/users/{user['id']}", headers=auth, timeout=TIMEOUT).status_code == 204
    assert_error(_stream(url, y["id"], "original", token), 404, "not_found")


def test_rotating_the_playback_secret_invalidates_every_link(deployment, account, videos):
    """Last in the module: it restarts the server with another PLAYBACK_SECRET."""
    url, y = deployment.url, videos["y"]
    token = _token_of(_get(f"{url}/api/videos/{y['id']}", account["token"]).json()["playback"]["hls_url"])
    deployment.restart(PLAYBACK_SECRET="q" * 16 + uuid.uuid4().hex)
    url = deployment.url
    assert_error(_stream(url, y["id"], "original", token), 401, "invalid_token")
    fresh = _token_of(_get(f"{url}/api/videos/{y['id']}", account["token"]).json()["playback"]["hls_url"])
    assert _stream(url, y["id"], "original", fresh).status_code in (200, 206)
