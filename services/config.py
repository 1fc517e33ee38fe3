"""Configuration read from the environment, in one place (DESIGN §1)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import limits
import pymongo.errors
import pymongo.uri_parser


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Config:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str = ""
    storage_url: str = ""
    broker_url: str = "memory://"
    broker_namespace: str = "reelhouse"
    s3_endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    s3_region: str = "us-east-1"
    jwt_private_key: str | None = None
    jwt_issuer: str = "reelhouse"
    jwt_audience: str = "reelhouse"
    access_token_ttl: int = 900
    refresh_token_ttl: int = 30 * 24 * 3600
    auth_url: str | None = None
    upload_url: str | None = None
    stream_url: str | None = None
    notify_url: str | None = None
    api_rate_limit_per_address: str = "1200 per minute"
    api_rate_limit_per_tenant: str = "6000 per minute"
    upstream_connect_timeout: float = 5.0
    upstream_read_timeout: float = 120.0
    client_body_timeout: float = 60.0
    rate_limit_storage_url: str = "memory://"
    login_rate_limit: str = "15 per 5 minutes"
    account_login_rate_limit: str = "10 per 15 minutes"
    register_rate_limit: str = "20 per hour"
    cors_origins: tuple[str, ...] = ()
    log_level: str = "INFO"
    frontend_dir: Path | None = None
    tus_max_size: int = 16 * 1024**3
    upload_expiry: int = 24 * 3600
    tenant_quota_bytes: int = 100 * 1024**3
    upload_part_size: int = 8 * 1024**2
    express_max_duration: int = 120
    trusted_proxies: int = 0
    worker_concurrency: int = 1
    worker_grace: int = 30
    job_max_attempts: int = 3
    work_dir: Path | None = None
    playback_secret: str | None = None
    playback_token_ttl: int = 3600
    stream_delivery: str = "proxy"
    webhook_allow_loopback: bool = False
    webhook_retry_base: float = 30.0
    webhook_poll_interval: float = 1.0
    server_threads: int = 512
    notify_async_mode: str = "threading"
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def jwks_url(self) -> str | None:
        """Where services fetch the auth service's public keys (distributed mode only)."""
        if not self.auth_url:
            return None
        return self.auth_url.rstrip("/") + "/api/auth/.well-known/jwks.json"

    def service_urls(self) -> dict[str, str | None]:
        """Where the distributed gateway sends each service's routes (see reelhouse_gateway.routing)."""
        return {"auth": self.auth_url, "upload": self.upload_url, "stream": self.stream_url,
                "notify": self.notify_url}

    @property
    def sqlite_path(self) -> Path:
        return sqlite_path(self.database_url)

    @property
    def storage_path(self) -> Path:
        return file_path(self.storage_url)

    @property
    def s3_bucket(self) -> str:
        return s3_bucket(self.storage_url)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> Config:
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("REELHOUSE_DATA_DIR") or "./data").expanduser().absolute()
        values = dict(
            data_dir=data_dir,
            host=env.get("REELHOUSE_HOST", "127.0.0.1"),
            port=_int(env, "REELHOUSE_PORT", 8080, 1, 65535),
            database_url=env.get("DATABASE_URL") or f"sqlite:///{data_dir / 'reelhouse.db'}",
            storage_url=env.get("STORAGE_URL") or (data_dir / "objects").as_uri(),
            broker_url=env.get("BROKER_URL") or "memory://",
            broker_namespace=env.get("BROKER_NAMESPACE") or "reelhouse",
            s3_endpoint_url=env.get("S3_ENDPOINT_URL") or None,
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            s3_region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            jwt_private_key=env.get("JWT_PRIVATE_KEY") or None,
            jwt_issuer=env.get("JWT_ISSUER", "reelhouse"),
            jwt_audience=env.get("JWT_AUDIENCE", "reelhouse"),
            access_token_ttl=_int(env, "ACCESS_TOKEN_TTL", 900, 30, 24 * 3600),
            refresh_token_ttl=_int(env, "REFRESH_TOKEN_TTL", 30 * 24 * 3600, 60, 365 * 24 * 3600),
            auth_url=env.get("AUTH_URL") or None,
            upload_url=env.get("UPLOAD_URL") or None,
            stream_url=env.get("STREAM_URL") or None,
            notify_url=env.get("NOTIFY_URL") or None,
            api_rate_limit_per_address=env.get("API_RATE_LIMIT_PER_ADDRESS") or "1200 per minute",
            api_rate_limit_per_tenant=env.get("API_RATE_LIMIT_PER_TENANT") or "6000 per minute",
            upstream_connect_timeout=_float(env, "UPSTREAM_CONNECT_TIMEOUT", 5.0, 0.1, 60.0),
            upstream_read_timeout=_float(env, "UPSTREAM_READ_TIMEOUT", 120.0, 1.0, 3600.0),
            client_body_timeout=_float(env, "CLIENT_BODY_TIMEOUT", 60.0, 1.0, 3600.0),
            rate_limit_storage_url=env.get("RATE_LIMIT_STORAGE_URL") or "memory://",
            login_rate_limit=env.get("AUTH_LOGIN_RATE_LIMIT") or "15 per 5 minutes",
            account_login_rate_limit=env.get("AUTH_ACCOUNT_LOGIN_RATE_LIMIT") or "10 per 15 minutes",
            register_rate_limit=env.get("AUTH_REGISTER_RATE_LIMIT") or "20 per hour",
            cors_origins=tuple(o.strip() for o in env.get("CORS_ORIGINS", "").split(",") if o.strip()),
            log_level=(env.get("LOG_LEVEL") or "INFO").upper(),
            frontend_dir=Path(env["FRONTEND_DIR"]) if env.get("FRONTEND_DIR") else None,
            tus_max_size=_int(env, "TUS_MAX_SIZE", 16 * 1024**3, 1, 5 * 1024**4),
            upload_expiry=_int(env, "UPLOAD_EXPIRY", 24 * 3600, 60, 30 * 24 * 3600),
            tenant_quota_bytes=_int(env, "TENANT_QUOTA_BYTES", 100 * 1024**3, 0, 1024**5),
            upload_part_size=_int(env, "UPLOAD_PART_SIZE", 8 * 1024**2, 5 * 1024**2, 64 * 1024**2),
            express_max_duration=_int(env, "EXPRESS_MAX_DURATION", 120, 0, 24 * 3600),
            trusted_proxies=_int(env, "TRUSTED_PROXIES", 0, 0, 10),
            worker_concurrency=_int(env, "WORKER_CONCURRENCY", 1, 0, 64),
            worker_grace=_int(env, "WORKER_GRACE_SECONDS", 30, 0, 24 * 3600),
            job_max_attempts=_int(env, "JOB_MAX_ATTEMPTS", 3, 1, 20),
            work_dir=Path(env["WORK_DIR"]) if env.get("WORK_DIR") else None,
            playback_secret=env.get("PLAYBACK_SECRET") or None,
            playback_token_ttl=_int(env, "PLAYBACK_TOKEN_TTL", 3600, 60, 7 * 24 * 3600),
            stream_delivery=(env.get("STREAM_DELIVERY") or "proxy").lower(),
            webhook_allow_loopback=env.get("WEBHOOK_ALLOW_LOOPBACK", "") in ("1", "true", "yes"),
            webhook_retry_base=_float(env, "WEBHOOK_RETRY_BASE_SECONDS", 30.0, 0.01, 3600.0),
            webhook_poll_interval=_float(env, "WEBHOOK_POLL_SECONDS", 1.0, 0.01, 60.0),
            server_threads=_int(env, "REELHOUSE_THREADS", 512, 4, 10_000),
            notify_async_mode=(env.get("NOTIFY_ASYNC_MODE") or "threading").lower(),
        )
        values.update(overrides)
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        _check_url("DATABASE_URL", self.database_url, {"sqlite", "mongodb", "mongodb+srv"})
        if self.database_url.startswith("sqlite"):
            sqlite_path(self.database_url)
        _check_url("STORAGE_URL", self.storage_url, {"file", "s3"})
        if self.storage_url.startswith("s3:"):
            s3_bucket(self.storage_url)
        if not _REGION.fullmatch(self.s3_region):
            raise ConfigError(f"AWS_REGION: {self.s3_region!r} is not a region name like us-east-1 "
                              "(read from AWS_REGION, else AWS_DEFAULT_REGION)")
        if self.storage_url.startswith("file:"):
            file_path(self.storage_url)
        _check_url("BROKER_URL", self.broker_url, {"memory", "amqp", "amqps"})
        if not _NAMESPACE.fullmatch(self.broker_namespace):
            raise ConfigError(f"BROKER_NAMESPACE: {self.broker_namespace!r} must be 1-100 lowercase letters, digits, "
                              "'_', '.' or '-' (it prefixes the RabbitMQ queue and exchange names)")
        if self.s3_endpoint_url:
            _check_url("S3_ENDPOINT_URL", self.s3_endpoint_url, {"http", "https"})
        for name in ("AUTH_URL", "UPLOAD_URL", "STREAM_URL", "NOTIFY_URL"):
            value = getattr(self, name.lower())
            if value:
                _check_url(name, value, {"http", "https"})
        _check_url("RATE_LIMIT_STORAGE_URL", self.rate_limit_storage_url,
                   {"memory", "redis", "rediss", "redis+cluster", "memcached", "mongodb"})
        if self.database_url.startswith("mongodb"):
            try:
                pymongo.uri_parser.parse_uri(self.database_url)
            except (pymongo.errors.PyMongoError, ValueError) as error:
                raise ConfigError(f"DATABASE_URL: {self.database_url!r} is not a MongoDB URL ({error})") from None
        for name, value in (("AUTH_LOGIN_RATE_LIMIT", self.login_rate_limit),
                            ("AUTH_ACCOUNT_LOGIN_RATE_LIMIT", self.account_login_rate_limit),
                            ("AUTH_REGISTER_RATE_LIMIT", self.register_rate_limit),
                            ("API_RATE_LIMIT_PER_ADDRESS", self.api_rate_limit_per_address),
                            ("API_RATE_LIMIT_PER_TENANT", self.api_rate_limit_per_tenant)):
            try:
                if not limits.parse_many(value):
                    raise ValueError("empty")
            except ValueError:
                raise ConfigError(f"{name}: {value!r} is not a rate limit such as '15 per 5 minutes'") from None
        if self.stream_delivery not in ("proxy", "redirect"):
            raise ConfigError(f"STREAM_DELIVERY: {self.stream_delivery!r} must be proxy or redirect")
        if self.playback_secret is not None and len(self.playback_secret) < 32:
            raise ConfigError("PLAYBACK_SECRET: use at least 32 characters of random text")
        if self.notify_async_mode not in ("threading", "gevent"):
            raise ConfigError(f"NOTIFY_ASYNC_MODE: {self.notify_async_mode!r} must be threading or gevent "
                              "(gevent only under `gunicorn -k gevent`)")
        if self.log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError(f"LOG_LEVEL: {self.log_level!r} is not a log level")


def sqlite_path(url: str) -> Path:
    """`sqlite:///rel/path.db` or `sqlite:////abs/path.db` (SQLAlchemy's convention)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ConfigError(f"DATABASE_URL: {url!r} is not sqlite:///path/to/file.db")
    return Path(url[len(prefix):])


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[a-z0-9][a-z0-9\-]{0,62}")
_NAMESPACE = re.compile(r"[a-z0-9_.\-]{1,100}")


def s3_bucket(url: str) -> str:
    """`s3://bucket`: the whole bucket is the store. A key prefix (`s3://bucket/prefix`) is refused rather than
    half-supported; give the store its own bucket."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigError(f"STORAGE_URL: {url!r} names no bucket (expected s3://bucket)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"STORAGE_URL: {url!r} has a path; only s3://bucket is supported, with no key prefix")
    if not _BUCKET.fullmatch(parts.netloc) or ".." in parts.netloc:
        raise ConfigError(f"STORAGE_URL: {parts.netloc!r} is not a valid S3 bucket name "
                          "(3-63 lowercase letters, digits, dots and hyphens)")
    return parts.netloc


def file_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost") or not parts.path:
        raise ConfigError(f"STORAGE_URL: {url!r} is not file:///path/to/dir")
    return Path(unquote(parts.path))  # file: URLs are percent-encoded (Path.as_uri() writes "%20" for " ")


def _check_url(name: str, value: str, schemes: set[str]) -> None:
    scheme = urlsplit(value).scheme if "://" in value or value.startswith("file:") else ""
    if scheme not in schemes:
        raise ConfigError(f"{name}: {value!r} must start with one of {', '.join(sorted(s + '://' for s in schemes))}")


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}: {value} is outside {low}..{high}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}: {value} is outside {low}..{high}")
    return value
