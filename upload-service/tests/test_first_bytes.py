"""The first bytes of an upload are kept in its record as they arrive, and completion sniffs the container from
them instead of reading them back from the store (on S3 that GET costs a copy of the whole object on some
servers). On both stores; when a crash lost them, completion reads them back."""

from __future__ import annotations

import base64
import hashlib
import socket
import time

import pytest
import requests

from services import keys
from services.media import SNIFF_BYTES
from upload_service import first_bytes

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}


def create(api, token, length):
    return api.call("POST", "/api/uploads", token, headers={**TUS, "Upload-Length": str(length)})


def patch(api, token, location, offset, body, **headers):
    return api.call("PATCH", location, token, data=body, headers={**TUS, **OCTETS, "Upload-Offset": str(offset),
                                                                    **headers})


def status_of(api, token, location):
    video = api.call("GET", location.replace("/uploads/", "/videos/"), token).get_json()
    return video["status"], video.get("error")


def recorded(deps, location) -> bytes | None:
    head = deps.metadata.uploads.get(location.rsplit("/", 1)[1]).get("head")
    return None if head is None else base64.b64decode(head)


@pytest.fixture
def read_backs(deps, monkeypatch):
    """The reads of an original's first SNIFF_BYTES that reach the store."""
    calls = []
    real = deps.objects.read

    def read(key, start=0, end=None):
        if key.endswith("/original") and (start, end) == (0, SNIFF_BYTES - 1):
            calls.append(key)
        return real(key, start, end)

    monkeypatch.setattr(deps.objects, "read", read)
    return calls


def test_first_bytes_gathered_over_small_patches_are_sniffed_without_a_read_back(api, editor, deps, media,
                                                                                   read_backs):
    data = media["small"].read_bytes()
    location = create(api, editor, len(data)).headers["Location"]
    offset = 0
    for size in (100, 300, 1000):
        assert patch(api, editor, location, offset, data[offset:offset + size]).status_code == 204
        offset += size
        assert recorded(deps, location) == data[:min(offset, SNIFF_BYTES)]
    assert patch(api, editor, location, offset, data[offset:]).status_code == 204
    assert status_of(api, editor, location) == ("uploaded", None)
    assert read_backs == []


def test_recorded_first_bytes_decide_the_container(api, editor, deps, media, read_backs):
    """A text file is refused from its recorded first bytes alone."""
    data = media["text"].read_bytes()
    location = create(api, editor, len(data)).headers["Location"]
    assert patch(api, editor, location, 0, data).status_code == 204
    status, error = status_of(api, editor, location)
    assert status == "failed" and "not a video file" in error
    assert read_backs == []


@pytest.mark.parametrize("name,status", [("small", "uploaded"), ("text", "failed")])
def test_first_bytes_lost_in_a_crash_are_read_back(api, editor, deps, media, read_backs, name, status):
    data = media[name].read_bytes()
    location = create(api, editor, len(data)).headers["Location"]
    assert patch(api, editor, location, 0, data[:600]).status_code == 204
    # As a crash leaves it when a PATCH's parts were committed but not its final record update.
    deps.metadata.uploads.update(location.rsplit("/", 1)[1], {"head": None})
    assert patch(api, editor, location, 600, data[600:]).status_code == 204
    assert status_of(api, editor, location)[0] == status
    assert len(read_backs) == 1


def test_a_checksummed_patch_records_its_first_bytes(api, editor, deps, media, read_backs):
    data = media["small"].read_bytes()
    location = create(api, editor, len(data)).headers["Location"]
    digest = base64.b64encode(hashlib.sha1(data[:2000], usedforsecurity=False).digest()).decode()
    assert patch(api, editor, location, 0, data[:2000], **{"Upload-Checksum": f"sha1 {digest}"}).status_code == 204
    assert recorded(deps, location) == data[:SNIFF_BYTES]
    assert patch(api, editor, location, 2000, data[2000:]).status_code == 204
    assert status_of(api, editor, location) == ("uploaded", None) and read_backs == []


def test_a_patch_cut_short_records_what_was_kept(live, api, editor, deps, media, read_backs):
    data = media["small"].read_bytes()
    location = create(api, editor, len(data)).headers["Location"]
    with socket.create_connection(("127.0.0.1", live.port)) as s:  # announces 1000 bytes, sends 300, drops
        s.sendall((f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {editor}\r\n"
                   f"Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
                   f"Content-Type: application/offset+octet-stream\r\nContent-Length: 1000\r\n\r\n").encode())
        s.sendall(data[:300])
        time.sleep(0.3)
    auth = {"Authorization": f"Bearer {editor}", **TUS}
    deadline = time.monotonic() + 10
    while True:  # the server notices the drop, keeps what arrived, and lets go of the upload
        upload = deps.metadata.uploads.get(location.rsplit("/", 1)[1])
        if upload["offset"] and upload["lease"] is None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert upload["offset"] == 300 and recorded(deps, location) == data[:300]
    response = requests.patch(live.url + location, data=data[300:], timeout=30,
                              headers={**auth, **OCTETS, "Upload-Offset": "300"})
    assert response.status_code == 204
    assert status_of(api, editor, location) == ("uploaded", None) and read_backs == []
    tenant = api.call("GET", "/api/auth/me", editor).get_json()["tenant"]["id"]
    assert deps.objects.read(keys.original_key(tenant, location.rsplit("/", 1)[1])) == data


def test_extended_first_bytes():
    assert first_bytes.wanted(0) == SNIFF_BYTES and first_bytes.wanted(500) == 12 and first_bytes.wanted(600) == 0
    start = {"head": None}
    assert base64.b64decode(first_bytes.extended(start, 0, b"abc", 3)) == b"abc"
    assert base64.b64decode(first_bytes.extended(start, 0, b"abcdef", 4)) == b"abcd"  # only what was stored
    known = {"head": base64.b64encode(b"abcd").decode()}
    assert base64.b64decode(first_bytes.extended(known, 4, b"x" * 600, 604)) == b"abcd" + b"x" * (SNIFF_BYTES - 4)
    assert first_bytes.extended(known, 5, b"x", 6) is None  # the record does not reach this PATCH's offset
    assert first_bytes.extended({"head": None}, 10, b"x", 11) is None  # lost in a crash
    assert first_bytes.stored(known, 4) == b"abcd" and first_bytes.stored(known, 1000) is None
    assert first_bytes.stored({}, 10) is None
