"""Register, login, refresh, logout, me and the public key set."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from auth_service.accounts import Accounts, public_tenant, public_user
from services.authz import current_principal
from services.errors import ApiError
from services.web import fields, json_body

bp = Blueprint("sessions", __name__, url_prefix="/api/auth")

# Browser sessions keep the refresh token in an HttpOnly cookie that only /api/auth ever receives, so page
# scripts (and anything injected into them) can never read it; API clients keep getting it in the body.
REFRESH_COOKIE = "reelhouse_refresh"
SESSION_MODES = ("body", "cookie")


def accounts() -> Accounts:
    return current_app.extensions["accounts"]


@bp.post("/register")
def register():
    body = fields(json_body(), {"tenant_name": str, "email": str, "password": str},
                  {"display_name": str, "session": str})
    mode = _session_mode(body)
    tenant, user = accounts().register(body["tenant_name"], body["email"], body["password"], body.get("display_name"))
    tokens = accounts().issue_tokens(user)
    return _with_tokens({"tenant": public_tenant(tenant), "user": public_user(user)}, tokens, mode, 201)


@bp.post("/login")
def login():
    body = fields(json_body(), {"email": str, "password": str}, {"tenant": str, "session": str})
    mode = _session_mode(body)
    lockout = current_app.extensions["lockout"]
    lockout.check(body["email"], request.remote_addr or "")
    try:
        user = accounts().authenticate(body["email"], body["password"], body.get("tenant"))
    except ApiError as error:
        if error.status == 401:
            lockout.failed(body["email"])
        raise
    lockout.succeeded(body["email"], request.remote_addr or "")
    return _with_tokens({"user": public_user(user)}, accounts().issue_tokens(user), mode)


@bp.post("/refresh")
def refresh():
    token, mode = _refresh_token_of(fields(json_body(), {}, {"refresh_token": str}))
    try:
        user, tokens = accounts().refresh(token)
    except ApiError as error:
        if mode == "cookie" and error.status == 401:  # not on 409: the browser already holds the newer cookie
            error.headers = {**(error.headers or {}), "Set-Cookie": _expired_cookie()}
        raise
    return _with_tokens({"user": public_user(user)}, tokens, mode)


@bp.post("/logout")
def logout():
    token, mode = _refresh_token_of(fields(json_body(), {}, {"refresh_token": str}))
    accounts().logout(token)
    response = current_app.response_class(status=204)
    if mode == "cookie":
        response.headers["Set-Cookie"] = _expired_cookie()
    return response


def _session_mode(body: dict) -> str:
    mode = body.get("session", "body")
    if mode not in SESSION_MODES:
        raise ApiError(422, "validation_error", "session must be 'body' or 'cookie'.",
                       fields={"session": "must be 'body' or 'cookie'"})
    return mode


def _refresh_token_of(body: dict) -> tuple[str, str]:
    """The refresh token from the body (API clients) or else from the session cookie (browsers)."""
    if "refresh_token" in body:
        return body["refresh_token"], "body"
    cookie = request.cookies.get(REFRESH_COOKIE)
    if cookie:
        return cookie, "cookie"
    raise ApiError(422, "validation_error", "refresh_token is required (in the body, or the session cookie).",
                   fields={"refresh_token": "is required"})


def _with_tokens(payload: dict, tokens: dict, mode: str, status: int = 200):
    if mode == "body":
        return jsonify(**payload, **tokens), status
    refresh_token = tokens.pop("refresh_token")
    response = jsonify(**payload, **tokens)
    response.status_code = status
    response.set_cookie(REFRESH_COOKIE, refresh_token, max_age=accounts().config.refresh_token_ttl,
                        path="/api/auth", secure=request.is_secure, httponly=True, samesite="Strict")
    response.headers["Cache-Control"] = "no-store"
    return response


def _expired_cookie() -> str:
    secure = "; Secure" if request.is_secure else ""
    return (f"{REFRESH_COOKIE}=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/api/auth; HttpOnly{secure};"
            " SameSite=Strict")


@bp.get("/me")
def me():
    principal = current_principal()
    store = accounts().store
    user = store.users.get(principal.user_id, tenant_id=principal.tenant_id)
    tenant = store.tenants.get(principal.tenant_id)
    if user is None or tenant is None:
        raise ApiError(401, "invalid_token", "The account behind this token no longer exists.")
    return jsonify(user=public_user(user), tenant=public_tenant(tenant))


@bp.get("/.well-known/jwks.json")
def jwks():
    response = jsonify(accounts().key.jwks)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
