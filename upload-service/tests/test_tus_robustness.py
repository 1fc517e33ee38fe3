"""Failure paths of uploads: queue and storage outages, failed creation-with-upload, chunked and overlong
bodies, slow clients holding the lease, tiny PATCHes on S3, and files that are not (whole) videos."""

from __future__ import annotations

import base64
import hashlib
import socket
import time

import pytest
import requests

from services import keys
from services.testing import assert_error
from upload_service import lease as lease_module
from upload_service.sweeper import sweep

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}


def create(api, token, length, **headers):
    return api.call("POST", "/api/uploads", token, headers={**TUS, "Upload-Length": str(length), **headers})


def patch(api, token, location, offset, body, **headers):
    return api.call("PATCH", location, token, data=body, headers={**TUS, **OCTETS, "Upload-Offset": str(offset),
                                                                    **headers})


def video_of(api, token, location):
    return api.call("GET", location.replace("/uploads/", "/videos/"), token).get_json()


def assembler_of(api):
    return api.client.application.extensions["reelhouse.services"]["upload"].extensions["assembler"]


def test_a_queue_outage_is_covered_by_the_outbox(api, editor, deps, media):
    """`uploaded` and "a job is owed" are written together; the job follows when the queue is back."""
    data = media["small"].read_bytes()
    location = create(api, editor, len(data)).headers["Location"]
    video_id = location.rsplit("/", 1)[1]
    deps.jobs.broken = True
    assert patch(api, editor, location, 0, data).status_code == 204
    assert video_of(api, editor, location)["status"] == "uploaded"
    assert deps.metadata.videos.get(video_id)["job_pending"] is True and deps.jobs.published == []
    assert sweep(deps, assembler_of(api), now=time.time() + 120)["enqueued"] == 0  # still down: still owed
    assert deps.metadata.videos.get(video_id)["job_publish_failed"] is True  # its request gave up and said so
    deps.jobs.broken = False
    deps.metadata.videos.update(video_id, {"job_publish_failed": False})  # as if a request were still publishing
    assert sweep(deps, assembler_of(api))["enqueued"] == 0  # too recent: the request may still be publishing
    deps.metadata.videos.update(video_id, {"job_publish_failed": True})
    assert sweep(deps, assembler_of(api))["enqueued"] == 1  # nobody else publishes it: at once
    assert [job["video_id"] for _, job in deps.jobs.published] == [video_id]
    assert deps.metadata.videos.get(video_id)["job_pending"] is False
    assert sweep(deps, assembler_of(api), now=time.time() + 120)["enqueued"] == 0  # published once


def test_storage_trouble_at_completion_is_503_not_500(api, editor, deps, media, monkeypatch):
    data = media["small"].read_bytes()
    location = create(api, editor, len(data)).headers["Location"]
    assembler = assembler_of(api)
    real_finish = assembler.finish

    def flaky(upload):
        monkeypatch.setattr(assembler, "finish", real_finish)
        raise OSError("the store went away")

    monkeypatch.setattr(assembler, "finish", flaky)
    assert_error(patch(api, editor, location, 0, data), 503, "storage_unavailable")
    assert patch(api, editor, location, len(data), b"").status_code == 204
    assert video_of(api, editor, location)["status"] == "uploaded"


@pytest.mark.parametrize("checksum_ok", [True, False])
def test_creation_with_upload_and_checksum(api, editor, deps, checksum_ok):
    body = b"x" * 500
    digest = hashlib.sha256(body if checksum_ok else b"other").digest()
    response = api.call("POST", "/api/uploads", editor, data=body, headers={
        **TUS, **OCTETS, "Upload-Length": "1000", "Upload-Checksum": f"sha256 {base64.b64encode(digest).decode()}"})
    listing = api.call("GET", "/api/videos", editor).get_json()
    if checksum_ok:
        assert response.status_code == 201 and response.headers["Upload-Offset"] == "500"
        assert listing["total"] == 1
    else:
        assert_error(response, 460, "checksum_mismatch")
        assert listing["total"] == 0 and deps.metadata.uploads.find({}).total == 0  # nothing left behind


def test_failed_creations_do_not_eat_the_quota(api, editor, deps):
    object.__setattr__(deps.config, "tenant_quota_bytes", 5000)
    for _ in range(3):
        assert_error(api.call("POST", "/api/uploads", editor, data=b"y" * 2001, headers={
            **TUS, **OCTETS, "Upload-Length": "2000"}), 413, "chunk_too_large")
    assert create(api, editor, 4000).status_code == 201


def test_chunked_bodies_and_overlong_ones(live, api, editor, media):
    data = media["small"].read_bytes()
    auth = {"Authorization": f"Bearer {editor}", **TUS, **OCTETS}
    location = create(api, editor, len(data)).headers["Location"]

    def chunks(payload):
        for i in range(0, len(payload), 4096):
            yield payload[i:i + 4096]

    half = len(data) // 2
    first = requests.patch(live.url + location, data=chunks(data[:half]), headers={**auth, "Upload-Offset": "0"},
                           timeout=30)
    assert first.status_code == 204 and first.headers["Upload-Offset"] == str(half)
    overlong = requests.patch(live.url + location, data=chunks(data[half:] + b"EXTRA" * 100),
                              headers={**auth, "Upload-Offset": str(half)}, timeout=30)
    assert overlong.status_code == 413 and overlong.json()["error"]["code"] == "chunk_too_large"
    # What fitted was kept, and since it completes the upload, the upload completed.
    assert video_of(api, editor, location)["status"] == "uploaded"


def test_a_slow_client_keeps_its_lease(live, api, editor, deps, monkeypatch):
    monkeypatch.setattr(lease_module, "LEASE_SECONDS", 1.0)
    monkeypatch.setattr(lease_module, "RENEW_EVERY", 0.3)
    monkeypatch.setattr(lease_module.UploadLease.__init__, "__defaults__", (1.0, 0.3))
    location = create(api, editor, 300).headers["Location"]
    with socket.create_connection(("127.0.0.1", live.port)) as slow:
        slow.sendall((f"PATCH {location} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {editor}\r\n"
                      "Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
                      "Content-Length: 300\r\n\r\n").encode())
        for i in range(3):  # 3 s in all: three times the lease
            slow.sendall(b"a" * 100)
            time.sleep(1.0)
            if i == 1:
                other = requests.patch(live.url + location, data=b"b" * 300, timeout=5, headers={
                    "Authorization": f"Bearer {editor}", **TUS, **OCTETS, "Upload-Offset": "0"})
                assert other.status_code == 409 and other.json()["error"]["code"] == "upload_busy"
                assert int(other.headers["Retry-After"]) > 0
        reply = slow.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 204") and "Upload-Offset: 300" in reply
    upload = deps.metadata.uploads.get(location.rsplit("/", 1)[1])
    assert upload["offset"] == 300 and upload["lease"] is None


def test_tiny_patches_stay_a_few_objects_on_s3(api, editor, deps, media, store_kind):
    data = media["small"].read_bytes()
    location = create(api, editor, len(data)).headers["Location"]
    offset = 0
    for _ in range(60):
        assert patch(api, editor, location, offset, data[offset:offset + 500]).status_code == 204
        offset += 500
    upload = deps.metadata.uploads.get(location.rsplit("/", 1)[1])
    if store_kind == "s3":
        assert len(upload["staged"]) <= 17 and sum(size for _, size in upload["staged"]) == offset
    assert patch(api, editor, location, offset, data[offset:]).status_code == 204
    tenant = api.call("GET", "/api/auth/me", editor).get_json()["tenant"]["id"]
    stored = deps.objects.read(keys.original_key(tenant, location.rsplit("/", 1)[1]))
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()
    assert [i.key for i in deps.objects.list(keys.upload_staging_prefix(tenant, location.rsplit("/", 1)[1]))] == []


def test_part_size_is_fixed_per_upload(api, editor, deps, media):
    data = media["big"].read_bytes()
    location = create(api, editor, len(data)).headers["Location"]
    cut = 9 * 1024 * 1024 + 3
    assert patch(api, editor, location, 0, data[:cut]).status_code == 204
    object.__setattr__(deps.config, "upload_part_size", 6 * 1024 * 1024)
    assembler_of(api).part_size = 6 * 1024 * 1024
    assert patch(api, editor, location, cut, data[cut:]).status_code == 204
    assert video_of(api, editor, location)["status"] == "uploaded"


@pytest.mark.parametrize("name,message", [("text", "not a video file"), ("audio", "no video stream"),
                                          ("truncated", "cannot be read"), ("truncated_faststart", "truncated")])
def test_files_that_are_not_whole_videos_fail_and_are_removed(api, editor, deps, media, name, message):
    data = media[name].read_bytes()
    location = create(api, editor, len(data)).headers["Location"]
    assert patch(api, editor, location, 0, data).status_code == 204
    video = video_of(api, editor, location)
    assert video["status"] == "failed" and message in video["error"], video["error"]
    tenant = api.call("GET", "/api/auth/me", editor).get_json()["tenant"]["id"]
    assert list(deps.objects.list(f"tenants/{tenant}/")) == []
    assert deps.jobs.published == []


def test_titles_keep_joiners_and_lose_control_characters(api, editor):
    title = "👩\u200d💻 نامه\u200cها\x00\u202e"
    metadata = f"title {base64.b64encode(title.encode()).decode()}"
    location = create(api, editor, 10, **{"Upload-Metadata": metadata}).headers["Location"]
    assert video_of(api, editor, location)["title"] == "👩\u200d💻 نامه\u200cها"
