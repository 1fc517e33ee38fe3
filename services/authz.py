"""Who is calling: `current_principal()` from the bearer token, and `require_role(...)` for views."""

from __future__ import annotations

from functools import wraps

from flask import current_app, g, request

from services.errors import ApiError
from services.tokens import ROLES, Principal, TokenError


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": f'Bearer error="{code}"'})


def current_principal() -> Principal:
    if "principal" in g:
        return g.principal
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("missing_token", "Send an access token: Authorization: Bearer <token>.")
    deps = current_app.extensions["reelhouse"]
    try:
        claimed = deps.verifier.principal(token.strip())
    except TokenError as error:
        if error.code == "auth_unavailable":
            raise ApiError(503, error.code, error.message) from None
        raise _unauthorized(error.code, error.message) from None
    # The role is read from the user record, not trusted from the token: removing a user or changing their role
    # takes effect at once, not when their access token expires.
    user = deps.metadata.users.get(claimed.user_id, tenant_id=claimed.tenant_id)
    if user is None:
        raise _unauthorized("invalid_token", "The account behind this token no longer exists.")
    g.principal = Principal(claimed.user_id, claimed.tenant_id, user["role"], claimed.claims)
    return g.principal


def require_role(minimum: str = "viewer"):
    """Allow callers whose role is `minimum` or above (viewer < editor < admin); 401 without a token, 403 below."""
    if minimum not in ROLES:
        raise ValueError(f"unknown role {minimum!r}")

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            principal = current_principal()
            if not principal.has_role(minimum):
                raise ApiError(403, "forbidden", f"This needs the {minimum} role or above.")
            return view(*args, **kwargs)

        return wrapper

    return decorator
