"""Fixtures shared by every test folder: config on a temp data dir, the embedded app, clients, accounts,
and an S3-compatible server (moto) with a fresh bucket per test."""

from __future__ import annotations

import uuid

import pytest

from services.config import Config
from services.testing import Api, MotoS3Server


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


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server in a subprocess on a free loopback port, shared by the session. Do not stop it in a
    test: start your own MotoS3Server for that."""
    server = MotoS3Server().start_or_require()
    yield server
    server.close()


@pytest.fixture
def s3_store(s3_server):
    """An S3ObjectStore on a fresh bucket (created on first use); its objects, uploads and bucket go afterwards."""
    from services.adapters.s3_objects import S3ObjectStore

    store = S3ObjectStore(f"test-{uuid.uuid4().hex}", endpoint_url=s3_server.endpoint_url,
                          access_key="test", secret_key="test")  # noqa: S106 - moto accepts any
    yield store
    _drop_bucket(store)


def _drop_bucket(store) -> None:
    from botocore.exceptions import ClientError

    client = store.client
    try:
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=store.bucket):
            for upload in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=store.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket):
            objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if objects:
                client.delete_objects(Bucket=store.bucket, Delete={"Objects": objects, "Quiet": True})
        client.delete_bucket(Bucket=store.bucket)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in {"NoSuchBucket", "404"}:
            raise
