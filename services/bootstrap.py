"""The composition root: builds each port's adapter from config; tests pass fakes or real adapters instead."""

from __future__ import annotations

from functools import cached_property

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from services.config import Config, ConfigError
from services.playback import PlaybackTokens
from services.ports import EventBus, JobQueue, MetadataStore, ObjectStore
from services.signing_keys import SigningKey, load_playback_secret, load_signing_key
from services.tokens import JwksKeySource, KeySource, StaticKeySource, TokenVerifier


def metadata_from_config(config: Config) -> MetadataStore:
    if config.database_url.startswith("sqlite:"):
        from services.adapters.sqlite_metadata import SqliteMetadataStore

        return SqliteMetadataStore(config.sqlite_path)
    from services.adapters.mongo_metadata import MongoMetadataStore

    return MongoMetadataStore(config.database_url)


def objects_from_config(config: Config) -> ObjectStore:
    if config.storage_url.startswith("file:"):
        from services.adapters.local_objects import LocalObjectStore

        return LocalObjectStore(config.storage_path)
    if config.storage_url.startswith("s3:"):
        from services.adapters.s3_objects import S3ObjectStore

        return S3ObjectStore(
            config.s3_bucket,
            endpoint_url=config.s3_endpoint_url,
            access_key=config.aws_access_key_id,
            secret_key=config.aws_secret_access_key,
            region=config.s3_region,
        )
    raise ConfigError(f"STORAGE_URL: {config.storage_url!r} must start with file:// or s3://")


def jobs_from_config(config: Config) -> JobQueue:
    if config.broker_url.startswith("memory:"):
        from services.adapters.memory_jobs import MemoryJobQueue

        return MemoryJobQueue()
    if config.broker_url.startswith(("amqp:", "amqps:")):
        from services.adapters.rabbitmq_jobs import RabbitJobQueue

        return RabbitJobQueue(config.broker_url, namespace=config.broker_namespace)
    raise ConfigError(f"BROKER_URL: {config.broker_url!r} must start with memory://, amqp:// or amqps://")


def events_from_config(config: Config) -> EventBus:
    if config.broker_url.startswith("memory:"):
        from services.adapters.memory_events import MemoryEventBus

        return MemoryEventBus()
    if config.broker_url.startswith(("amqp:", "amqps:")):
        from services.adapters.rabbitmq_events import RabbitEventBus

        return RabbitEventBus(config.broker_url, namespace=config.broker_namespace)
    raise ConfigError(f"BROKER_URL: {config.broker_url!r} must start with memory://, amqp:// or amqps://")


class Dependencies:
    """Adapters are built on first use, so a service only connects to what it needs."""

    def __init__(self, config: Config, **given):
        self.config = config
        for name, value in given.items():
            if value is not None:
                setattr(self, name, value)  # shadows the cached_property below

    @cached_property
    def metadata(self) -> MetadataStore:
        return metadata_from_config(self.config)

    @cached_property
    def objects(self) -> ObjectStore:
        return objects_from_config(self.config)

    @cached_property
    def jobs(self) -> JobQueue:
        return jobs_from_config(self.config)

    @cached_property
    def events(self) -> EventBus:
        return events_from_config(self.config)

    @cached_property
    def signing_key(self) -> SigningKey:
        return load_signing_key(self.config)

    @cached_property
    def key_source(self) -> KeySource:
        if self.config.jwks_url:
            return JwksKeySource(self.config.jwks_url)
        return StaticKeySource(self.signing_key.jwks)

    @cached_property
    def verifier(self) -> TokenVerifier:
        return TokenVerifier(self.key_source, issuer=self.config.jwt_issuer, audience=self.config.jwt_audience)

    @cached_property
    def playback(self) -> PlaybackTokens:
        return PlaybackTokens(load_playback_secret(self.config), issuer=self.config.jwt_issuer,
                              ttl=self.config.playback_token_ttl)

    @cached_property
    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        return registry

    def close(self) -> None:
        for name in ("metadata", "jobs", "events"):
            if name in vars(self):
                getattr(self, name).close()


def bootstrap(config: Config | None = None, **given) -> Dependencies:
    """`given` overrides any adapter by name (metadata=, objects=, jobs=, events=, key_source=, ...)."""
    return Dependencies(config or Config.from_env(), **given)
