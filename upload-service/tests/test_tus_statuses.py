"""Every status the tus server answers, with the contract's error body where the protocol allows one."""

from __future__ import annotations

import base64
import hashlib
import socket
import time

import pytest
import requests

from services import keys
from services.testing import STRONG_PASSWORD, assert_error
from upload_service.sweeper import sweep

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}


def meta(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def create(api, token, length, **headers):
    return api.call("POST", "/api/uploads", token, headers={**TUS, "Upload-Length": str(length), **headers})


def patch(api, token, location, offset, body, **headers):
    return api.call("PATCH", location, token, data=body,
                    headers={**TUS, **OCTETS, "Upload-Offset": str(offset), **headers})


@pytest.fixture
def upload(api, editor):
    return create(api, editor, 1000).headers["Location"]


def test_tus_resumable_is_required(api, editor):
    for version in (None, "0.2.2", "2.0.0"):
        headers = {"Upload-Length": "10"} | ({"Tus-Resumable": version} if version else {})
        response = api.call("POST", "/api/uploads", editor, headers=headers)
        assert_error(response, 412, "unsupported_tus_version")
        assert response.headers["Tus-Version"] == "1.0.0"


@pytest.mark.parametrize("value", [None, "", "-1", "abc", "1.5", "+5", " 12 3", "99999999999999999999"])
def test_upload_length_must_be_a_whole_number(api, editor, value):
    headers = {**TUS} | ({"Upload-Length": value} if value is not None else {})
    error = assert_error(api.call("POST", "/api/uploads", editor, headers=headers), 400)
    assert error["code"] in ("missing_header", "invalid_header")


def test_too_large_and_over_quota(api, editor, deps):
    assert_error(create(api, editor, 10**15), 413, "file_too_large")
    object.__setattr__(deps.config, "tenant_quota_bytes", 5000)
    assert create(api, editor, 3000).status_code == 201
    assert_error(create(api, editor, 2001), 413, "quota_exceeded")
    assert create(api, editor, 2000).status_code == 201
    # Another tenant has its own quota.
    other = api.register(tenant_name="Globex", email="boss@globex.test")["access_token"]
    assert create(api, other, 4000).status_code == 201


@pytest.mark.parametrize("header", [
    "filename", "filename notbase64!!", f"filename {base64.b64encode(b'a').decode()},filename eA==",
    "file name eA==", f"title {base64.b64encode(bytes([0xff, 0xfe])).decode()}", meta(visibility="everyone"),
    "title eA== extra",
])
def test_malformed_metadata_is_400(api, editor, header):
    if header == "filename":
        assert create(api, editor, 10, **{"Upload-Metadata": header}).status_code == 201  # a key alone is fine
        return
    assert_error(create(api, editor, 10, **{"Upload-Metadata": header}), 400, "invalid_metadata")


def test_filenames_are_titles_never_paths(api, editor, deps):
    for name in ("../../etc/passwd", "/etc/passwd", "a\x00b.mp4", "..\\..\\boot.ini"):
        location = create(api, editor, 10, **{"Upload-Metadata": meta(filename=name)}).headers["Location"]
        video = api.call("GET", location.replace("/uploads/", "/videos/"), editor).get_json()
        assert "\x00" not in video["title"] and video["title"].replace("\x00", "") in (name, name.replace("\x00", ""))
    tenant = api.call("GET", "/api/auth/me", editor).get_json()["tenant"]["id"]
    for info in deps.objects.list(""):
        assert info.key.startswith(f"tenants/{tenant}/"), info.key
        assert "passwd" not in info.key and "boot" not in info.key


def test_roles_and_tenants(api, editor):
    assert_error(api.call("POST", "/api/uploads", None, headers={**TUS, "Upload-Length": "10"}), 401)
    admin = editor
    api.call("POST", "/api/auth/users", admin, json={"email": "v@acme.test", "password": STRONG_PASSWORD,
                                                      "role": "viewer"})
    viewer = api.login("v@acme.test").get_json()["access_token"]
    assert_error(create(api, viewer, 10), 403, "forbidden")
    location = create(api, admin, 10).headers["Location"]
    assert_error(patch(api, viewer, location, 0, b"x"), 403)
    other = api.register(tenant_name="Globex", email="boss@globex.test")["access_token"]
    assert api.call("HEAD", location, other, headers=TUS).status_code == 404
    assert_error(patch(api, other, location, 0, b"x"), 404, "upload_not_found")
    assert_error(api.call("DELETE", location, other, headers=TUS), 404)
    assert api.call("HEAD", location, admin, headers=TUS).headers["Upload-Offset"] == "0"


def test_patch_statuses(api, editor, upload):
    response = api.call("PATCH", upload, editor, data=b"x",
                        headers={**TUS, "Upload-Offset": "0", "Content-Type": "application/octet-stream"})
    assert_error(response, 415, "unsupported_media_type")
    for offset in ("-1", "abc", ""):
        assert_error(api.call("PATCH", upload, editor, data=b"x", headers={**TUS, **OCTETS, "Upload-Offset": offset}),
                     400)
    assert_error(api.call("PATCH", upload, editor, data=b"x", headers={**TUS, **OCTETS}), 400, "missing_header")
    mismatch = patch(api, editor, upload, 5, b"x")
    assert_error(mismatch, 409, "offset_mismatch")
    assert mismatch.headers["Upload-Offset"] == "0"
    assert_error(patch(api, editor, upload, 0, b"x" * 1001), 413, "chunk_too_large")
    good = patch(api, editor, upload, 0, b"x" * 400)
    assert good.status_code == 204 and good.headers["Upload-Offset"] == "400" and "Upload-Expires" in good.headers
    assert good.headers["Tus-Resumable"] == "1.0.0"
    assert_error(patch(api, editor, upload, 0, b"x"), 409, "offset_mismatch")
    assert api.call("HEAD", "/api/uploads/nope", editor, headers=TUS).status_code == 404
    assert_error(patch(api, editor, "/api/uploads/nope", 0, b"x"), 404, "upload_not_found")


@pytest.mark.parametrize("algorithm", ["sha1", "md5", "sha256"])
def test_checksums(api, editor, upload, algorithm):
    chunk = b"0123456789" * 10
    good = base64.b64encode(hashlib.new(algorithm, chunk).digest()).decode()
    bad = base64.b64encode(hashlib.new(algorithm, b"other").digest()).decode()
    assert_error(patch(api, editor, upload, 0, chunk, **{"Upload-Checksum": f"{algorithm} {bad}"}), 460,
                 "checksum_mismatch")
    assert api.call("HEAD", upload, editor, headers=TUS).headers["Upload-Offset"] == "0"  # discarded
    ok = patch(api, editor, upload, 0, chunk, **{"Upload-Checksum": f"{algorithm} {good}"})
    assert ok.status_code == 204 and ok.headers["Upload-Offset"] == "100"


def test_bad_checksum_headers(api, editor, upload):
    assert_error(patch(api, editor, upload, 0, b"x", **{"Upload-Checksum": "crc32 AAAA"}), 400, "unsupported_checksum")
    assert_error(patch(api, editor, upload, 0, b"x", **{"Upload-Checksum": "sha1 !!!"}), 400, "invalid_header")
    assert_error(patch(api, editor, upload, 0, b"x", **{"Upload-Checksum": "sha1 AAAA"}), 400, "invalid_header")


def test_termination(api, editor, deps, events, media):
    data = media["big"].read_bytes()
    location = create(api, editor, len(data)).headers["Location"]
    assert patch(api, editor, location, 0, data[: 9 * 1024 * 1024]).status_code == 204
    assert api.call("DELETE", location, editor, headers=TUS).status_code == 204
    assert api.call("HEAD", location, editor, headers=TUS).status_code == 404
    assert_error(patch(api, editor, location, 0, b"x"), 404)
    video_id = location.rsplit("/", 1)[1]
    assert_error(api.call("GET", f"/api/videos/{video_id}", editor), 404)
    assert list(deps.objects.list("tenants/")) == []
    assert not any(upload_id == video_id for _, upload_id, _ in _multipart(deps))
    # open libraries heard the upload start and end
    assert [(t, e.get("status"), e["seq"]) for t, e in events.of(video_id)] == [
        ("video.status", "uploading", 1), ("video.deleted", None, 2)]


def _multipart(deps):
    lister = getattr(deps.objects, "list_multipart_uploads", None)
    return [(key, key.split("/")[3], when) for key, _, when in lister()] if lister else []


def test_finished_uploads_cannot_be_terminated(api, editor, media):
    data = media["small"].read_bytes()
    location = create(api, editor, len(data)).headers["Location"]
    patch(api, editor, location, 0, data)
    assert_error(api.call("DELETE", location, editor, headers=TUS), 409, "upload_complete")
    # Resuming clients see it complete.
    assert api.call("HEAD", location, editor, headers=TUS).headers["Upload-Offset"] == str(len(data))
    again = patch(api, editor, location, len(data), b"")
    assert again.status_code == 204 and again.headers["Upload-Offset"] == str(len(data))


def test_expired_uploads_answer_410_and_are_freed(api, editor, deps, media):
    data = media["big"].read_bytes()
    location = create(api, editor, len(data)).headers["Location"]
    patch(api, editor, location, 0, data[: 6 * 1024 * 1024 + 5])
    video_id = location.rsplit("/", 1)[1]
    deps.metadata.uploads.update(video_id, {"expires_at": time.time() - 1})
    assert api.call("HEAD", location, editor, headers=TUS).status_code == 410
    assert_error(patch(api, editor, location, 6 * 1024 * 1024 + 5, b"x"), 410, "upload_expired")
    assert_error(api.call("GET", f"/api/videos/{video_id}", editor), 404)
    assert list(deps.objects.list("tenants/")) == []


def test_sweeper_frees_abandoned_uploads(api, editor, deps, media, store_kind):
    data = media["big"].read_bytes()
    abandoned = create(api, editor, len(data)).headers["Location"]
    patch(api, editor, abandoned, 0, data[: 9 * 1024 * 1024 + 5])  # one 8 MiB S3 part + a staged remainder
    active = create(api, editor, len(data)).headers["Location"]
    patch(api, editor, active, 0, data[:100])
    abandoned_id = abandoned.rsplit("/", 1)[1]
    if store_kind == "s3":
        assert any(upload_id == abandoned_id for _, upload_id, _ in _multipart(deps))
    deps.metadata.uploads.update(abandoned_id, {"expires_at": time.time() - 1})
    assert sweep(deps, deps_app_assembler(api))["expired"] == 1
    assert api.call("HEAD", abandoned, editor, headers=TUS).status_code == 410
    assert api.call("HEAD", active, editor, headers=TUS).headers["Upload-Offset"] == "100"
    assert not any(upload_id == abandoned_id for _, upload_id, _ in _multipart(deps))
    tenant = api.call("GET", "/api/auth/me", editor).get_json()["tenant"]["id"]
    assert not [i.key for i in deps.objects.list(keys.upload_staging_prefix(tenant, abandoned_id))]
    assert_error(api.call("GET", f"/api/videos/{abandoned_id}", editor), 404)
    # Tombstones go a week later.
    assert sweep(deps, deps_app_assembler(api), now=time.time() + 8 * 24 * 3600)["forgotten"] >= 1
    assert api.call("HEAD", abandoned, editor, headers=TUS).status_code == 404


def deps_app_assembler(api):
    app = api.client.application
    return app.extensions["reelhouse.services"]["upload"].extensions["assembler"]


def test_zero_byte_upload_fails_cleanly(api, editor, deps):
    response = create(api, editor, 0, **{"Upload-Metadata": meta(filename="empty.mp4")})
    assert response.status_code == 201 and response.headers["Upload-Offset"] == "0"
    video = api.call("GET", response.headers["Location"].replace("uploads", "videos"), editor).get_json()
    assert video["status"] == "failed" and "empty" in video["error"]
    assert list(deps.objects.list("tenants/")) == []


def test_concurrent_patches_one_wins(live, api, editor, deps):
    """A PATCH still streaming holds the upload; a second one meanwhile gets 409, then the first completes."""
    location = create(api, editor, 2000).headers["Location"]
    upload_id = location.rsplit("/", 1)[1]
    auth = f"Authorization: Bearer {editor}\r\n"
    slow = socket.create_connection(("127.0.0.1", live.port))
    slow.sendall((f"PATCH {location} HTTP/1.1\r\nHost: x\r\n{auth}Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
                  "Content-Type: application/offset+octet-stream\r\nContent-Length: 1000\r\n\r\n").encode() + b"a" * 10)
    deadline = time.monotonic() + 5
    while deps.metadata.uploads.get(upload_id)["lease"] is None and time.monotonic() < deadline:
        time.sleep(0.02)  # until the first request holds the upload
    headers = {"Authorization": f"Bearer {editor}", **TUS, **OCTETS, "Upload-Offset": "0"}
    second = requests.patch(live.url + location, headers=headers, data=b"b" * 1000, timeout=5)
    assert second.status_code == 409 and second.json()["error"]["code"] == "upload_busy", second.text
    slow.sendall(b"a" * 990)
    reply = slow.recv(4096).decode()
    slow.close()
    assert reply.startswith("HTTP/1.1 204") and "Upload-Offset: 1000" in reply
    check = requests.head(live.url + location, headers=headers, timeout=5)
    assert check.headers["Upload-Offset"] == "1000"


def test_lease_is_shared_through_the_record(api, editor, deps):
    """Another process's lease (in the metadata store) blocks this one until it expires."""
    location = create(api, editor, 100).headers["Location"]
    upload_id = location.rsplit("/", 1)[1]
    deps.metadata.uploads.update(upload_id, {"lease": {"owner": "elsewhere", "until": time.time() + 30}})
    assert_error(patch(api, editor, location, 0, b"x"), 409, "upload_busy")
    deps.metadata.uploads.update(upload_id, {"lease": {"owner": "elsewhere", "until": time.time() - 1}})
    assert patch(api, editor, location, 0, b"x").status_code == 204


def test_cors_for_configured_origins(make_config):
    from reelhouse_gateway import create_app

    app = create_app(make_config(CORS_ORIGINS="https://app.example"))
    client = app.test_client()
    preflight = client.options("/api/uploads", headers={"Origin": "https://app.example",
                                                        "Access-Control-Request-Method": "PATCH"})
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Upload-Offset" in preflight.headers["Access-Control-Allow-Headers"]
    exposed = {h.strip() for h in preflight.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"Upload-Offset", "Location", "Upload-Length", "Tus-Version", "Tus-Resumable", "Tus-Max-Size",
            "Tus-Extension", "Upload-Metadata", "Upload-Expires"} <= exposed
    stranger = client.options("/api/uploads", headers={"Origin": "https://evil.example",
                                                       "Access-Control-Request-Method": "PATCH"})
    assert "Access-Control-Allow-Origin" not in stranger.headers
    app.extensions["reelhouse"].close()
