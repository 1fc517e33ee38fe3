"""Fixtures shared by every test folder: config on a temp data dir, the embedded app, clients, accounts."""

from __future__ import annotations

import pytest

from services.config import Config
from services.testing import Api


@pytest.fixture
def make_config(tmp_path):
    def make(**env) -> Config:
        base = {"REELHOUSE_DATA_DIR": str(tmp_path / "data")}
        base.update({k: str(v) for k, v in env.items()})
        return Config.from_env(base)

    return make


@pytest.fixture
def config(make_config) -> Config:
    return make_config()


@pytest.fixture
def app(config):
    from reelhouse_gateway import create_app

    app = create_app(config)
    app.config["TESTING"] = True
    yield app
    app.extensions["reelhouse"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def api(client):
    return Api(client)
