"""Admin-only management of the users of the caller's tenant."""

from __future__ import annotations

from flask import Blueprint, jsonify

from auth_service.accounts import check_role, public_user
from auth_service.sessions import accounts
from services.authz import current_principal, require_role
from services.errors import ApiError
from services.web import fields, json_body, page_args

bp = Blueprint("users", __name__, url_prefix="/api/auth/users")


def _user_or_404(user_id: str) -> dict:
    user = accounts().store.users.get(user_id, tenant_id=current_principal().tenant_id)
    if user is None:
        raise ApiError(404, "not_found", "No such user in this organisation.")
    return user


def _refuse_if_last_admin(user: dict) -> None:
    if user["role"] != "admin":
        return
    admins = accounts().store.users.find({"tenant_id": user["tenant_id"], "role": "admin"}, per_page=2)
    if admins.total <= 1:
        raise ApiError(409, "last_admin", "An organisation keeps at least one admin.")


@bp.get("")
@require_role("admin")
def list_users():
    page, per_page = page_args()
    result = accounts().store.users.find({"tenant_id": current_principal().tenant_id}, page=page, per_page=per_page)
    return jsonify(items=[public_user(u) for u in result.items], total=result.total, page=page, per_page=per_page)


@bp.post("")
@require_role("admin")
def create_user():
    body = fields(json_body(), {"email": str, "password": str, "role": str}, {"display_name": str})
    user = accounts().create_user(current_principal().tenant_id, body["email"], body["password"], body["role"],
                                  body.get("display_name"))
    return jsonify(public_user(user)), 201


@bp.get("/<user_id>")
@require_role("admin")
def get_user(user_id: str):
    return jsonify(public_user(_user_or_404(user_id)))


@bp.patch("/<user_id>")
@require_role("admin")
def update_user(user_id: str):
    body = fields(json_body(), {}, {"role": str, "display_name": str})
    if not body:
        raise ApiError(422, "validation_error", "Send role and/or display_name.")
    user = _user_or_404(user_id)
    changes = {}
    if "role" in body and check_role(body["role"]) != user["role"]:
        _refuse_if_last_admin(user)
        changes["role"] = body["role"]
    if "display_name" in body:
        name = body["display_name"].strip()
        if not 1 <= len(name) <= 100:
            raise ApiError(422, "validation_error", "display_name must have 1 to 100 characters")
        changes["display_name"] = name
    if changes:
        user = accounts().store.users.update(user_id, changes, tenant_id=user["tenant_id"])
        if "role" in changes:
            accounts().revoke_user(user_id)  # sessions must pick up the new role at the next login
    return jsonify(public_user(user))


@bp.delete("/<user_id>")
@require_role("admin")
def delete_user(user_id: str):
    user = _user_or_404(user_id)
    _refuse_if_last_admin(user)
    accounts().store.users.delete(user_id, tenant_id=user["tenant_id"])
    accounts().revoke_user(user_id)
    return "", 204
