"""Playback tokens: signed, short-lived, scoped to one video and its tenant, carried in `?token=` so players
need no headers; and share tokens for unlisted videos, revoked by rotating the video's `share_version`."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import jwt

from services.errors import ApiError
from services.tokens import TokenError

AUDIENCE = "reelhouse-playback"


class PlaybackTokens:
    def __init__(self, secret: bytes, *, issuer: str = "reelhouse", ttl: int = 3600):
        if len(secret) < 32:
            raise ValueError("the playback secret needs at least 32 bytes")
        self._secret, self.issuer, self.ttl = secret, issuer, ttl

    def _encode(self, claims: dict[str, Any]) -> str:
        return jwt.encode({"iss": self.issuer, "aud": AUDIENCE, **claims}, self._secret, algorithm="HS256")

    def issue(self, video: dict[str, Any], now: float | None = None, *, user_id: str | None = None,
              shared: bool = False) -> tuple[str, str]:
        """A token to watch `video` for `ttl` seconds, and its expiry (ISO 8601). It names who it was issued to
        (`user_id`), or that it came from the share link (`shared`), so access is checked again on every use."""
        now = int(time.time() if now is None else now)
        expires = now + self.ttl
        claims = {"typ": "play", "vid": video["id"], "tid": video["tenant_id"], "iat": now, "exp": expires}
        if user_id:
            claims["sub"] = user_id
        if shared:
            claims["sv"] = video.get("share_version", 0)
        token = self._encode(claims)
        return token, datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def share(self, video: dict[str, Any]) -> str:
        """A long-lived link token for an unlisted video; rotating `share_version` revokes every earlier one."""
        return self._encode({"typ": "share", "vid": video["id"], "tid": video["tenant_id"],
                             "sv": video.get("share_version", 0), "iat": int(time.time())})

    def verify(self, token: str, video_id: str) -> dict[str, Any]:
        """Claims of a valid token for `video_id`. TokenError codes: invalid_token / token_expired (401),
        token_scope (403: a valid token for another video)."""
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], audience=AUDIENCE, issuer=self.issuer,
                                options={"require": ["iat", "vid", "tid", "typ"]})
        except jwt.ExpiredSignatureError:
            raise TokenError("token_expired", "This playback link has expired; reload the page for a new one.") \
                from None
        except jwt.InvalidTokenError:
            raise TokenError("invalid_token", "This playback token is not valid.") from None
        if claims["typ"] not in ("play", "share") or (claims["typ"] == "play" and "exp" not in claims):
            raise TokenError("invalid_token", "This playback token is not valid.")
        if claims["vid"] != video_id:
            raise TokenError("token_scope", "This playback token is for another video.")
        return claims


def claims_or_error(tokens: PlaybackTokens, token: str, video_id: str) -> dict[str, Any]:
    """`tokens.verify`, with failures as the contract's errors: 403 for another video's token, else 401."""
    try:
        return tokens.verify(token, video_id)
    except TokenError as error:
        raise ApiError(403 if error.code == "token_scope" else 401, error.code, error.message) from None
