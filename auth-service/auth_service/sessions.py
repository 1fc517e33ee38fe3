"""Register, login, refresh, logout, me and the public key set."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from auth_service.accounts import Accounts, public_tenant, public_user
from services.authz import current_principal
from services.errors import ApiError
from services.web import fields, json_body

bp = Blueprint("sessions", __name__, url_prefix="/api/auth")


def accounts() -> Accounts:
    return current_app.extensions["accounts"]


@bp.post("/register")
def register():
    body = fields(json_body(), {"tenant_name": str, "email": str, "password": str}, {"display_name": str})
    tenant, user = accounts().register(body["tenant_name"], body["email"], body["password"], body.get("display_name"))
    tokens = accounts().issue_tokens(user)
    return jsonify(tenant=public_tenant(tenant), user=public_user(user), **tokens), 201


@bp.post("/login")
def login():
    body = fields(json_body(), {"email": str, "password": str}, {"tenant": str})
    user = accounts().authenticate(body["email"], body["password"], body.get("tenant"))
    return jsonify(user=public_user(user), **accounts().issue_tokens(user))


@bp.post("/refresh")
def refresh():
    body = fields(json_body(), {"refresh_token": str})
    user, tokens = accounts().refresh(body["refresh_token"])
    return jsonify(user=public_user(user), **tokens)


@bp.post("/logout")
def logout():
    body = fields(json_body(), {"refresh_token": str})
    accounts().logout(body["refresh_token"])
    return "", 204


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
