"""JWT verification shared by every service: keys from the auth service's JWKS, algorithms pinned."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import requests

ALGORITHMS = ("EdDSA", "RS256")
ROLES = ("viewer", "editor", "admin")  # each role can do everything the ones before it can


class TokenError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class Principal:
    user_id: str
    tenant_id: str
    role: str
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def has_role(self, minimum: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(minimum)


class KeySource(ABC):
    @abstractmethod
    def get(self, kid: str) -> jwt.PyJWK | None: ...


class StaticKeySource(KeySource):
    def __init__(self, jwks: dict[str, Any]):
        self._keys = {k["kid"]: jwt.PyJWK(k) for k in jwks["keys"]}

    def get(self, kid: str) -> jwt.PyJWK | None:
        return self._keys.get(kid)


def fetch_json(url: str) -> dict[str, Any]:
    response = requests.get(url, timeout=5)
    response.raise_for_status()
    return response.json()


class JwksKeySource(KeySource):
    """Caches the key set for `ttl` seconds; an unknown kid triggers a refresh (at most every `min_interval` s)."""

    def __init__(self, url: str, *, fetch: Callable[[str], dict] = fetch_json, ttl: float = 300,
                 min_interval: float = 10, clock: Callable[[], float] = time.monotonic):
        self.url, self._fetch, self.ttl, self.min_interval, self._clock = url, fetch, ttl, min_interval, clock
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self.fetches = 0

    def _refresh(self) -> None:
        document = self._fetch(self.url)
        keys = {}
        for entry in document.get("keys", []):
            try:
                keys[entry["kid"]] = jwt.PyJWK(entry)
            except (KeyError, jwt.PyJWTError):  # PyJWK raises InvalidKeyError (not a PyJWKError) too
                continue  # a key we cannot use is skipped, not fatal
        self._keys, self._fetched_at = keys, self._clock()
        self.fetches += 1

    def get(self, kid: str) -> jwt.PyJWK | None:
        with self._lock:
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at > self.ttl
            # Failed attempts count too: while the auth service is down, callers are not queued behind a
            # fetch per request.
            recent = self._attempted_at is not None and now - self._attempted_at <= self.min_interval
            if (stale or kid not in self._keys) and not recent:
                self._attempted_at = now
                try:
                    self._refresh()
                except (requests.RequestException, ValueError):
                    pass  # keep serving the keys we have
            if not self._keys and self._fetched_at is None:
                raise TokenError("auth_unavailable", "The signing keys could not be fetched.")
            return self._keys.get(kid)


class TokenVerifier:
    def __init__(self, keys: KeySource, *, issuer: str, audience: str, leeway: float = 5):
        self.keys, self.issuer, self.audience, self.leeway = keys, issuer, audience, leeway

    def claims(self, token: str, typ: str = "access") -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise TokenError("invalid_token", "The token is malformed.") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise TokenError("invalid_token", f"Tokens signed with {algorithm!r} are not accepted.")
        key = self.keys.get(str(header.get("kid", "")))
        if key is None or key.algorithm_name != algorithm:
            raise TokenError("invalid_token", "The token was not signed by a known key.")
        try:
            claims = jwt.decode(
                token, key.key, algorithms=[algorithm], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway, options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token_expired", "The token has expired.") from None
        except jwt.InvalidTokenError as error:
            raise TokenError("invalid_token", f"The token is not valid: {error}.") from None
        if claims.get("typ") != typ:
            raise TokenError("invalid_token", f"This is not an {typ} token.")
        return claims

    def principal(self, token: str) -> Principal:
        claims = self.claims(token)
        if claims.get("role") not in ROLES or not claims.get("tid"):
            raise TokenError("invalid_token", "The token carries no tenant or role.")
        return Principal(claims["sub"], claims["tid"], claims["role"], claims)
