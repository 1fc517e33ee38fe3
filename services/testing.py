"""Test support shared by every service's tests (fixtures live in the root conftest.py)."""

from __future__ import annotations

import os
import socket

import pytest

STRONG_PASSWORD = "correct horse battery"  # noqa: S105 - test fixture


def require_infra(what: str) -> None:
    """Skip when a real component is missing, except in CI (REELHOUSE_REQUIRE_INFRA=1), where it fails."""
    message = f"{what} is not available"
    if os.environ.get("REELHOUSE_REQUIRE_INFRA") == "1":
        pytest.fail(message + " and REELHOUSE_REQUIRE_INFRA=1")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    """A thin helper over a Flask test client for registering tenants and calling with tokens."""

    def __init__(self, client):
        self.client = client

    def register(self, tenant_name="Acme", email="admin@acme.test", password=STRONG_PASSWORD, **extra):
        response = self.client.post("/api/auth/register", json={
            "tenant_name": tenant_name, "email": email, "password": password, **extra})
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def login(self, email, password=STRONG_PASSWORD, **extra):
        return self.client.post("/api/auth/login", json={"email": email, "password": password, **extra})

    def call(self, method, path, token=None, **kwargs):
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def add_user(self, admin_token, email, role, password=STRONG_PASSWORD):
        response = self.call("POST", "/api/auth/users", admin_token,
                             json={"email": email, "password": password, "role": role})
        assert response.status_code == 201, response.get_json()
        user = response.get_json()
        tokens = self.login(email, password).get_json()
        return user, tokens["access_token"]


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The contract's error shape with the expected status (and code)."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:500])
    body = response.get_json()
    assert set(body) >= {"error"} and isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    assert "Traceback" not in response.get_data(as_text=True)
    return body["error"]
