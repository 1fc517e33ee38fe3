"""Config.from_env: defaults under the data dir, and malformed settings named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.config import Config, ConfigError


def test_defaults_put_everything_under_the_data_dir(tmp_path):
    config = Config.from_env({"REELHOUSE_DATA_DIR": str(tmp_path)})
    assert config.data_dir == tmp_path
    assert config.database_url == f"sqlite:///{tmp_path / 'reelhouse.db'}"
    assert config.sqlite_path == tmp_path / "reelhouse.db"
    assert config.storage_url.startswith("file:///")
    assert config.storage_path == tmp_path / "objects"
    assert config.broker_url == "memory://"
    assert config.port == 8080
    assert config.host == "127.0.0.1"
    assert config.jwt_private_key is None
    assert config.jwks_url is None
    assert config.cors_origins == ()


def test_default_data_dir_is_data_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = Config.from_env({})
    assert config.data_dir == tmp_path / "data"
    assert config.data_dir.is_absolute()
    assert config.sqlite_path == tmp_path / "data" / "reelhouse.db"
    assert config.storage_path == tmp_path / "data" / "objects"


def test_env_none_reads_the_process_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("REELHOUSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("REELHOUSE_PORT", "9123")
    config = Config.from_env()
    assert config.data_dir == tmp_path and config.port == 9123


def test_data_dir_with_spaces_and_non_ascii_characters(tmp_path):
    data_dir = tmp_path / "my videos" / "Zoë 100%"
    config = Config.from_env({"REELHOUSE_DATA_DIR": str(data_dir)})
    assert config.sqlite_path == data_dir / "reelhouse.db"
    assert config.storage_path == data_dir / "objects"


def test_explicit_urls_are_kept(tmp_path):
    env = {
        "REELHOUSE_DATA_DIR": str(tmp_path),
        "DATABASE_URL": "mongodb://mongo:27017/reelhouse",
        "STORAGE_URL": "s3://media",
        "S3_ENDPOINT_URL": "http://minio:9000",
        "BROKER_URL": "amqp://guest:guest@rabbitmq:5672/%2f",
        "AUTH_URL": "http://auth:8080/",
        "REELHOUSE_PORT": "9000",
        "CORS_ORIGINS": "https://a.example, https://b.example ,",
        "LOG_LEVEL": "debug",
    }
    config = Config.from_env(env)
    assert config.database_url == env["DATABASE_URL"]
    assert config.storage_url == "s3://media"
    assert config.s3_endpoint_url == "http://minio:9000"
    assert config.broker_url == env["BROKER_URL"]
    assert config.port == 9000
    assert config.cors_origins == ("https://a.example", "https://b.example")
    assert config.log_level == "DEBUG"
    assert config.jwks_url == "http://auth:8080/api/auth/.well-known/jwks.json"


def test_sqlite_and_file_urls_map_to_paths(tmp_path):
    config = Config.from_env({
        "REELHOUSE_DATA_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path}/meta/db.sqlite",
        "STORAGE_URL": (tmp_path / "blobs").as_uri(),
    })
    assert config.sqlite_path == tmp_path / "meta" / "db.sqlite"
    assert config.storage_path == tmp_path / "blobs"


def test_empty_values_fall_back_to_defaults(tmp_path):
    config = Config.from_env({"REELHOUSE_DATA_DIR": str(tmp_path), "DATABASE_URL": "", "BROKER_URL": "",
                              "REELHOUSE_PORT": ""})
    assert config.sqlite_path == tmp_path / "reelhouse.db"
    assert config.broker_url == "memory://"
    assert config.port == 8080


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "postgres://x"),
        ("DATABASE_URL", "sqlite://"),
        ("DATABASE_URL", "sqlite:///"),
        ("DATABASE_URL", "reelhouse.db"),
        ("STORAGE_URL", "s3://"),
        ("STORAGE_URL", "ftp://host/dir"),
        ("STORAGE_URL", "file://otherhost/dir"),
        ("STORAGE_URL", "/just/a/path"),
        ("BROKER_URL", "redis://x"),
        ("BROKER_URL", "rabbitmq"),
        ("REELHOUSE_PORT", "abc"),
        ("REELHOUSE_PORT", "70000"),
        ("REELHOUSE_PORT", "0"),
        ("REELHOUSE_PORT", "-1"),
        ("REELHOUSE_PORT", "80.5"),
        ("S3_ENDPOINT_URL", "minio:9000"),
        ("AUTH_URL", "ftp://auth"),
        ("ACCESS_TOKEN_TTL", "5"),
        ("ACCESS_TOKEN_TTL", "soon"),
        ("REFRESH_TOKEN_TTL", "999999999"),
        ("RATE_LIMIT_STORAGE_URL", "nosql://x"),
        ("LOG_LEVEL", "LOUD"),
    ],
)
def test_malformed_setting_raises_config_error_naming_the_variable(tmp_path, variable, value):
    with pytest.raises(ConfigError) as info:
        Config.from_env({"REELHOUSE_DATA_DIR": str(tmp_path), variable: value})
    assert variable in str(info.value)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_config_is_immutable(tmp_path):
    config = Config.from_env({"REELHOUSE_DATA_DIR": str(tmp_path)})
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]
    assert isinstance(config.data_dir, Path)


@pytest.mark.parametrize("name,value", [("AUTH_LOGIN_RATE_LIMIT", "banana"), ("AUTH_REGISTER_RATE_LIMIT", "5 per"),
                                        ("DATABASE_URL", "mongodb://"), ("TRUSTED_PROXIES", "11"),
                                        ("NOTIFY_ASYNC_MODE", "eventlet"), ("REELHOUSE_THREADS", "2")])
def test_more_malformed_settings_name_their_variable(name, value):
    with pytest.raises(ConfigError) as info:
        Config.from_env({name: value})
    assert name in str(info.value)


def test_async_mode_and_threads(tmp_path):
    config = Config.from_env({"REELHOUSE_DATA_DIR": str(tmp_path)})
    assert (config.notify_async_mode, config.server_threads) == ("threading", 512)
    config = Config.from_env({"REELHOUSE_DATA_DIR": str(tmp_path), "NOTIFY_ASYNC_MODE": "GEVENT",
                              "REELHOUSE_THREADS": "64"})
    assert (config.notify_async_mode, config.server_threads) == ("gevent", 64)


def test_reelhouse_up_refuses_gevent_mode(tmp_path):
    from reelhouse_gateway.server import serve

    with pytest.raises(ConfigError, match="NOTIFY_ASYNC_MODE"):
        serve(Config.from_env({"REELHOUSE_DATA_DIR": str(tmp_path), "NOTIFY_ASYNC_MODE": "gevent"}))
