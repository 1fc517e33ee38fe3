"""Fixtures for the shared library's contract suites.

`metadata_store` runs every repository contract test against each metadata adapter: SQLite on a temp
file, MongoDB through mongomock and, only when TEST_MONGODB_URL is set, a real MongoDB server (a unique
database per test, dropped afterwards). `object_store` does the same for object stores: the local directory,
and S3 on the session's moto server (the root conftest's `s3_store`, a fresh bucket per test).
"""

from __future__ import annotations

import os
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from services.signing_keys import SigningKey, signing_key_from_pem

METADATA_BACKENDS = ["sqlite", "mongomock"] + (["mongodb"] if os.environ.get("TEST_MONGODB_URL") else [])
OBJECT_BACKENDS = ["local", pytest.param("s3", marks=pytest.mark.infra)]


def _open_metadata_store(backend: str, tmp_path):
    """Returns (store, cleanup)."""
    if backend == "sqlite":
        from services.adapters.sqlite_metadata import SqliteMetadataStore

        store = SqliteMetadataStore(tmp_path / "meta" / "reelhouse.db")
        return store, store.close
    if backend == "mongomock":
        import mongomock

        from services.adapters.mongo_metadata import MongoMetadataStore

        store = MongoMetadataStore(client=mongomock.MongoClient())
        return store, store.close
    if backend == "mongodb":
        from services.adapters.mongo_metadata import MongoMetadataStore

        name = f"reelhouse_test_{uuid.uuid4().hex[:12]}"
        store = MongoMetadataStore(os.environ["TEST_MONGODB_URL"], database=name)

        def cleanup() -> None:
            try:
                store.client.drop_database(name)
            finally:
                store.close()

        return store, cleanup
    raise AssertionError(f"unknown metadata backend {backend}")


@pytest.fixture(params=METADATA_BACKENDS)
def metadata_backend(request) -> str:
    return request.param


@pytest.fixture
def metadata_store(metadata_backend, tmp_path):
    store, cleanup = _open_metadata_store(metadata_backend, tmp_path)
    try:
        yield store
    finally:
        cleanup()


@pytest.fixture(params=OBJECT_BACKENDS)
def object_store(request, tmp_path):
    if request.param == "local":
        from services.adapters.local_objects import LocalObjectStore

        yield LocalObjectStore(tmp_path / "objects")
    elif request.param == "s3":  # on the session's moto server, a fresh bucket per test
        yield request.getfixturevalue("s3_store")
    else:
        raise AssertionError(f"unknown object backend {request.param}")


def _pkcs8(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="session")
def rsa_pem() -> bytes:
    """One RSA 2048 key per session: generating it is the slowest step of these suites."""
    return _pkcs8(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="session")
def ed25519_pem() -> bytes:
    return _pkcs8(ed25519.Ed25519PrivateKey.generate())


@pytest.fixture(scope="session")
def ed_key(ed25519_pem) -> SigningKey:
    return signing_key_from_pem(ed25519_pem)


@pytest.fixture(scope="session")
def rsa_key(rsa_pem) -> SigningKey:
    return signing_key_from_pem(rsa_pem)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()
