"""Admin-only user management, roles, and tenant isolation (another tenant's user answers 404)."""

from __future__ import annotations

import pytest

from services.testing import STRONG_PASSWORD, assert_error


@pytest.fixture
def admin(api):
    return api.register(tenant_name="Acme", email="admin@acme.test")["access_token"]


def test_admin_adds_lists_changes_and_removes_users(api, admin):
    user, _ = api.add_user(admin, "Ed@Acme.test", "editor")
    assert user["email"] == "ed@acme.test" and user["role"] == "editor" and "password_hash" not in user
    listing = api.call("GET", "/api/auth/users", admin).get_json()
    assert listing["total"] == 2 and [u["email"] for u in listing["items"]] == ["admin@acme.test", "ed@acme.test"]
    assert api.call("GET", f"/api/auth/users/{user['id']}", admin).get_json() == user

    changed = api.call("PATCH", f"/api/auth/users/{user['id']}", admin, json={"role": "viewer", "display_name": "Ed"})
    assert changed.status_code == 200
    assert changed.get_json()["role"] == "viewer" and changed.get_json()["display_name"] == "Ed"
    # A new login carries the new role.
    token = api.login("ed@acme.test").get_json()["access_token"]
    assert_error(api.call("GET", "/api/auth/users", token), 403, "forbidden")

    assert api.call("DELETE", f"/api/auth/users/{user['id']}", admin).status_code == 204
    assert_error(api.call("GET", f"/api/auth/users/{user['id']}", admin), 404, "not_found")
    assert_error(api.login("ed@acme.test"), 401, "invalid_credentials")
    assert_error(api.call("GET", "/api/auth/me", token), 401, "invalid_token")


def test_pagination_of_users(api, admin):
    for i in range(4):
        api.call("POST", "/api/auth/users", admin, json={"email": f"u{i}@acme.test", "password": STRONG_PASSWORD,
                                                          "role": "viewer"})
    first = api.call("GET", "/api/auth/users?page=1&per_page=2", admin).get_json()
    third = api.call("GET", "/api/auth/users?page=3&per_page=2", admin).get_json()
    assert first["total"] == 5 and len(first["items"]) == 2 and len(third["items"]) == 1
    assert_error(api.call("GET", "/api/auth/users?page=0", admin), 422)
    assert_error(api.call("GET", "/api/auth/users?per_page=abc", admin), 422)


def test_role_change_ends_the_users_sessions(api, admin):
    api.add_user(admin, "ed@acme.test", "editor")
    session = api.login("ed@acme.test").get_json()
    listing = api.call("GET", "/api/auth/users", admin).get_json()
    ed = next(u for u in listing["items"] if u["email"] == "ed@acme.test")
    api.call("PATCH", f"/api/auth/users/{ed['id']}", admin, json={"role": "admin"})
    assert_error(api.client.post("/api/auth/refresh", json={"refresh_token": session["refresh_token"]}), 401)


@pytest.mark.parametrize("role", ["viewer", "editor"])
def test_non_admins_are_refused_everywhere(api, admin, role):
    user, token = api.add_user(admin, f"{role}@acme.test", role)
    target = f"/api/auth/users/{user['id']}"
    for method, path, body in [("GET", "/api/auth/users", None), ("POST", "/api/auth/users", {
            "email": "x@acme.test", "password": STRONG_PASSWORD, "role": "admin"}), ("GET", target, None),
            ("PATCH", target, {"role": "admin"}), ("DELETE", target, None)]:
        assert_error(api.call(method, path, token, json=body), 403, "forbidden")
    # ...and nothing changed.
    assert api.call("GET", target, admin).get_json()["role"] == role


def test_another_tenants_user_is_404(api, admin):
    other = api.register(tenant_name="Globex", email="boss@globex.test")
    foreign = other["user"]["id"]
    for method, body in [("GET", None), ("PATCH", {"role": "viewer"}), ("DELETE", None)]:
        assert_error(api.call(method, f"/api/auth/users/{foreign}", admin, json=body), 404, "not_found")
    assert_error(api.call("GET", "/api/auth/users/does-not-exist", admin), 404, "not_found")
    listing = api.call("GET", "/api/auth/users", admin).get_json()
    assert [u["email"] for u in listing["items"]] == ["admin@acme.test"]
    # Globex's admin is untouched.
    assert api.call("GET", "/api/auth/me", other["access_token"]).get_json()["user"]["role"] == "admin"


def test_the_last_admin_stays(api, admin):
    me = api.call("GET", "/api/auth/me", admin).get_json()["user"]
    assert_error(api.call("PATCH", f"/api/auth/users/{me['id']}", admin, json={"role": "viewer"}), 409, "last_admin")
    assert_error(api.call("DELETE", f"/api/auth/users/{me['id']}", admin), 409, "last_admin")
    second, _ = api.add_user(admin, "second@acme.test", "admin")
    assert api.call("PATCH", f"/api/auth/users/{me['id']}", admin, json={"role": "editor"}).status_code == 200
    assert api.call("GET", f"/api/auth/users/{second['id']}", api.login("second@acme.test").get_json()["access_token"]
                    ).status_code == 200


def test_bad_user_input(api, admin):
    api.add_user(admin, "ed@acme.test", "editor")
    assert_error(api.call("POST", "/api/auth/users", admin, json={
        "email": "ED@acme.test", "password": STRONG_PASSWORD, "role": "viewer"}), 409, "email_taken")
    assert_error(api.call("POST", "/api/auth/users", admin, json={
        "email": "new@acme.test", "password": STRONG_PASSWORD, "role": "owner"}), 422, "invalid_role")
    assert_error(api.call("POST", "/api/auth/users", admin, json={
        "email": "new@acme.test", "password": "1111111111", "role": "viewer"}), 422, "weak_password")
    assert_error(api.call("POST", "/api/auth/users", admin, json={"email": "new@acme.test"}), 422, "validation_error")
    assert_error(api.call("POST", "/api/auth/users", admin, data=b"{", content_type="application/json"), 400,
                 "invalid_json")
    me = api.call("GET", "/api/auth/me", admin).get_json()["user"]
    assert_error(api.call("PATCH", f"/api/auth/users/{me['id']}", admin, json={}), 422, "validation_error")
    assert_error(api.call("PATCH", f"/api/auth/users/{me['id']}", admin, json={"display_name": "  "}), 422)
