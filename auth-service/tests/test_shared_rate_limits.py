"""Login limits shared by several auth replicas through Redis (RATE_LIMIT_STORAGE_URL), as in distributed mode."""

from __future__ import annotations

import secrets
import socket

import pytest

from auth_service import create_app
from services.testing import STRONG_PASSWORD, assert_error, require_infra

REDIS = ("127.0.0.1", 6379)


@pytest.fixture
def redis_url():
    try:
        socket.create_connection(REDIS, timeout=1).close()
    except OSError:
        require_infra("Redis on 127.0.0.1:6379")
    return f"redis://{REDIS[0]}:{REDIS[1]}/0"


@pytest.mark.infra
def test_two_replicas_share_one_login_budget(make_config, redis_url):
    config = make_config(RATE_LIMIT_STORAGE_URL=redis_url, AUTH_LOGIN_RATE_LIMIT="3 per minute")
    first, second = create_app(config).test_client(), create_app(config).test_client()
    # A fresh address per run keeps runs within the same minute apart.
    address = {"REMOTE_ADDR": f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250)}"}
    body = {"email": "nobody@acme.test", "password": STRONG_PASSWORD}
    statuses = [first.post("/api/auth/login", json=body, environ_base=address).status_code,
                second.post("/api/auth/login", json=body, environ_base=address).status_code,
                first.post("/api/auth/login", json=body, environ_base=address).status_code]
    assert statuses == [401, 401, 401]
    flooded = second.post("/api/auth/login", json=body, environ_base=address)
    assert_error(flooded, 429, "rate_limited")
    assert int(flooded.headers["Retry-After"]) > 0
