"""End to end: a real `reelhouse up` process, driven over HTTP like a user with curl would."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import requests

from services.testing import STRONG_PASSWORD, free_port

pytestmark = pytest.mark.e2e


class Process:
    def __init__(self, data_dir, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"reelhouse-{self.port}.log"
        environment = {**os.environ, "REELHOUSE_DATA_DIR": str(data_dir), "REELHOUSE_PORT": str(self.port), **env}
        self.proc = subprocess.Popen([sys.executable, "-m", "reelhouse_gateway", "up"], env=environment,
                                     stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"reelhouse up exited early:\n{self.log.read_text()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"reelhouse up did not answer within 60 s:\n{self.log.read_text()}")

    def stop(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


def test_register_me_docs_and_restart(data_dir):
    server = Process(data_dir, AUTH_LOGIN_RATE_LIMIT="5 per minute")
    try:
        registered = requests.post(server.url + "/api/auth/register", data=(
            f'{{"tenant_name": "Acme", "email": "me@acme.test", "password": "{STRONG_PASSWORD}"}}'), timeout=10)
        assert registered.status_code == 201, registered.text
        body = registered.json()
        auth = {"Authorization": f"Bearer {body['access_token']}"}
        me = requests.get(server.url + "/api/auth/me", headers=auth, timeout=10)
        assert me.status_code == 200 and me.json()["user"]["email"] == "me@acme.test"
        assert me.headers["X-Request-ID"]

        docs = requests.get(server.url + "/api/docs", timeout=10)
        assert docs.status_code == 200 and "swagger-ui" in docs.text
        assert requests.get(server.url + "/api/openapi.json", timeout=10).json()["openapi"] == "3.1.0"
        assert requests.get(server.url + "/readyz", timeout=10).json()["status"] == "ok"
        assert "reelhouse_http_requests_total" in requests.get(server.url + "/metrics", timeout=10).text

        bad = requests.post(server.url + "/api/auth/login", json={"email": "me@acme.test", "password": "nope"},
                            timeout=10)
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_credentials"
        statuses = [requests.post(server.url + "/api/auth/login", json={"email": "me@acme.test", "password": "x"},
                                  timeout=10).status_code for _ in range(6)]
        assert statuses[:4] == [401] * 4 and statuses[-1] == 429, statuses
        flooded = requests.post(server.url + "/api/auth/login", json={"email": "me@acme.test", "password": "x"},
                                timeout=10)
        assert flooded.json()["error"]["code"] == "rate_limited" and int(flooded.headers["Retry-After"]) > 0
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]

    key_file = data_dir / "keys" / "jwt-ed25519.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    log_lines = server.log.read_text().splitlines()
    assert any("Reelhouse is running at http://localhost:" in line for line in log_lines)

    # Restart on the same data: the same signing key and the same accounts.
    again = Process(data_dir)
    try:
        still = requests.get(again.url + "/api/auth/me", headers=auth, timeout=10)
        assert still.status_code == 200, still.text
        login = requests.post(again.url + "/api/auth/login",
                              json={"email": "me@acme.test", "password": STRONG_PASSWORD}, timeout=10)
        assert login.status_code == 200
        refreshed = requests.post(again.url + "/api/auth/refresh", json={"refresh_token": body["refresh_token"]},
                                  timeout=10)
        assert refreshed.status_code == 200
    finally:
        assert again.stop() == 0


def test_bad_configuration_fails_fast_naming_the_variable(data_dir):
    result = subprocess.run([sys.executable, "-m", "reelhouse_gateway", "up"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "REELHOUSE_DATA_DIR": str(data_dir),
                                             "DATABASE_URL": "postgres://nope"})
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr and "Traceback" not in result.stderr
