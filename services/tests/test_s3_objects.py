"""S3ObjectStore specifics, on moto's S3 server (the contract suite runs against it too, via `object_store`).

Bucket creation, presigned URLs, streaming puts, listing unfinished uploads, the composition root, `ping` while
the server is down; plus the STORAGE_URL / AWS_REGION settings that choose and configure the store.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
import uuid
from datetime import UTC, datetime

import boto3
import pytest
import requests
from botocore.exceptions import BotoCoreError, ClientError
from botocore.stub import Stubber

from services.adapters import s3_objects
from services.adapters.s3_objects import S3ObjectStore, boto_config
from services.bootstrap import bootstrap, objects_from_config
from services.config import Config, ConfigError
from services.ports.objects import InvalidKey, ObjectNotFound
from services.testing import MotoS3Server

MiB = 1024 * 1024
DATA = bytes(range(256)) * 40

infra = pytest.mark.infra


def bucket_name() -> str:
    return f"test-{uuid.uuid4().hex}"


def raw_client(endpoint_url: str, region: str = "us-east-1"):
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, aws_access_key_id="test",
                                          aws_secret_access_key="test", region_name=region, config=boto_config())


def bucket_exists(client, bucket: str) -> bool:
    try:
        client.head_bucket(Bucket=bucket)
        return True
    except ClientError as error:
        assert error.response["Error"]["Code"] in {"404", "NoSuchBucket"}
        return False


def drop(store: S3ObjectStore) -> None:
    for key, upload_id, _ in store.list_multipart_uploads():
        store.abort_multipart(key, upload_id)
    store.delete_prefix("")
    store.client.delete_bucket(Bucket=store.bucket)


# --- bucket ---------------------------------------------------------------------------------------------


@infra
def test_bucket_is_created_on_first_use(s3_store, s3_server):
    client = raw_client(s3_server.endpoint_url)
    assert not bucket_exists(client, s3_store.bucket)  # constructing the store makes no request
    s3_store.put("a.txt", b"x")
    assert bucket_exists(client, s3_store.bucket)
    # A second store (another process) on the existing bucket sees the same objects.
    again = S3ObjectStore(s3_store.bucket, endpoint_url=s3_server.endpoint_url, access_key="test", secret_key="test")
    assert again.read("a.txt") == b"x"


@infra
def test_ping_creates_a_missing_bucket(s3_store, s3_server):
    s3_store.ping()
    assert bucket_exists(raw_client(s3_server.endpoint_url), s3_store.bucket)


@infra
def test_many_stores_racing_to_create_one_bucket(s3_server):
    bucket = bucket_name()
    stores = [S3ObjectStore(bucket, endpoint_url=s3_server.endpoint_url, access_key="test", secret_key="test")
              for _ in range(6)]
    errors = []

    def use(index: int, store: S3ObjectStore) -> None:
        try:
            store.put(f"k{index}", b"v")
        except Exception as error:  # noqa: BLE001 - collected for the assertion below
            errors.append(error)

    threads = [threading.Thread(target=use, args=(i, s)) for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert [info.key for info in stores[0].list()] == [f"k{i}" for i in range(6)]
    finally:
        drop(stores[0])


@infra
def test_bucket_in_another_region(s3_server):
    store = S3ObjectStore(bucket_name(), endpoint_url=s3_server.endpoint_url, access_key="test",
                          secret_key="test", region="eu-west-1")
    store.put("x", b"1")
    try:
        location = raw_client(s3_server.endpoint_url, "eu-west-1").get_bucket_location(Bucket=store.bucket)
        assert location["LocationConstraint"] == "eu-west-1"
    finally:
        drop(store)


@pytest.mark.parametrize("code", ["BucketAlreadyOwnedByYou", "BucketAlreadyExists"])
def test_losing_the_bucket_creation_race_is_fine(code):
    client = boto3.session.Session().client("s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
                                            aws_access_key_id="k", aws_secret_access_key="s", config=boto_config())
    with Stubber(client) as stub:
        stub.add_client_error("head_bucket", "404", http_status_code=404)
        stub.add_client_error("create_bucket", code, http_status_code=409)
        if code == "BucketAlreadyExists":  # some servers say so for a bucket just made by a sibling: check it
            stub.add_response("head_bucket", {})
        S3ObjectStore("media", client=client)._ready()
        stub.assert_no_pending_responses()


def test_someone_elses_bucket_is_an_error():
    client = boto3.session.Session().client("s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
                                            aws_access_key_id="k", aws_secret_access_key="s", config=boto_config())
    with Stubber(client) as stub:
        stub.add_client_error("head_bucket", "404", http_status_code=404)
        stub.add_client_error("create_bucket", "BucketAlreadyExists", http_status_code=409)
        stub.add_client_error("head_bucket", "403", http_status_code=403)
        with pytest.raises(ClientError):
            S3ObjectStore("media", client=client).put("k", b"v")


def test_multipart_uploads_carry_a_crc32_per_part_to_their_completion():
    """Created with CRC32 (as boto3's own transfers are), so a completion must name each part's checksum: they come
    from the server's part list. (moto neither lists nor demands them, hence the stubbed client here.)"""
    client = boto3.session.Session().client("s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
                                            aws_access_key_id="k", aws_secret_access_key="s", config=boto_config())
    store = S3ObjectStore("media", client=client)
    key, upload_id = "tenants/t/videos/v/original", "u1"
    with Stubber(client) as stub:
        stub.add_response("head_bucket", {})
        stub.add_response("create_multipart_upload", {"UploadId": upload_id},
                          {"Bucket": "media", "Key": key, "ContentType": "application/octet-stream",
                           "ChecksumAlgorithm": "CRC32"})
        stub.add_response("list_multipart_uploads", {"Uploads": [{"Key": key, "UploadId": upload_id}]},
                          {"Bucket": "media", "Prefix": key})
        stub.add_response("list_parts", {"Parts": [
            {"PartNumber": 1, "ETag": '"e1"', "ChecksumCRC32": "AAAAAQ=="},
            {"PartNumber": 2, "ETag": '"e2"', "ChecksumCRC32": "AAAAAg=="}]},
            {"Bucket": "media", "Key": key, "UploadId": upload_id})
        stub.add_response("complete_multipart_upload", {}, {
            "Bucket": "media", "Key": key, "UploadId": upload_id, "MultipartUpload": {"Parts": [
                {"PartNumber": 1, "ETag": '"e1"', "ChecksumCRC32": "AAAAAQ=="},
                {"PartNumber": 2, "ETag": '"e2"', "ChecksumCRC32": "AAAAAg=="}]}})
        stub.add_response("head_object", {"ContentLength": 12 * MiB, "ETag": '"x-2"', "LastModified": datetime.now(UTC),
                                          "ContentType": "application/octet-stream"}, {"Bucket": "media", "Key": key})
        assert store.create_multipart(key) == upload_id
        store._forget(key, upload_id)  # as another replica would: the completion asks the server
        assert store.complete_multipart(key, upload_id, [(2, '"e2"'), (1, '"e1"')]).size == 12 * MiB
        stub.assert_no_pending_responses()


def test_a_part_body_reads_the_buffer_in_place():
    buffer = bytearray(b"0123456789")
    body = s3_objects._PartBody(memoryview(buffer)[2:8])
    assert body.seek(0, io.SEEK_END) == 6 and body.tell() == 6 and body.read(4) == b""
    body.seek(0)
    first = body.read(4)
    assert first == b"2345" and body.tell() == 4 and body.read() == b"67" and body.read(1) == b""
    buffer[2] = ord("X")  # a view, not a copy; and read-only for whoever reads it
    assert first == b"X345"
    with pytest.raises(TypeError):
        first[0] = 0
    body.seek(-2, io.SEEK_END)
    target = bytearray(5)
    assert body.readinto(target) == 2 and target[:2] == b"67"
    with pytest.raises(ValueError):
        body.seek(-1)


def test_a_retried_part_is_sent_whole_again():
    """botocore retries a part refused with a 500 by seeking its body back: the second request carries every
    byte again, with the same checksum and signature hash."""
    import base64
    import zlib
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received = []

    class FlakyS3(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # answers botocore's Expect: 100-continue

        def do_PUT(self):  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((body, self.headers))
            if len(received) == 1:
                payload = b"<Error><Code>InternalError</Code><Message>try again</Message></Error>"
                self.send_response(500)
            else:
                payload = b""
                self.send_response(200)
                self.send_header("ETag", '"etag-2"')
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyS3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        store = S3ObjectStore("media", endpoint_url=f"http://127.0.0.1:{server.server_port}", access_key="k",
                              secret_key="s")
        store._bucket_ready = True
        store._remember("a/b", "u1")
        data = bytearray(range(256)) * 4096  # 1 MiB
        assert store.upload_part("a/b", "u1", 1, memoryview(data)) == '"etag-2"'
    finally:
        server.shutdown()
        thread.join(5)
    assert len(received) == 2
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    for body, headers in received:
        assert body == data
        assert headers["x-amz-checksum-crc32"] == crc
        assert headers["x-amz-content-sha256"] == hashlib.sha256(data).hexdigest()


# --- reads ----------------------------------------------------------------------------------------------


@infra
def test_open_returns_a_binary_file_object(s3_store):
    s3_store.put("r.bin", DATA)
    with s3_store.open("r.bin", 10, 29) as stream:
        assert isinstance(stream, io.BufferedIOBase) and stream.readable()
        buffer = bytearray(8)
        assert stream.readinto(buffer) == 8 and bytes(buffer) == DATA[10:18]
        assert stream.read(2) == DATA[18:20]
        assert stream.read() == DATA[20:30]
        assert stream.read() == b""
    assert stream.closed
    stream = s3_store.open("r.bin")
    stream.close()
    stream.close()  # twice is fine


@infra
def test_reads_starting_at_or_past_the_end_are_empty(s3_store):
    s3_store.put("r.bin", b"12345")
    s3_store.put("empty.bin", b"")
    assert s3_store.read("r.bin", 5) == b""
    assert s3_store.read("r.bin", 100, 200) == b""
    assert s3_store.read("r.bin", 3, 2) == b""  # an empty range
    assert s3_store.read("empty.bin", 0, 0) == b""
    with pytest.raises(ObjectNotFound):
        s3_store.read("missing.bin", 3, 2)


@infra
def test_given_content_type_is_stored(s3_store):
    s3_store.put("blob", b"x", content_type="video/mp4")
    assert s3_store.stat("blob").content_type == "video/mp4"
    s3_store.put("guessed.m3u8", io.BytesIO(b"#EXTM3U\n"))
    assert s3_store.stat("guessed.m3u8").content_type == "application/vnd.apple.mpegurl"
    upload_id = s3_store.create_multipart("mp/clip", content_type="video/webm")
    etag = s3_store.upload_part("mp/clip", upload_id, 1, b"x")
    assert s3_store.complete_multipart("mp/clip", upload_id, [(1, etag)]).content_type == "video/webm"


# --- streaming put --------------------------------------------------------------------------------------


class GeneratedStream:
    """A non-seekable body produced on the fly: fails the test if anyone asks for more than 16 MiB at once."""

    def __init__(self, size: int, block: int = 3 * MiB + 17):
        self.size = size
        self.digest = hashlib.sha256()
        self.largest_request = 0
        self.reads = 0
        self._blocks = self._generate(block)
        self._pending = b""

    def _generate(self, block: int):
        produced, counter = 0, 0
        while produced < self.size:
            seed = hashlib.sha256(counter.to_bytes(8, "big")).digest()
            chunk = (seed * (block // len(seed) + 1))[: min(block, self.size - produced)]
            produced += len(chunk)
            counter += 1
            yield chunk

    def read(self, n: int = -1) -> bytes:
        assert n is not None and 0 < n <= 16 * MiB, f"read({n}) would pull an unbounded amount into memory"
        self.reads += 1
        self.largest_request = max(self.largest_request, n)
        if not self._pending:
            self._pending = next(self._blocks, b"")
        chunk, self._pending = self._pending[:n], self._pending[n:]  # short reads, like a socket
        self.digest.update(chunk)
        return chunk


@infra
def test_a_20_mib_stream_is_put_in_bounded_parts(s3_store):
    source = GeneratedStream(20 * MiB)
    info = s3_store.put("big/source.mp4", source)
    assert info.size == 20 * MiB
    assert source.largest_request <= 16 * MiB and source.reads > 3
    assert info.etag.startswith('"') and info.etag.endswith('-3"')  # a multipart upload of 3 parts of 8 MiB
    assert info.content_type == "video/mp4"
    stored = hashlib.sha256()
    with s3_store.open("big/source.mp4") as stream:
        while chunk := stream.read(MiB):
            stored.update(chunk)
    assert stored.hexdigest() == source.digest.hexdigest()
    assert s3_store.list_multipart_uploads() == []


@infra
def test_a_stream_failing_mid_multipart_leaves_nothing(s3_store):
    class Breaks(GeneratedStream):
        def read(self, n=-1):
            if self.reads >= 4:
                raise ConnectionResetError("client went away")
            return super().read(n)

    s3_store.put("big/x.bin", b"old")
    with pytest.raises(ConnectionResetError):
        s3_store.put("big/x.bin", Breaks(20 * MiB, block=4 * MiB))
    assert s3_store.read("big/x.bin") == b"old"
    assert s3_store.list_multipart_uploads() == []  # s3transfer aborted its upload


# --- presigned URLs -------------------------------------------------------------------------------------


@infra
def test_presigned_url_is_fetchable_with_and_without_range(s3_store):
    s3_store.put("v/clip.mp4", DATA)
    url = s3_store.presign_get("v/clip.mp4", expires_in=120)
    assert url.startswith(s3_store.endpoint_url + "/" + s3_store.bucket + "/v/clip.mp4?")  # path-style
    assert "range" not in url.lower()
    whole = requests.get(url, timeout=10)
    assert whole.status_code == 200 and whole.content == DATA
    assert whole.headers["Content-Type"] == "video/mp4"
    part = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=10)
    assert part.status_code == 206 and part.content == DATA[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(DATA)}"
    tail = requests.get(url, headers={"Range": "bytes=10000-"}, timeout=10)
    assert tail.status_code == 206 and tail.content == DATA[10000:]


def test_presign_checks_its_arguments():
    store = S3ObjectStore("media", endpoint_url="http://127.0.0.1:9", access_key="k", secret_key="s")
    with pytest.raises(InvalidKey):
        store.presign_get("../x")
    for seconds in (0, 7 * 24 * 3600 + 1):
        with pytest.raises(ValueError):
            store.presign_get("x", expires_in=seconds)
    assert "X-Amz-Expires=60" in store.presign_get("x", expires_in=60)  # signing needs no server


# --- listing, deleting ----------------------------------------------------------------------------------


@infra
def test_unfinished_upload_is_listed_until_aborted(s3_store):
    upload_id = s3_store.create_multipart("up/v1/source.mp4")
    s3_store.upload_part("up/v1/source.mp4", upload_id, 1, b"x" * 1000)
    ((key, listed_id, initiated),) = s3_store.list_multipart_uploads("up/")
    assert (key, listed_id) == ("up/v1/source.mp4", upload_id)
    assert initiated.tzinfo is not None  # moto reports 2010-11-10T20:48:33Z for every upload
    assert s3_store.list_multipart_uploads("up/v2/") == []
    s3_store.abort_multipart("up/v1/source.mp4", upload_id)
    assert s3_store.list_multipart_uploads() == []
    s3_store.abort_multipart("up/v1/source.mp4", upload_id)  # idempotent


@infra
def test_unknown_upload_ids_fail_fast(s3_store):
    started = time.monotonic()
    with pytest.raises(ObjectNotFound):
        s3_store.upload_part("k.bin", "no-such-upload", 1, b"x")
    with pytest.raises(ObjectNotFound):
        s3_store.complete_multipart("k.bin", "no-such-upload", [(1, '"x"')])
    s3_store.abort_multipart("k.bin", "no-such-upload")
    assert time.monotonic() - started < 2  # no retries of moto's 500 for an unknown id


@infra
def test_delete_prefix_deletes_in_batches(s3_store, monkeypatch):
    monkeypatch.setattr(s3_objects, "_DELETE_BATCH", 2)
    calls = []
    s3_store.client.meta.events.register("provide-client-params.s3.DeleteObjects",
                                         lambda params, **_: calls.append(len(params["Delete"]["Objects"])))
    for i in range(5):
        s3_store.put(f"gone/{i}.bin", b"x")
    s3_store.put("kept.bin", b"x")
    assert s3_store.delete_prefix("gone/") == 5
    assert calls == [2, 2, 1]
    assert [info.key for info in s3_store.list()] == ["kept.bin"]
    assert s3_store.delete_prefix("gone/") == 0


@infra
def test_objects_with_foreign_names_are_not_listed(s3_store, s3_server):
    s3_store.put("v/ok.bin", b"x")
    client = raw_client(s3_server.endpoint_url)
    client.put_object(Bucket=s3_store.bucket, Key="v/folder/", Body=b"")  # a console's folder marker
    client.put_object(Bucket=s3_store.bucket, Key="v/with space.bin", Body=b"")
    assert [info.key for info in s3_store.list("v/")] == ["v/ok.bin"]


# --- composition root and settings ----------------------------------------------------------------------


@infra
def test_bootstrap_from_storage_url(make_config, s3_server):
    bucket = bucket_name()
    config = make_config(STORAGE_URL=f"s3://{bucket}", S3_ENDPOINT_URL=s3_server.endpoint_url,
                         AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1")
    store = objects_from_config(config)
    assert isinstance(store, S3ObjectStore) and store.bucket == bucket
    try:
        store.ping()
        store.put("v/x.bin", b"hello")
        # The composition root's store is the same kind of store, on the same bucket.
        assert bootstrap(config).objects.read("v/x.bin") == b"hello"
        assert bucket_exists(raw_client(s3_server.endpoint_url), bucket)
    finally:
        drop(store)


def test_s3_settings(make_config):
    config = make_config(STORAGE_URL="s3://media.videos-1", AWS_REGION="eu-central-1")
    assert config.s3_bucket == "media.videos-1" and config.s3_region == "eu-central-1"
    assert make_config(STORAGE_URL="s3://media/").s3_bucket == "media"
    assert make_config().s3_region == "us-east-1"
    assert make_config(AWS_DEFAULT_REGION="ap-south-1").s3_region == "ap-south-1"
    assert make_config(AWS_DEFAULT_REGION="ap-south-1", AWS_REGION="us-west-2").s3_region == "us-west-2"


@pytest.mark.parametrize("url", ["s3://media/prefix", "s3://media/a/b/", "s3://", "s3:///media", "s3://Media",
                                 "s3://me", "s3://my_bucket", "s3://media:9000", "s3://media?x=1"])
def test_unsupported_storage_urls_are_refused(make_config, url):
    with pytest.raises(ConfigError, match="STORAGE_URL"):
        make_config(STORAGE_URL=url)


@pytest.mark.parametrize("region", ["EU-WEST-1", "us east 1", "-x"])
def test_bad_region_is_refused(make_config, region):
    with pytest.raises(ConfigError, match="AWS_REGION"):
        make_config(AWS_REGION=region)


def test_config_constructed_directly_gets_the_default_region(tmp_path):
    assert Config(data_dir=tmp_path, storage_url="s3://media").s3_region == "us-east-1"


# --- ping -----------------------------------------------------------------------------------------------


@infra
def test_ping_raises_while_the_server_is_down():
    with MotoS3Server() as server:
        store = S3ObjectStore(bucket_name(), endpoint_url=server.endpoint_url, access_key="test",
                              secret_key="test")
        store.ping()
        store.put("x", b"1")
        server.stop(hard=True)
        started = time.monotonic()
        with pytest.raises((BotoCoreError, ClientError)):
            store.ping()
        assert time.monotonic() - started < 5  # one attempt, no retry storm: a readiness probe must answer
        server.start()  # same port, but moto forgets everything: the bucket is made again
        store.ping()
        store.put("y", b"2")
        assert store.read("y") == b"2"
