"""TokenVerifier (pinned algorithms, claims) and JwksKeySource (cache, refresh, failure) behaviour."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization

from services.signing_keys import SigningKey
from services.tokens import JwksKeySource, StaticKeySource, TokenError, TokenVerifier

ISSUER = "reelhouse-test"
AUDIENCE = "reelhouse-api"


def claims_for(**overrides) -> dict:
    now = int(time.time())
    claims = {"sub": "user-1", "tid": "tenant-1", "role": "editor", "typ": "access", "iss": ISSUER,
              "aud": AUDIENCE, "iat": now, "exp": now + 300}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def sign(key: SigningKey, headers: dict | None = None, **overrides) -> str:
    return jwt.encode(claims_for(**overrides), key.private_key, algorithm=key.algorithm,
                      headers={"kid": key.kid, **(headers or {})})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, claims: dict, secret: bytes | None) -> str:
    """Build a token by hand (PyJWT refuses to HMAC with a PEM key, which is the attack we test)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = b"" if secret is None else hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@pytest.fixture(scope="module")
def verifier(ed_key, rsa_key) -> TokenVerifier:
    keys = StaticKeySource({"keys": [ed_key.public_jwk, rsa_key.public_jwk]})
    return TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE)


def rejected(verifier: TokenVerifier, token: str, typ: str = "access") -> TokenError:
    with pytest.raises(TokenError) as info:
        verifier.claims(token, typ)
    return info.value


# --- accepted -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["ed_key", "rsa_key"])
def test_valid_tokens_are_accepted(verifier, request, which):
    key: SigningKey = request.getfixturevalue(which)
    claims = verifier.claims(sign(key))
    assert claims["sub"] == "user-1" and claims["tid"] == "tenant-1"
    principal = verifier.principal(sign(key))
    assert (principal.user_id, principal.tenant_id, principal.role) == ("user-1", "tenant-1", "editor")
    assert principal.has_role("viewer") and principal.has_role("editor") and not principal.has_role("admin")


def test_algorithms_are_what_the_keys_say(ed_key, rsa_key):
    assert ed_key.algorithm == "EdDSA"
    assert rsa_key.algorithm == "RS256"


def test_refresh_typ_is_checked_by_the_caller(verifier, ed_key):
    token = sign(ed_key, typ="refresh")
    assert verifier.claims(token, "refresh")["typ"] == "refresh"
    assert rejected(verifier, token).code == "invalid_token"  # not an access token


def test_expiry_within_leeway_is_accepted(verifier, ed_key):
    assert verifier.claims(sign(ed_key, exp=int(time.time()) - 1))["sub"] == "user-1"


# --- rejected -----------------------------------------------------------------------------------------


def test_alg_none_is_rejected(verifier, ed_key):
    token = forge({"alg": "none", "typ": "JWT", "kid": ed_key.kid}, claims_for(), None)
    assert rejected(verifier, token).code == "invalid_token"
    unsigned = jwt.encode(claims_for(), None, algorithm="none", headers={"kid": ed_key.kid})
    assert rejected(verifier, unsigned).code == "invalid_token"


def test_hs256_with_a_shared_secret_is_rejected(verifier, ed_key):
    token = jwt.encode(claims_for(), "a-secret-of-at-least-32-bytes-long!!", algorithm="HS256",
                       headers={"kid": ed_key.kid})
    assert rejected(verifier, token).code == "invalid_token"


@pytest.mark.parametrize("which", ["ed_key", "rsa_key"])
def test_hs256_signed_with_the_public_key_is_rejected(verifier, request, which):
    """The classic algorithm-confusion attack: HMAC keyed with the (public) verification key."""
    key: SigningKey = request.getfixturevalue(which)
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for secret in (public_pem, json.dumps(key.public_jwk).encode(), (key.public_jwk.get("x") or "").encode()):
        token = forge({"alg": "HS256", "typ": "JWT", "kid": key.kid}, claims_for(), secret)
        assert rejected(verifier, token).code == "invalid_token"


def test_header_alg_must_match_the_keys_algorithm(verifier, ed_key, rsa_key):
    # Signed by the RSA key but claiming the Ed25519 key's kid.
    token = jwt.encode(claims_for(), rsa_key.private_key, algorithm="RS256", headers={"kid": ed_key.kid})
    assert rejected(verifier, token).code == "invalid_token"


@pytest.mark.parametrize(
    "overrides",
    [{"aud": "someone-else"}, {"aud": None}, {"iss": "evil"}, {"iss": None}, {"exp": None}, {"sub": None},
     {"iat": None}, {"typ": "refresh"}, {"typ": None}],
    ids=["wrong-aud", "no-aud", "wrong-iss", "no-iss", "no-exp", "no-sub", "no-iat", "wrong-typ", "no-typ"],
)
def test_bad_claims_are_rejected(verifier, ed_key, overrides):
    assert rejected(verifier, sign(ed_key, **overrides)).code == "invalid_token"


def test_expired_token_is_rejected(verifier, ed_key, rsa_key):
    past = int(time.time()) - 120
    for key in (ed_key, rsa_key):
        assert rejected(verifier, sign(key, iat=past - 300, exp=past)).code == "token_expired"


def test_unknown_or_missing_kid_is_rejected(verifier, ed_key):
    assert rejected(verifier, sign(ed_key, headers={"kid": "not-a-known-kid"})).code == "invalid_token"
    no_kid = jwt.encode(claims_for(), ed_key.private_key, algorithm="EdDSA")
    assert rejected(verifier, no_kid).code == "invalid_token"


def test_token_signed_by_another_key_with_a_known_kid_is_rejected(verifier, ed_key):
    from cryptography.hazmat.primitives.asymmetric import ed25519

    impostor = jwt.encode(claims_for(), ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA",
                          headers={"kid": ed_key.kid})
    assert rejected(verifier, impostor).code == "invalid_token"


def test_tampered_payload_is_rejected(verifier, ed_key):
    header, _payload, signature = sign(ed_key).split(".")
    evil_payload = b64(json.dumps(claims_for(role="admin", tid="tenant-2")).encode())
    assert rejected(verifier, f"{header}.{evil_payload}.{signature}").code == "invalid_token"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "a.b", "....."])
def test_malformed_tokens_are_rejected(verifier, token):
    assert rejected(verifier, token).code == "invalid_token"


@pytest.mark.parametrize("overrides", [{"role": "owner"}, {"role": None}, {"tid": None}, {"tid": ""}])
def test_principal_needs_tenant_and_known_role(verifier, ed_key, overrides):
    with pytest.raises(TokenError) as info:
        verifier.principal(sign(ed_key, **overrides))
    assert info.value.code == "invalid_token"


# --- JwksKeySource ------------------------------------------------------------------------------------


class FakeJwks:
    """An injected fetch: serves `document`, or raises `error`; counts calls."""

    def __init__(self, *keys: SigningKey):
        self.document = {"keys": [k.public_jwk for k in keys]}
        self.error: Exception | None = None
        self.calls: list[str] = []

    def __call__(self, url: str) -> dict:
        self.calls.append(url)
        if self.error is not None:
            raise self.error
        return json.loads(json.dumps(self.document))


def source(fetch, clock, **kwargs) -> JwksKeySource:
    return JwksKeySource("http://auth/jwks.json", fetch=fetch, clock=clock, ttl=300, min_interval=10, **kwargs)


def test_jwks_is_fetched_once_and_cached(ed_key, fake_clock):
    fetch = FakeJwks(ed_key)
    keys = source(fetch, fake_clock)
    first = keys.get(ed_key.kid)
    fake_clock.advance(5)
    second = keys.get(ed_key.kid)
    assert first is not None and second is not None
    assert first.key_id == second.key_id == ed_key.kid
    assert fetch.calls == ["http://auth/jwks.json"]


def test_unknown_kid_refreshes_at_most_every_min_interval(ed_key, rsa_key, fake_clock):
    fetch = FakeJwks(ed_key)
    keys = source(fetch, fake_clock)
    assert keys.get(ed_key.kid) is not None
    fetch.document = {"keys": [ed_key.public_jwk, rsa_key.public_jwk]}  # the auth service rotates
    fake_clock.advance(3)
    assert keys.get(rsa_key.kid) is None  # too soon after the last fetch: no refetch
    assert len(fetch.calls) == 1
    fake_clock.advance(8)  # 11 s since the fetch > min_interval
    found = keys.get(rsa_key.kid)
    assert found is not None and found.key_id == rsa_key.kid
    assert len(fetch.calls) == 2
    assert keys.get(ed_key.kid) is not None and keys.get(rsa_key.kid) is not None
    assert len(fetch.calls) == 2  # known kids do not refetch


def test_unknown_kid_flood_does_not_hammer_the_auth_service(ed_key, fake_clock):
    fetch = FakeJwks(ed_key)
    keys = source(fetch, fake_clock)
    keys.get(ed_key.kid)
    for i in range(50):
        assert keys.get(f"bogus-{i}") is None
    assert len(fetch.calls) == 1


def test_keys_are_refetched_after_ttl(ed_key, rsa_key, fake_clock):
    fetch = FakeJwks(ed_key)
    keys = source(fetch, fake_clock)
    keys.get(ed_key.kid)
    fake_clock.advance(299)
    keys.get(ed_key.kid)
    assert len(fetch.calls) == 1
    fetch.document = {"keys": [rsa_key.public_jwk]}  # ed_key retired
    fake_clock.advance(2)  # 301 s > ttl
    assert keys.get(ed_key.kid) is None
    assert len(fetch.calls) == 2
    assert keys.get(rsa_key.kid) is not None


@pytest.mark.parametrize("error", [requests.ConnectionError("down"), requests.HTTPError("503"),
                                   ValueError("not json")], ids=["connection", "http", "json"])
def test_failed_refresh_keeps_the_old_keys(ed_key, fake_clock, error):
    fetch = FakeJwks(ed_key)
    keys = source(fetch, fake_clock)
    keys.get(ed_key.kid)
    fetch.error = error
    fake_clock.advance(301)
    kept = keys.get(ed_key.kid)  # refresh fails: no exception, the cached key still serves
    assert kept is not None and kept.key_id == ed_key.kid
    assert len(fetch.calls) == 2
    fake_clock.advance(20)
    assert keys.get("unknown") is None
    fetch.error = None  # back up: the next stale get refreshes again
    fake_clock.advance(301)
    assert keys.get(ed_key.kid) is not None
    assert fetch.calls[-1] == "http://auth/jwks.json"


def test_first_fetch_failure_is_auth_unavailable(fake_clock):
    fetch = FakeJwks()
    fetch.error = requests.ConnectionError("down")
    keys = source(fetch, fake_clock)
    with pytest.raises(TokenError) as info:
        keys.get("any")
    assert info.value.code == "auth_unavailable"


def test_unusable_jwks_entries_are_skipped(ed_key, fake_clock):
    fetch = FakeJwks(ed_key)
    fetch.document["keys"] = [{"kty": "nonsense", "kid": "bad"}, {"kty": "OKP"}, ed_key.public_jwk]
    keys = source(fetch, fake_clock)
    assert keys.get(ed_key.kid) is not None
    assert keys.get("bad") is None


def test_verifier_with_jwks_source_follows_key_rotation(ed_key, rsa_key, fake_clock):
    fetch = FakeJwks(ed_key)
    verifier = TokenVerifier(source(fetch, fake_clock), issuer=ISSUER, audience=AUDIENCE)
    assert verifier.claims(sign(ed_key))["sub"] == "user-1"
    fetch.document = {"keys": [ed_key.public_jwk, rsa_key.public_jwk]}
    fake_clock.advance(11)
    assert verifier.claims(sign(rsa_key))["sub"] == "user-1"  # new kid -> refresh -> accepted
    assert len(fetch.calls) == 2


def test_auth_outage_is_not_retried_on_every_request(ed_key, fake_clock):
    fetch = FakeJwks(ed_key)
    keys = source(fetch, fake_clock)
    keys.get(ed_key.kid)
    fetch.error = requests.ConnectionError("down")
    fake_clock.advance(301)  # stale: one refresh attempt, which fails
    for _ in range(20):
        assert keys.get(ed_key.kid) is not None
        assert keys.get("rotated-kid") is None
    assert len(fetch.calls) == 2
    fake_clock.advance(11)  # after min_interval, one more attempt
    keys.get(ed_key.kid)
    assert len(fetch.calls) == 3


def test_first_fetch_failure_is_retried_after_min_interval(ed_key, fake_clock):
    fetch = FakeJwks(ed_key)
    fetch.error = requests.ConnectionError("down")
    keys = source(fetch, fake_clock)
    for _ in range(3):
        with pytest.raises(TokenError):
            keys.get(ed_key.kid)
    assert len(fetch.calls) == 1
    fetch.error = None
    fake_clock.advance(11)
    assert keys.get(ed_key.kid) is not None
