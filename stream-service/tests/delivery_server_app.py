"""The WSGI app test_delivery runs under a real gunicorn (`gunicorn -k gthread delivery_server_app:app`).

`/local/<key>` serves from a LocalObjectStore at $DELIVERY_LOCAL_ROOT, `/s3/<key>` proxies from the bucket
$DELIVERY_S3_BUCKET at $DELIVERY_S3_ENDPOINT through a store that counts opened and closed upstream streams and
the bytes read from them. `/stats` reports those counts, the worker's pid and resident memory, and how the
local files were sent: "direct" counts bodies sent by services.sendfile_body (sendfile(2) straight into gunicorn's
socket), and the middleware swaps `wsgi.file_wrapper` for a subclass of gunicorn's that counts instances and
iterations (gunicorn iterates a wrapper only when it cannot sendfile it), so "direct > 0, iterations == 0" means the
bytes never went through Python.
"""

from __future__ import annotations

import os
import threading

from flask import Flask, jsonify
from gunicorn.http.wsgi import FileWrapper

from services.adapters.local_objects import LocalObjectStore
from services.adapters.s3_objects import S3ObjectStore
from services.errors import register_error_handlers
from services.sendfile_body import SendfileBody
from stream_service.delivery import IMMUTABLE, serve_object

_lock = threading.Lock()
STATS = {"direct": 0, "wrappers": 0, "iterations": 0, "opened": 0, "closed": 0, "upstream_bytes": 0}


def _count(name: str, n: int = 1) -> None:
    with _lock:
        STATS[name] += n


class CountingFileWrapper(FileWrapper):
    def __init__(self, filelike, blksize=8192):
        super().__init__(filelike, blksize)
        _count("wrappers")

    def __next__(self):
        _count("iterations")
        return super().__next__()


class _TrackedStream:
    def __init__(self, stream):
        self._stream, self._closed = stream, False

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        _count("upstream_bytes", len(data))
        return data

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _count("closed")
            self._stream.close()


class _CountingStore:
    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def open(self, key: str, start: int = 0, end: int | None = None):
        stream = self._inner.open(key, start, end)
        _count("opened")
        return _TrackedStream(stream)


local = LocalObjectStore(os.environ["DELIVERY_LOCAL_ROOT"])
s3 = None
if os.environ.get("DELIVERY_S3_BUCKET"):
    s3 = _CountingStore(S3ObjectStore(os.environ["DELIVERY_S3_BUCKET"], endpoint_url=os.environ["DELIVERY_S3_ENDPOINT"],
                                      access_key="test", secret_key="test"))

flask_app = Flask("delivery-server-test")
register_error_handlers(flask_app)


@flask_app.route("/local/<path:key>", methods=["GET", "HEAD"])
def from_local(key: str):
    return serve_object(local, key, cache_control=IMMUTABLE)


@flask_app.route("/s3/<path:key>", methods=["GET", "HEAD"])
def from_s3(key: str):
    return serve_object(s3, key, mode="proxy", cache_control=IMMUTABLE)


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


@flask_app.route("/stats")
def stats():
    with _lock:
        return jsonify(dict(STATS, pid=os.getpid(), rss_kib=_rss_kib()))


def app(environ, start_response):
    if "wsgi.file_wrapper" in environ:
        environ["wsgi.file_wrapper"] = CountingFileWrapper
    answer = flask_app(environ, start_response)
    if isinstance(answer, SendfileBody):
        _count("direct")
    return answer
