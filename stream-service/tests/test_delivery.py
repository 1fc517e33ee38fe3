"""The range suite for stream_service.delivery (RFC 9110 ranges, conditional requests, HEAD, content types,
caching headers), run against the local store, S3 proxied and S3 by redirect; serve_bytes; the sendfile path
(an in-process WSGI call with a fake file wrapper, and a real gunicorn serving 64 MiB); closing the S3
upstream when the client goes away."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from flask import Flask, request
from requests.structures import CaseInsensitiveDict
from werkzeug.http import http_date
from werkzeug.test import EnvironBuilder

from services.adapters.local_objects import LocalObjectStore
from services.errors import register_error_handlers
from services.testing import free_port
from stream_service import delivery
from stream_service.delivery import (
    EVENT_PLAYLIST,
    IMMUTABLE,
    MAX_RANGES,
    VOD_PLAYLIST,
    parse_range,
    serve_bytes,
    serve_object,
)

MiB = 1024 * 1024
N = 300 * 1024 + 7  # more than one proxy chunk (256 KiB)
DATA = random.Random(5).randbytes(N)
KEY = "t1/v1/original.mp4"
TESTS_DIR = Path(__file__).resolve().parent


def whole(result, info) -> None:
    assert result.status == 200, (result.status, result.body[:200])
    assert result.body == DATA
    assert int(result.headers["Content-Length"]) == N
    assert "Content-Range" not in result.headers
    assert result.headers["ETag"] == info.etag


def partial(result, info, first: int, last: int) -> None:
    assert result.status == 206, (result.status, result.body[:200])
    assert result.headers["Content-Range"] == f"bytes {first}-{last}/{N}"
    assert int(result.headers["Content-Length"]) == last - first + 1
    assert result.body == DATA[first:last + 1]
    assert result.headers["ETag"] == info.etag
    assert result.headers["Content-Type"] == "video/mp4"


def not_satisfiable(result, size: int = N) -> None:
    assert not result.via_s3  # answered by us in every mode, with the contract's body
    assert result.status == 416
    assert result.headers["Content-Range"] == f"bytes */{size}"
    assert result.headers["Accept-Ranges"] == "bytes"
    assert result.headers["Content-Type"] == "application/json"
    assert json.loads(result.body)["error"]["code"] == "range_not_satisfiable"
    assert json.loads(result.body)["error"]["message"]


def parse_multipart(result) -> list[tuple[dict[str, str], bytes]]:
    match = re.fullmatch(r"multipart/byteranges; boundary=([0-9A-Za-z'()+_,\-./:=?]{1,70})",
                         result.headers["Content-Type"])
    assert match, result.headers["Content-Type"]
    delimiter = b"--" + match.group(1).encode()
    body = result.body
    assert body.startswith(delimiter + b"\r\n")
    assert body.endswith(b"\r\n" + delimiter + b"--\r\n")
    assert int(result.headers["Content-Length"]) == len(body)
    parts = []
    for chunk in body[len(delimiter) + 2: -(len(delimiter) + 6)].split(b"\r\n" + delimiter + b"\r\n"):
        head, separator, data = chunk.partition(b"\r\n\r\n")
        assert separator
        headers = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n"))
        parts.append((headers, data))
    return parts


# --- the test app and the three configurations -----------------------------------------------------------


CONFIGS = ("local", "s3-proxy", "s3-redirect")

# serve_bytes' fixed representation for the /bytes route
BYTES_BODY = b"#EXTM3U\n#EXT-X-VERSION:7\n" + b"#EXTINF:4.0,\nseg_00001.m4s?token=abc\n" * 40
BYTES_ETAG = '"playlist-v1"'
BYTES_MODIFIED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def make_app(store, mode: str) -> Flask:
    app = Flask("delivery-test")
    register_error_handlers(app)

    @app.route("/obj/<path:key>", methods=["GET", "HEAD"])
    def obj(key: str):
        return serve_object(store, key, mode=mode, cache_control=request.args.get("cc", IMMUTABLE),
                            content_type=request.args.get("ct"))

    @app.route("/bytes", methods=["GET", "HEAD"])
    def generated():
        return serve_bytes(BYTES_BODY, etag=request.args.get("etag", BYTES_ETAG), last_modified=BYTES_MODIFIED,
                           content_type="application/vnd.apple.mpegurl", cache_control="no-cache")

    return app


@dataclass
class Result:
    status: int
    headers: CaseInsensitiveDict
    body: bytes
    via_s3: bool = False  # the answer came from S3 after our 302
    redirect: Result | None = None  # our 302, when there was one


class Target:
    def __init__(self, name: str, store, mode: str):
        self.name, self.store, self.mode = name, store, mode
        self.app = make_app(store, mode)
        self.client = self.app.test_client()

    @property
    def redirects(self) -> bool:
        return self.mode == "redirect" and self.store.local_path("x") is None

    def put(self, key: str, data: bytes, content_type: str | None = None):
        return self.store.put(key, data, content_type)

    def fetch(self, key: str, method: str = "GET", headers: dict | None = None, **query) -> Result:
        url = f"/obj/{key}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        response = self.client.open(url, method=method, headers=headers or {})
        try:
            result = Result(response.status_code, CaseInsensitiveDict(dict(response.headers)), response.get_data())
        finally:
            response.close()
        if result.status != 302:
            return result
        location = result.headers["Location"]
        followed = requests.request(method, location, headers=headers or {}, allow_redirects=False, timeout=30)
        return Result(followed.status_code, followed.headers, followed.content, via_s3=True, redirect=result)


@pytest.fixture(params=[pytest.param(name, marks=pytest.mark.infra) if name.startswith("s3") else name
                        for name in CONFIGS])
def target(request, tmp_path) -> Target:
    if request.param == "local":
        return Target("local", LocalObjectStore(tmp_path / "objects"), "proxy")
    store = request.getfixturevalue("s3_store")
    return Target(request.param, store, request.param.removeprefix("s3-"))


@pytest.fixture
def bytes_client():
    return make_app(None, "proxy").test_client()


@pytest.fixture
def obj(target: Target):
    """The standard object in the target's store: (target, its stat)."""
    return target, target.put(KEY, DATA)


class TrackedStream:
    """A stream from the store that reports its reads and its close to a CountingStore."""

    def __init__(self, owner: CountingStore, stream):
        self._owner, self._stream, self.closed = owner, stream, False

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        with self._owner.lock:
            self._owner.bytes_read += len(data)
        return data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with self._owner.lock:
                self._owner.closed += 1
            self._stream.close()


class CountingStore:
    """Delegates to a store, counting the streams `open` hands out, the bytes read from them and their closes."""

    def __init__(self, inner):
        self._inner = inner
        self.lock = threading.Lock()
        self.opened = self.closed = self.bytes_read = 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def open(self, key: str, start: int = 0, end: int | None = None):
        stream = self._inner.open(key, start, end)
        with self.lock:
            self.opened += 1
        return TrackedStream(self, stream)


# --- the suite, in every configuration --------------------------------------------------------------------


def test_whole_object_and_its_headers(obj):
    target, info = obj
    result = target.fetch(KEY)
    whole(result, info)
    assert result.headers["Last-Modified"] == http_date(info.last_modified)
    assert result.headers["Content-Type"] == "video/mp4"
    assert result.headers["Accept-Ranges"] == "bytes"
    if target.redirects:
        assert result.via_s3
        assert result.redirect.headers["Cache-Control"] == "private, no-store"
    else:
        assert not result.via_s3
        assert result.headers["Cache-Control"] == IMMUTABLE


SINGLE_RANGES = [  # (header, (first, last)) with {n} the size and {last} the last position
    ("bytes=0-", (0, N - 1)),
    ("bytes=100-199", (100, 199)),
    ("bytes=1000-", (1000, N - 1)),
    ("bytes=-500", (N - 500, N - 1)),
    ("bytes=0-0", (0, 0)),
    (f"bytes={N - 1}-{N - 1}", (N - 1, N - 1)),
    (f"bytes={N - 1}-", (N - 1, N - 1)),
    ("bytes=-1", (N - 1, N - 1)),
    (f"bytes={N - 10}-{N + 1000}", (N - 10, N - 1)),  # longer than the file: clipped
    (f"bytes=0-{10 * N}", (0, N - 1)),
    (f"bytes=-{N + 5}", (0, N - 1)),  # suffix longer than the file: all of it
    ("bytes=5-99999999999999999999999999", (5, N - 1)),  # a huge last-pos is just "to the end"
    ("Bytes=7-8", (7, 8)),  # the unit is case-insensitive
    (f"bytes=262140-{256 * 1024 + 10}", (262140, 262154)),  # across a proxy chunk boundary
]


@pytest.mark.parametrize(("header", "expected"), SINGLE_RANGES, ids=[h for h, _ in SINGLE_RANGES])
def test_single_range(obj, header, expected):
    target, info = obj
    result = target.fetch(KEY, headers={"Range": header})
    partial(result, info, *expected)
    assert result.via_s3 == target.redirects  # one range is what a redirect is for
    if not result.via_s3:
        assert result.headers["Cache-Control"] == IMMUTABLE
        assert result.headers["Accept-Ranges"] == "bytes"
        assert result.headers["Last-Modified"] == http_date(info.last_modified)


UNSATISFIABLE = [f"bytes={N}-", f"bytes={N}-{N + 10}", f"bytes={N + 100}-", "bytes=-0",
                 "bytes=99999999999999999999999-", f"bytes={N}-,{N + 5}-{N + 9}", "bytes=-0,-0"]


@pytest.mark.parametrize("header", UNSATISFIABLE)
def test_range_past_the_end_is_416(obj, header):
    target, _ = obj
    not_satisfiable(target.fetch(KEY, headers={"Range": header}))
    head = target.fetch(KEY, "HEAD", headers={"Range": header})
    assert head.status == 416 and head.headers["Content-Range"] == f"bytes */{N}" and head.body == b""


INVALID = ["items=0-10", "bytes=5-2", "bytes=abc", "bytes=", "bytes=1-2-3", "bytes 0-10", "bytes=--1", "bytes=-",
           "bytes=1-2,garbage", "bytes=0x10-0x20", "bytes=+1-2", "bytes = 0-1", "bytes=0-1;q=2", "0-10", ""]


@pytest.mark.parametrize("header", INVALID)
def test_invalid_range_is_ignored(obj, header):
    target, info = obj
    assert parse_range(header) is None
    result = target.fetch(KEY, headers={"Range": header})
    whole(result, info)
    assert not result.via_s3  # an invalid Range is never left to S3's own reading of it
    assert result.headers["Cache-Control"] == IMMUTABLE


def test_several_ranges_are_multipart_byteranges(obj):
    target, info = obj
    header = f"bytes=0-9, 300000-300099,-5, {256 * 1024 - 3}-{256 * 1024 + 3}"
    result = target.fetch(KEY, headers={"Range": header})
    assert not result.via_s3
    assert result.status == 206
    assert "Content-Range" not in result.headers
    assert result.headers["ETag"] == info.etag
    assert result.headers["Cache-Control"] == IMMUTABLE
    parts = parse_multipart(result)
    expected = [(0, 9), (300000, 300099), (N - 5, N - 1), (256 * 1024 - 3, 256 * 1024 + 3)]
    assert len(parts) == len(expected)
    for (headers, data), (first, last) in zip(parts, expected, strict=True):
        assert headers == {"Content-Type": "video/mp4", "Content-Range": f"bytes {first}-{last}/{N}"}
        assert data == DATA[first:last + 1]

    head = target.fetch(KEY, "HEAD", headers={"Range": header})
    assert head.status == 206 and head.body == b""
    assert head.headers["Content-Type"].startswith("multipart/byteranges; boundary=")
    # the boundary differs per response, its length does not: the same Content-Length
    assert head.headers["Content-Length"] == result.headers["Content-Length"]


def test_most_ranges_allowed_are_multipart(obj):
    target, _ = obj
    ranges = [(i * 1000, i * 1000 + 9) for i in range(MAX_RANGES)]
    result = target.fetch(KEY, headers={"Range": "bytes=" + ",".join(f"{a}-{b}" for a, b in ranges)})
    assert result.status == 206
    assert [data for _, data in parse_multipart(result)] == [DATA[a:b + 1] for a, b in ranges]


@pytest.mark.parametrize("header", [
    "bytes=0-99,50-149",  # overlapping
    "bytes=0-0,0-0",  # the same range twice
    "bytes=100-200,-" + str(N - 150),  # a suffix overlapping an earlier range
    "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(MAX_RANGES + 1)),  # too many
    "bytes=" + ",".join(f"{i}-{i}" for i in range(2000)),  # far too many
], ids=["overlap", "repeat", "suffix-overlap", "too-many", "far-too-many"])
def test_overlapping_or_many_ranges_get_the_whole_body(obj, header):
    target, info = obj
    result = target.fetch(KEY, headers={"Range": header})
    whole(result, info)
    assert not result.via_s3


def test_only_the_satisfiable_ranges_are_sent(obj):
    target, info = obj
    result = target.fetch(KEY, headers={"Range": f"bytes={N + 5}-,10-19,{N}-"})
    partial(result, info, 10, 19)  # one satisfiable range left: a plain 206, not multipart
    result = target.fetch(KEY, headers={"Range": f"bytes=0-1,{N}-,-2"})
    assert [data for _, data in parse_multipart(result)] == [DATA[:2], DATA[-2:]]


def test_if_range_with_the_strong_etag(obj):
    target, info = obj
    result = target.fetch(KEY, headers={"Range": "bytes=10-19", "If-Range": info.etag})
    partial(result, info, 10, 19)
    assert result.via_s3 == target.redirects


@pytest.mark.parametrize("if_range", ['"something-else"', "W/{etag}", "not a validator", "{etag}, {etag}"])
def test_if_range_mismatch_sends_the_whole_body(obj, if_range):
    target, info = obj
    result = target.fetch(KEY, headers={"Range": "bytes=10-19", "If-Range": if_range.format(etag=info.etag)})
    whole(result, info)
    assert not result.via_s3  # S3 ignores If-Range: a redirect would get a range of the new object


def test_if_range_with_a_date(obj):
    target, info = obj
    # A Last-Modified is a strong validator only once it is a second old (RFC 9110 §8.8.2.2).
    time.sleep(max(0.0, 1.05 - (datetime.now(UTC) - info.last_modified.replace(microsecond=0)).total_seconds()))
    date = http_date(info.last_modified)
    partial(target.fetch(KEY, headers={"Range": "bytes=10-19", "If-Range": date}), info, 10, 19)
    for other in (info.last_modified - timedelta(hours=1), info.last_modified + timedelta(hours=1)):
        whole(target.fetch(KEY, headers={"Range": "bytes=10-19", "If-Range": http_date(other)}), info)


def test_if_range_without_range_is_ignored(obj):
    target, info = obj
    whole(target.fetch(KEY, headers={"If-Range": '"other"'}), info)


@pytest.mark.parametrize("if_none_match", ["{etag}", "W/{etag}", '"x", {etag}', '"x",W/{etag} , "y"', "*"])
def test_if_none_match_is_304(obj, if_none_match):
    target, info = obj
    for method in ("GET", "HEAD"):
        result = target.fetch(KEY, method, headers={"If-None-Match": if_none_match.format(etag=info.etag),
                                                    "Range": "bytes=0-9"})
        assert not result.via_s3
        assert result.status == 304
        assert result.body == b""
        assert result.headers["ETag"] == info.etag
        assert result.headers["Cache-Control"] == IMMUTABLE
        assert "Content-Length" not in result.headers and "Content-Range" not in result.headers


def test_if_none_match_mismatch_is_200_and_wins_over_if_modified_since(obj):
    target, info = obj
    future = http_date(datetime.now(UTC) + timedelta(days=1))
    whole(target.fetch(KEY, headers={"If-None-Match": '"x", W/"y"', "If-Modified-Since": future}), info)


def test_if_modified_since(obj):
    target, info = obj
    for since in (info.last_modified, info.last_modified + timedelta(days=1)):
        result = target.fetch(KEY, headers={"If-Modified-Since": http_date(since)})
        assert result.status == 304 and result.body == b"" and result.headers["ETag"] == info.etag
        assert not result.via_s3
    whole(target.fetch(KEY, headers={"If-Modified-Since": http_date(info.last_modified - timedelta(seconds=1))}),
          info)
    whole(target.fetch(KEY, headers={"If-Modified-Since": "yesterday-ish"}), info)


def test_if_match_and_if_unmodified_since_are_412(obj):
    target, info = obj
    for headers in ({"If-Match": '"other"'}, {"If-Match": f"W/{info.etag}"},
                    {"If-Unmodified-Since": http_date(info.last_modified - timedelta(hours=1))}):
        result = target.fetch(KEY, headers=headers)
        assert result.status == 412 and not result.via_s3
        assert json.loads(result.body)["error"]["code"] == "precondition_failed"
    partial(target.fetch(KEY, headers={"If-Match": f'"x", {info.etag}', "Range": "bytes=1-2"}), info, 1, 2)
    whole(target.fetch(KEY, headers={"If-Match": "*"}), info)


HEAD_COMPARED = ("Content-Length", "Content-Range", "Content-Type", "ETag", "Last-Modified", "Accept-Ranges")


@pytest.mark.parametrize("headers", [{}, {"Range": "bytes=100-"}, {"Range": "bytes=-7"}, {"Range": "bytes=0-0"},
                                     {"Range": "garbage"}, {"Range": "bytes=1-2", "If-Range": '"other"'}],
                         ids=["none", "open", "suffix", "first-byte", "invalid", "stale-if-range"])
def test_head_has_the_headers_of_get_and_no_body(obj, headers):
    target, _ = obj
    get = target.fetch(KEY, headers=headers)
    head = target.fetch(KEY, "HEAD", headers=headers)
    assert not head.via_s3  # HEAD is answered here: a presigned GET URL does not allow HEAD
    assert head.status == get.status
    assert head.body == b""
    for name in HEAD_COMPARED:
        assert head.headers.get(name) == get.headers.get(name), name
    assert head.headers["Cache-Control"] == IMMUTABLE
    if not get.via_s3:
        assert set(head.headers) == set(get.headers)


def test_empty_object(target):
    info = target.put("t1/v1/empty.mp4", b"")
    result = target.fetch("t1/v1/empty.mp4")
    assert result.status == 200 and result.body == b"" and int(result.headers["Content-Length"]) == 0
    assert result.headers["ETag"] == info.etag
    head = target.fetch("t1/v1/empty.mp4", "HEAD")
    assert head.status == 200 and head.headers["Content-Length"] == "0" and head.body == b""
    for header in ("bytes=0-", "bytes=0-0", "bytes=-1", "bytes=-0", "bytes=0-10,20-30"):
        not_satisfiable(target.fetch("t1/v1/empty.mp4", headers={"Range": header}), size=0)


@pytest.mark.parametrize(("name", "content_type"), [
    ("hls/720p/index.m3u8", "application/vnd.apple.mpegurl"), ("hls/720p/init.mp4", "video/mp4"),
    ("hls/720p/seg_00001.m4s", "video/iso.segment"), ("thumbnail.jpg", "image/jpeg"),
    ("storyboard.vtt", "text/vtt"), ("blob.bin", "application/octet-stream"),
])
def test_content_type_from_the_store(target, name, content_type):
    target.put(f"t1/v1/{name}", b"0123456789")
    for method in ("GET", "HEAD"):
        result = target.fetch(f"t1/v1/{name}", method, headers={"Range": "bytes=2-4"})
        assert result.headers["Content-Type"] == content_type
        assert result.status == 206 and result.body == (b"234" if method == "GET" else b"")


def test_content_type_given_by_the_caller(target):
    target.put("t1/v1/blob.bin", b"0123456789")
    head = target.fetch("t1/v1/blob.bin", "HEAD", ct="video/mp4")
    assert head.headers["Content-Type"] == "video/mp4"
    result = target.fetch("t1/v1/blob.bin", ct="video/mp4")
    if result.via_s3:  # a presigned GET carries the type stored with the object
        assert result.headers["Content-Type"] == "application/octet-stream"
    else:
        assert result.headers["Content-Type"] == "video/mp4"
    multi = target.fetch("t1/v1/blob.bin", headers={"Range": "bytes=0-0,2-2"}, ct="video/mp4")
    assert [part["Content-Type"] for part, _ in parse_multipart(multi)] == ["video/mp4", "video/mp4"]


@pytest.mark.parametrize("cache_control", [IMMUTABLE, EVENT_PLAYLIST, VOD_PLAYLIST, "private, max-age=3600"])
def test_cache_control_is_passed_through(obj, cache_control):
    target, _ = obj
    for method, headers in (("GET", {}), ("HEAD", {}), ("GET", {"Range": "bytes=0-1,5-6"}),
                            ("GET", {"If-None-Match": "*"})):
        result = target.fetch(KEY, method, headers=headers, cc=cache_control)
        if result.via_s3:
            assert result.redirect.headers["Cache-Control"] == "private, no-store"
        else:
            assert result.headers["Cache-Control"] == cache_control
    assert "Vary" not in result.headers


def test_missing_or_invalid_key_is_404(target):
    for key in ("t1/v1/nothing.mp4", "t1/.hidden", "t1/v1/original.mp4/below"):
        for method in ("GET", "HEAD"):
            result = target.fetch(key, method)
            assert result.status == 404 and not result.via_s3
            if method == "GET":
                assert json.loads(result.body)["error"]["code"] == "not_found"


# --- redirect mode specifics -------------------------------------------------------------------------------


@pytest.mark.infra
def test_redirect_is_a_presigned_plain_get(s3_store):
    target = Target("s3-redirect", s3_store, "redirect")
    info = target.put(KEY, DATA)
    result = target.fetch(KEY, headers={"Range": "bytes=5-14"})
    redirect = result.redirect
    assert redirect.status == 302
    assert redirect.headers["Cache-Control"] == "private, no-store"
    assert "ETag" not in redirect.headers
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(redirect.headers["Location"]).query)
    assert query["X-Amz-SignedHeaders"] == ["host"]  # no range signed in: the client's own Range is used
    assert not any("range" in name.lower() for name in query)
    partial(result, info, 5, 14)
    # the same URL serves any range, and the whole object
    again = requests.get(redirect.headers["Location"], headers={"Range": "bytes=-3"}, timeout=30)
    assert again.status_code == 206 and again.content == DATA[-3:]
    assert requests.get(redirect.headers["Location"], timeout=30).content == DATA


def test_mode_is_checked(tmp_path):
    app = make_app(LocalObjectStore(tmp_path), "teleport")
    assert app.test_client().get("/obj/x.mp4").status_code == 500
    with app.test_request_context("/obj/x.mp4"), pytest.raises(ValueError, match="mode"):
        delivery.serve_object(LocalObjectStore(tmp_path), "x.mp4", mode="teleport", cache_control=IMMUTABLE)


def test_local_store_ignores_redirect_mode(tmp_path):
    store = LocalObjectStore(tmp_path)
    store.put(KEY, DATA)
    target = Target("local-redirect", store, "redirect")
    result = target.fetch(KEY, headers={"Range": "bytes=1-3"})
    assert result.status == 206 and result.body == DATA[1:4] and not result.via_s3


# --- serve_bytes -------------------------------------------------------------------------------------------


def test_serve_bytes(bytes_client):
    size = len(BYTES_BODY)
    response = bytes_client.get("/bytes")
    assert response.status_code == 200 and response.data == BYTES_BODY
    assert response.headers["ETag"] == BYTES_ETAG
    assert response.headers["Last-Modified"] == http_date(BYTES_MODIFIED)
    assert response.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Content-Length"] == str(size)

    response = bytes_client.get("/bytes", headers={"Range": "bytes=-10"})
    assert response.status_code == 206 and response.data == BYTES_BODY[-10:]
    assert response.headers["Content-Range"] == f"bytes {size - 10}-{size - 1}/{size}"

    head = bytes_client.head("/bytes", headers={"Range": "bytes=0-6"})
    assert head.status_code == 206 and head.data == b"" and head.headers["Content-Length"] == "7"

    for headers in ({"If-None-Match": BYTES_ETAG}, {"If-None-Match": "W/" + BYTES_ETAG},
                    {"If-Modified-Since": http_date(BYTES_MODIFIED)}):
        for method in ("GET", "HEAD"):
            response = bytes_client.open("/bytes", method=method, headers=headers)
            assert response.status_code == 304 and response.data == b""
            assert response.headers["ETag"] == BYTES_ETAG and response.headers["Cache-Control"] == "no-cache"

    response = bytes_client.get("/bytes", headers={"Range": "bytes=0-6", "If-Range": BYTES_ETAG})
    assert response.status_code == 206 and response.data == b"#EXTM3U"
    response = bytes_client.get("/bytes", headers={"Range": "bytes=0-6", "If-Range": http_date(BYTES_MODIFIED)})
    assert response.status_code == 206
    response = bytes_client.get("/bytes", headers={"Range": "bytes=0-6", "If-Range": '"playlist-v0"'})
    assert response.status_code == 200 and response.data == BYTES_BODY

    response = bytes_client.get("/bytes", headers={"Range": f"bytes={size}-"})
    assert response.status_code == 416 and response.headers["Content-Range"] == f"bytes */{size}"
    assert response.json["error"]["code"] == "range_not_satisfiable"

    response = bytes_client.get("/bytes", headers={"Range": "bytes=0-6,-4"})
    assert response.status_code == 206
    boundary = response.headers["Content-Type"].split("boundary=")[1]
    assert response.data == (f"--{boundary}\r\nContent-Type: application/vnd.apple.mpegurl\r\n"
                             f"Content-Range: bytes 0-6/{size}\r\n\r\n#EXTM3U\r\n"
                             f"--{boundary}\r\nContent-Type: application/vnd.apple.mpegurl\r\n"
                             f"Content-Range: bytes {size - 4}-{size - 1}/{size}\r\n\r\n").encode() \
        + BYTES_BODY[-4:] + f"\r\n--{boundary}--\r\n".encode()
    assert int(response.headers["Content-Length"]) == len(response.data)


def test_serve_bytes_weak_and_bare_etags(bytes_client):
    response = bytes_client.get("/bytes?etag=abc")
    assert response.headers["ETag"] == '"abc"'
    weak = bytes_client.get("/bytes?etag=W/%22abc%22", headers={"Range": "bytes=0-6", "If-Range": 'W/"abc"'})
    assert weak.status_code == 200  # If-Range needs a strong validator
    weak = bytes_client.get("/bytes?etag=W/%22abc%22", headers={"If-None-Match": '"abc"'})
    assert weak.status_code == 304  # If-None-Match compares weakly
    comma = bytes_client.get("/bytes?etag=%22a,b%22", headers={"If-None-Match": '"c", "a,b"'})
    assert comma.status_code == 304  # a comma inside an entity-tag is not a list separator
    assert bytes_client.get("/bytes?etag=%22a,b%22", headers={"If-None-Match": '"a"'}).status_code == 200


# --- the sendfile path -------------------------------------------------------------------------------------


class FakeFileWrapper:
    """Stands in for a WSGI server's wsgi.file_wrapper (PEP 3333): records what it was given, never iterated."""

    def __init__(self, filelike, block_size=8192):
        self.filelike, self.block_size = filelike, block_size

    def close(self):
        self.filelike.close()


@pytest.mark.parametrize(("header", "first", "last"), [(None, 0, N - 1), ("bytes=1000-1999", 1000, 1999),
                                                       ("bytes=-10", N - 10, N - 1)])
def test_local_file_goes_to_the_servers_file_wrapper(tmp_path, header, first, last):
    store = LocalObjectStore(tmp_path)
    store.put(KEY, DATA)
    app = make_app(store, "proxy")
    environ = EnvironBuilder(path=f"/obj/{KEY}", headers={"Range": header} if header else {}).get_environ()
    environ["wsgi.file_wrapper"] = FakeFileWrapper
    started = {}
    app_iter = app(environ, lambda status, headers, exc_info=None: started.update(status=status, headers=headers))
    assert isinstance(app_iter, FakeFileWrapper)  # passed through untouched: the server may sendfile it
    headers = dict(started["headers"])
    assert int(headers["Content-Length"]) == last - first + 1
    fd = app_iter.filelike.fileno()
    assert os.lseek(fd, 0, os.SEEK_CUR) == first  # where gunicorn's sendfile starts
    assert os.fstat(fd).st_ino == store.local_path(KEY).stat().st_ino
    # a server that reads instead (until EOF) still gets only the range
    assert app_iter.filelike.read() == DATA[first:last + 1]
    assert app_iter.filelike.read(10) == b""
    app_iter.close()
    with pytest.raises(ValueError):
        app_iter.filelike.fileno()  # closed with the response


def test_head_and_304_open_no_file(tmp_path):
    store = LocalObjectStore(tmp_path)
    info = store.put(KEY, DATA)
    app = make_app(store, "proxy")
    before = len(os.listdir("/proc/self/fd"))
    for method, headers in (("HEAD", {}), ("GET", {"If-None-Match": info.etag}), ("GET", {"Range": f"bytes={N}-"})):
        response = app.test_client().open(f"/obj/{KEY}", method=method, headers=headers)
        response.close()
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.fixture
def gunicorn_server(tmp_path, request):
    """gunicorn -k gthread serving tests/delivery_server_app.py; yields (base_url, local store, s3 store)."""
    local = LocalObjectStore(tmp_path / "objects")
    env = dict(os.environ, DELIVERY_LOCAL_ROOT=str(local.root), PYTHONUNBUFFERED="1")
    s3 = None
    if "s3_store" in request.fixturenames:
        s3 = request.getfixturevalue("s3_store")
        s3.ping()  # create the bucket before the server uses it
        env.update(DELIVERY_S3_BUCKET=s3.bucket, DELIVERY_S3_ENDPOINT=s3.endpoint_url)
    port = free_port()
    log = (tmp_path / "gunicorn.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", "1", "--threads", "4", "-b", f"127.0.0.1:{port}",
         "--chdir", str(TESTS_DIR), "--graceful-timeout", "2", "delivery_server_app:app"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()
            try:  # the master listens before its worker has imported the app: a read may wait
                if requests.get(base + "/stats", timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "gunicorn did not start: " + (tmp_path / "gunicorn.log").read_text()
            time.sleep(0.1)
        yield base, local, s3
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _download(url: str, headers: dict | None = None) -> tuple[requests.Response, str, int]:
    digest, size = hashlib.sha256(), 0
    with requests.get(url, headers=headers or {}, stream=True, timeout=60) as response:
        for chunk in response.iter_content(MiB):
            digest.update(chunk)
            size += len(chunk)
    return response, digest.hexdigest(), size


def test_gunicorn_sends_local_files_by_sendfile(gunicorn_server, tmp_path):
    base, local, _ = gunicorn_server
    data = random.Random(64).randbytes(64 * MiB)
    local.put("big/original.mp4", data)
    url = f"{base}/local/big/original.mp4"

    first, last = 12_345, 40 * MiB + 17
    response, digest, size = _download(url, {"Range": f"bytes={first}-{last}"})
    assert response.status_code == 206 and response.headers["Content-Range"] == f"bytes {first}-{last}/{len(data)}"
    assert size == last - first + 1 and digest == hashlib.sha256(data[first:last + 1]).hexdigest()

    response, digest, size = _download(url, {"Range": f"bytes=-{MiB}"})
    assert response.status_code == 206 and digest == hashlib.sha256(data[-MiB:]).hexdigest()

    whole_digest = hashlib.sha256(data).hexdigest()
    del data
    before = requests.get(base + "/stats", timeout=10).json()
    for _ in range(5):
        response, digest, size = _download(url)
        assert response.status_code == 200 and size == 64 * MiB and digest == whole_digest
    after = requests.get(base + "/stats", timeout=10).json()
    assert after["pid"] == before["pid"]
    assert after["direct"] == before["direct"] + 5 and after["direct"] >= 7  # sendfile(2) into gunicorn's socket
    assert after["iterations"] == 0  # no file was ever read through Python
    assert after["rss_kib"] - before["rss_kib"] < 4 * 1024, (before, after)

    head = requests.head(url, timeout=10)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(64 * MiB) and head.content == b""


# --- S3 proxy: bounded reads, closed on disconnect ----------------------------------------------------------


@pytest.mark.infra
def test_proxy_closes_the_upstream_when_the_response_is_closed_early(s3_store):
    store = CountingStore(s3_store)
    s3_store.put(KEY, DATA)
    client = make_app(store, "proxy").test_client()
    response = client.get(f"/obj/{KEY}", buffered=False)
    stream = iter(response.response)
    assert len(next(stream)) == delivery.CHUNK
    response.close()
    assert (store.opened, store.closed) == (1, 1)
    assert store.bytes_read < N

    # never iterated at all (a client gone before the first write)
    response = client.get(f"/obj/{KEY}", headers={"Range": "bytes=0-"}, buffered=False)
    response.close()
    assert (store.opened, store.closed) == (2, 2)

    # multipart: the part being sent is closed too
    response = client.get(f"/obj/{KEY}", headers={"Range": "bytes=0-9,300000-"}, buffered=False)
    stream = iter(response.response)
    while store.opened < 4:
        next(stream)
    response.close()
    assert (store.opened, store.closed) == (4, 4)

    # read to the end: every stream closed
    for headers in ({}, {"Range": "bytes=0-9,300000-300010,-5"}):
        with client.get(f"/obj/{KEY}", headers=headers) as response:
            assert response.status_code in (200, 206) and len(response.get_data()) >= 15
    assert store.opened == store.closed == 8


@pytest.mark.infra
def test_proxy_reads_in_bounded_chunks(s3_store):
    store = CountingStore(s3_store)
    s3_store.put(KEY, DATA)
    client = make_app(store, "proxy").test_client()
    response = client.get(f"/obj/{KEY}", buffered=False)
    sizes = [len(chunk) for chunk in response.response]
    response.close()
    assert sizes == [delivery.CHUNK, N - delivery.CHUNK]


@pytest.mark.infra
def test_gunicorn_client_disconnect_closes_the_s3_stream(s3_store, gunicorn_server):
    base, _, s3 = gunicorn_server
    size = 32 * MiB
    s3.put("big/original.mp4", random.Random(32).randbytes(size))
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"GET /s3/big/original.mp4 HTTP/1.1\r\nHost: test\r\n\r\n")
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and f"content-length: {size}".encode() in head.lower()
        got = len(body)
        while got < MiB:
            got += len(sock.recv(65536))
    # the client is gone after 1 MiB: the server's next writes fail and it closes the response iterable
    deadline = time.monotonic() + 20
    while True:
        stats = requests.get(base + "/stats", timeout=10).json()
        if stats["opened"] == 1 and stats["closed"] == 1:
            break
        assert time.monotonic() < deadline, stats
        time.sleep(0.1)
    assert stats["upstream_bytes"] < size // 2, stats  # the upstream read stopped early

    # and a complete download through the same server is byte-exact
    response, digest, got = _download(f"{base}/s3/big/original.mp4", {"Range": f"bytes={MiB}-"})
    assert response.status_code == 206 and got == size - MiB
