"""Tenants, users and sessions: registration, login, token issue, refresh rotation with reuse detection."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from auth_service.passwords import MAX_LENGTH, Passwords, check_policy
from services.config import Config
from services.errors import ApiError
from services.ports import DuplicateKey, MetadataStore, VersionConflict
from services.ports.metadata import new_id, utcnow_iso
from services.signing_keys import SigningKey
from services.tokens import ROLES

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
_BAD_LOGIN = "The email or password is wrong."


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    if len(email) > 254 or not _EMAIL.fullmatch(email):
        raise ApiError(422, "invalid_email", "That is not an email address.", fields={"email": "is not an email"})
    return email


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ApiError(422, "invalid_role", f"role must be one of {', '.join(ROLES)}", fields={"role": "is unknown"})
    return role


def public_user(user: dict[str, Any]) -> dict[str, Any]:
    return {k: user.get(k) for k in ("id", "email", "display_name", "role", "tenant_id", "created_at")}


def public_tenant(tenant: dict[str, Any]) -> dict[str, Any]:
    return {"id": tenant["id"], "name": tenant["name"]}


# Two tabs of one browser may present the same refresh cookie moments apart (one of them rotated it while the
# other's request was on its way). Within this window a spent token is answered with 409 `refresh_superseded`
# (retry with the current cookie) instead of being treated as theft; after it, reuse revokes the whole family.
REUSE_GRACE_SECONDS = 10.0


def _superseded() -> ApiError:
    return ApiError(409, "refresh_superseded",
                    "This session was refreshed a moment ago by another request; retry with the current token.")


def _seconds_since(iso: str) -> float:
    then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return (datetime.now(UTC) - then).total_seconds()


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    def __init__(self, store: MetadataStore, key: SigningKey, config: Config, passwords: Passwords | None = None):
        self.store, self.key, self.config = store, key, config
        self.passwords = passwords or Passwords()

    # --- tenants and users -------------------------------------------------------------------
    def register(self, tenant_name: str, email: str, password: str, display_name: str | None) -> tuple[dict, dict]:
        name = " ".join(tenant_name.split())
        if not 1 <= len(name) <= 100:
            raise ApiError(422, "validation_error", "tenant_name must have 1 to 100 characters",
                           fields={"tenant_name": "must have 1 to 100 characters"})
        email = normalize_email(email)
        check_policy(password)
        try:
            tenant = self.store.tenants.add({"name": name, "name_key": name.casefold()})
        except DuplicateKey:
            raise ApiError(409, "tenant_exists", "An organisation with that name exists already.") from None
        try:
            user = self.create_user(tenant["id"], email, password, "admin", display_name)
        except BaseException:
            self.store.tenants.delete(tenant["id"])
            raise
        return tenant, user

    def create_user(self, tenant_id: str, email: str, password: str, role: str, display_name: str | None) -> dict:
        email = normalize_email(email)
        check_policy(password)
        check_role(role)
        display_name = (display_name or "").strip() or email.split("@")[0]
        try:
            return self.store.users.add({
                "tenant_id": tenant_id, "email": email, "display_name": display_name[:100], "role": role,
                "password_hash": self.passwords.hash(password),
            })
        except DuplicateKey:
            raise ApiError(409, "email_taken", "A user with that email exists in this organisation.") from None

    def authenticate(self, email: str, password: str, tenant: str | None = None) -> dict:
        if len(password) > MAX_LENGTH:
            raise ApiError(401, "invalid_credentials", _BAD_LOGIN)  # never hash megabytes
        try:
            email = normalize_email(email)
        except ApiError:
            email = ""
        candidates = self.store.users.find({"email": email}, per_page=100).items if email else []
        if tenant:
            wanted = tenant.strip().casefold()
            tenants = {t["id"] for t in self._tenants_of(candidates) if wanted in (t["id"], t["name_key"])}
            candidates = [u for u in candidates if u["tenant_id"] in tenants]
        if not candidates:
            self.passwords.verify(None, password)
            raise ApiError(401, "invalid_credentials", _BAD_LOGIN)
        matches = [u for u in candidates if self.passwords.verify(u["password_hash"], password)]
        if not matches:
            raise ApiError(401, "invalid_credentials", _BAD_LOGIN)
        if len(matches) > 1:
            raise ApiError(409, "tenant_required",
                           "This account belongs to several organisations; say which one in `tenant`.",
                           tenants=[public_tenant(t) for t in self._tenants_of(matches)])
        user = matches[0]
        if self.passwords.needs_rehash(user["password_hash"]):
            user = self.store.users.update(user["id"], {"password_hash": self.passwords.hash(password)})
        return user

    def _tenants_of(self, users: list[dict]) -> list[dict]:
        found = (self.store.tenants.get(tid) for tid in sorted({u["tenant_id"] for u in users}))
        return [t for t in found if t is not None]

    # --- tokens --------------------------------------------------------------------------------
    def access_token(self, user: dict[str, Any], now: float | None = None) -> str:
        now = int(now if now is not None else time.time())
        claims = {
            "iss": self.config.jwt_issuer, "aud": self.config.jwt_audience, "sub": user["id"],
            "tid": user["tenant_id"], "role": user["role"], "typ": "access",
            "iat": now, "exp": now + self.config.access_token_ttl, "jti": new_id(),
        }
        return jwt.encode(claims, self.key.private_key, algorithm=self.key.algorithm, headers={"kid": self.key.kid})

    def issue_tokens(self, user: dict[str, Any], family_id: str | None = None) -> dict[str, Any]:
        refresh = secrets.token_urlsafe(32)
        expires = datetime.now(UTC) + timedelta(seconds=self.config.refresh_token_ttl)
        self.store.refresh_tokens.add({
            "tenant_id": user["tenant_id"], "user_id": user["id"], "family_id": family_id or new_id(),
            "token_hash": _hash_token(refresh), "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "used_at": None, "revoked": False,
        })
        return {"access_token": self.access_token(user), "refresh_token": refresh, "token_type": "Bearer",
                "expires_in": self.config.access_token_ttl}

    def refresh(self, refresh_token: str) -> tuple[dict, dict]:
        record = self.store.refresh_tokens.find_one({"token_hash": _hash_token(refresh_token)})
        if record is None or record["revoked"]:
            raise ApiError(401, "invalid_refresh_token", "The refresh token is not valid; log in again.")
        if record["used_at"] is not None:
            if _seconds_since(record["used_at"]) < REUSE_GRACE_SECONDS:
                raise _superseded()
            self.revoke_family(record["family_id"])
            raise ApiError(401, "refresh_token_reused",
                           "This refresh token was used before; every session from it has been signed out.")
        if record["expires_at"] < utcnow_iso():
            raise ApiError(401, "refresh_token_expired", "The refresh token has expired; log in again.")
        try:
            self.store.refresh_tokens.update(record["id"], {"used_at": utcnow_iso()},
                                             expected_version=record["version"])
        except VersionConflict:
            # Two refreshes raced with one token (two tabs of one browser): the other one won just now.
            raise _superseded() from None
        user = self.store.users.get(record["user_id"], tenant_id=record["tenant_id"])
        if user is None:
            raise ApiError(401, "invalid_refresh_token", "The account no longer exists.")
        return user, self.issue_tokens(user, family_id=record["family_id"])

    def revoke_family(self, family_id: str) -> None:
        while True:  # revoked tokens leave the filter, so the first page is always the next batch
            batch = self.store.refresh_tokens.find({"family_id": family_id, "revoked": False}, per_page=100)
            for token in batch.items:
                self.store.refresh_tokens.update(token["id"], {"revoked": True})
            if batch.total <= len(batch.items):
                break

    def logout(self, refresh_token: str) -> None:
        record = self.store.refresh_tokens.find_one({"token_hash": _hash_token(refresh_token)})
        if record is not None:
            self.revoke_family(record["family_id"])

    def revoke_user(self, user_id: str) -> None:
        self.store.refresh_tokens.delete_where({"user_id": user_id})
