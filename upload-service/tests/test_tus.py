"""The tus 1.0.0 server on both stores: real clients, every status, resume after drops and restarts."""

from __future__ import annotations

import base64
import hashlib
import socket
import time
from pathlib import Path

import pytest
import requests
from tusclient import client as tus

from services import keys

TUS = {"Tus-Resumable": "1.0.0"}


def digest(data: bytes | Path) -> str:
    return hashlib.sha256(data.read_bytes() if isinstance(data, Path) else data).hexdigest()


def meta(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def create(api, token, length, metadata=None, **headers):
    return api.call("POST", "/api/uploads", token,
                    headers={**TUS, "Upload-Length": str(length), **({"Upload-Metadata": metadata} if metadata else {}),
                             **headers})


def patch(api, token, location, offset, body, **headers):
    return api.call("PATCH", location, token, data=body,
                    headers={**TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream",
                             **headers})


def head(api, token, location):
    return api.call("HEAD", location, token, headers=TUS)


def stored(deps, video_id: str, tenant_id: str) -> bytes:
    return deps.objects.read(keys.original_key(tenant_id, video_id))


def tenant_of(api, token) -> str:
    return api.call("GET", "/api/auth/me", token).get_json()["tenant"]["id"]


def objects_of(deps, tenant_id) -> list[str]:
    return [info.key for info in deps.objects.list(f"tenants/{tenant_id}/")]


# --- real clients ------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [256 * 1024, 7 * 1024 * 1024 + 3])
def test_tuspy_uploads_a_clip_end_to_end(live, api, editor, deps, events, media, chunk):
    clip = media["big"]
    uploader = tus.TusClient(live.url + "/api/uploads", headers={"Authorization": f"Bearer {editor}"}).uploader(
        str(clip), chunk_size=chunk, metadata={"filename": "big.mp4", "title": "Zoë’s «big» clip"})
    uploader.upload()
    video_id = uploader.url.rsplit("/", 1)[1]
    video = api.call("GET", f"/api/videos/{video_id}", editor).get_json()
    assert video["status"] == "uploaded" and video["title"] == "Zoë’s «big» clip"
    assert (video["width"], video["height"]) == (640, 360) and abs(video["duration"] - 4) < 0.1
    assert digest(stored(deps, video_id, tenant_of(api, editor))) == digest(clip)
    lane, job = deps.jobs.published[-1]
    assert lane == "express" and job["video_id"] == video_id and job["type"] == "transcode"
    statuses = [e for t, e in events.of(video_id) if t == "video.status"]
    assert [e["status"] for e in statuses] == ["uploading", "uploaded"] and [e["seq"] for e in statuses] == [1, 2]
    # No staging objects or multipart leftovers remain.
    assert objects_of(deps, tenant_of(api, editor)) == [keys.original_key(tenant_of(api, editor), video_id)]


def test_long_sources_go_to_the_bulk_lane(api, editor, deps, media, upload_config):
    object.__setattr__(deps.config, "express_max_duration", 1)
    data = media["small"].read_bytes()
    location = create(api, editor, len(data)).headers["Location"]
    assert patch(api, editor, location, 0, data).status_code == 204
    assert deps.jobs.published[-1][0] == "bulk"


def test_received_bytes_are_counted_in_the_metrics(api, editor, media):
    data = media["small"].read_bytes()
    location = create(api, editor, len(data)).headers["Location"]
    assert patch(api, editor, location, 0, data[:1000]).status_code == 204
    assert patch(api, editor, location, 1000, data[1000:]).status_code == 204
    metrics = api.client.get("/metrics").get_data(as_text=True)
    assert f"reelhouse_upload_bytes_total {float(len(data))}" in metrics


def test_creation_with_upload_and_method_override(api, editor, deps, media):
    data = media["small"].read_bytes()
    first = api.call("POST", "/api/uploads", editor, data=data[:1000], headers={
        **TUS, "Upload-Length": str(len(data)), "Content-Type": "application/offset+octet-stream"})
    assert first.status_code == 201 and first.headers["Upload-Offset"] == "1000"
    location = first.headers["Location"]
    assert location.startswith("/api/uploads/")
    # A proxy that only passes POST: X-HTTP-Method-Override carries PATCH and HEAD.
    rest = api.call("POST", location, editor, data=data[1000:], headers={
        **TUS, "X-HTTP-Method-Override": "PATCH", "Upload-Offset": "1000",
        "Content-Type": "application/offset+octet-stream"})
    assert rest.status_code == 204 and rest.headers["Upload-Offset"] == str(len(data))
    probe = api.call("POST", location, editor, headers={**TUS, "X-HTTP-Method-Override": "HEAD"})
    assert probe.status_code == 200 and probe.headers["Upload-Offset"] == str(len(data))


def test_options_advertises_the_server(api):
    response = api.client.options("/api/uploads")
    assert response.status_code == 204
    assert response.headers["Tus-Version"] == "1.0.0"
    assert set(response.headers["Tus-Extension"].split(",")) == {
        "creation", "creation-with-upload", "termination", "checksum", "expiration"}
    assert set(response.headers["Tus-Checksum-Algorithm"].split(",")) == {"sha1", "md5", "sha256"}
    assert int(response.headers["Tus-Max-Size"]) == 16 * 1024**3


# --- resume ----------------------------------------------------------------------------------------


def _half_patch(live, token, location, offset, chunk):
    """Send a PATCH announcing `chunk` but only its first half, then drop the connection."""
    half = chunk[: len(chunk) // 2]
    with socket.create_connection(("127.0.0.1", live.port)) as s:
        s.sendall((f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                   f"Tus-Resumable: 1.0.0\r\nUpload-Offset: {offset}\r\n"
                   f"Content-Type: application/offset+octet-stream\r\nContent-Length: {len(chunk)}\r\n\r\n").encode())
        s.sendall(half)
        time.sleep(0.3)
    return len(half)


def test_resume_after_a_connection_dies_mid_patch(live, api, editor, deps, media):
    data = media["big"].read_bytes()
    location = create(api, editor, len(data), meta(filename="big.mp4")).headers["Location"]
    auth = {"Authorization": f"Bearer {editor}", **TUS}
    sent = _half_patch(live, editor, location, 0, data[: 9 * 1024 * 1024])
    deadline = time.monotonic() + 10
    while True:  # the server notices the drop, keeps what arrived, and lets go of the upload
        offset = int(requests.head(live.url + location, headers=auth, timeout=5).headers["Upload-Offset"])
        busy = requests.patch(live.url + location, headers={**auth, "Upload-Offset": str(offset),
                                                            "Content-Type": "application/offset+octet-stream"},
                              data=b"", timeout=5).status_code == 409
        if (offset and not busy) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert 0 < offset <= sent
    uploader = tus.TusClient(live.url + "/api/uploads", headers={"Authorization": f"Bearer {editor}"}).uploader(
        file_stream=open(media["big"], "rb"), url=live.url + location, chunk_size=3 * 1024 * 1024)
    assert uploader.offset == offset
    uploader.upload()
    video_id = location.rsplit("/", 1)[1]
    assert digest(stored(deps, video_id, tenant_of(api, editor))) == digest(data)
    assert api.call("GET", f"/api/videos/{video_id}", editor).get_json()["status"] == "uploaded"


def test_a_restarted_service_resumes_from_the_metadata(upload_config, store_kind, request, media):
    """A second app instance (a new process, as far as state goes) continues where the first stopped."""
    from reelhouse_gateway import create_app
    from services.bootstrap import bootstrap
    from services.testing import Api

    data = media["big"].read_bytes()
    given = {"objects": request.getfixturevalue("s3_store")} if store_kind == "s3" else {}
    first_deps = bootstrap(upload_config, **given)
    first = Api(create_app(deps=first_deps).test_client())
    token = first.register()["access_token"]
    location = create(first, token, len(data)).headers["Location"]
    cut = 6 * 1024 * 1024 + 12345
    assert patch(first, token, location, 0, data[:cut]).status_code == 204
    first_deps.close()

    second_deps = bootstrap(upload_config, **given)
    second = Api(create_app(deps=second_deps).test_client())
    assert head(second, token, location).headers["Upload-Offset"] == str(cut)
    assert patch(second, token, location, cut, data[cut:]).status_code == 204
    video_id = location.rsplit("/", 1)[1]
    assert digest(stored(second_deps, video_id, tenant_of(second, token))) == digest(data)
    second_deps.close()
