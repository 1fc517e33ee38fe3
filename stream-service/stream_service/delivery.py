"""Serving stored objects over HTTP: RFC 9110 ranges and conditional requests, sendfile, S3 proxy or redirect.

A library for the stream routes, called inside a Flask request for GET and HEAD:

- `serve_object(store, key, ...)` answers from the object store. A key with a local file is sent by sendfile(2)
  in 1 MiB non-blocking steps straight into gunicorn's socket (services.sendfile_body), or by another server's
  file wrapper, so the bytes never pass through Python. An S3 object is streamed through in fixed-size chunks
  (mode "proxy"; the upstream body is closed when the server closes the response, e.g. on a client disconnect)
  or answered by a 302 to a presigned plain GET (mode "redirect"; the client repeats its own `Range`).
- `serve_bytes(data, ...)` answers a small generated body (a rewritten playlist) with the same rules.

Conditional requests are evaluated in RFC 9110 §13.2.2 order: If-Match, If-Unmodified-Since (412), If-None-Match,
If-Modified-Since (304), If-Range, then Range (206, multipart/byteranges, or 416). A syntactically invalid
`Range` is ignored (200); a multi-range request with overlapping ranges or more than MAX_RANGES ranges gets the
whole representation (200), never a 416.
"""

from __future__ import annotations

import io
import os
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

from flask import Response, current_app, request
from werkzeug.http import http_date, parse_date
from werkzeug.wsgi import wrap_file

from services.errors import ApiError, error_response
from services.ports.objects import InvalidKey, ObjectInfo, ObjectNotFound, ObjectStore
from services.sendfile_body import SendfileBody

# Cache-Control values the routes use.
IMMUTABLE = "private, max-age=31536000, immutable"  # segments, init segments, images: a key never changes meaning
EVENT_PLAYLIST = "no-cache"  # a playlist that still grows: revalidate every time (cheap with the ETag)
VOD_PLAYLIST = "private, max-age=60"  # a finished playlist: short, since it carries a short-lived token
REDIRECT_CACHE = "private, no-store"  # a 302 to a presigned URL that expires: never stored
ERROR_CACHE = "no-store"  # 412/416 answers: not the representation, so not cached under its lifetime

MODES = ("proxy", "redirect")
CHUNK = 256 * 1024  # bytes per read when Python has to carry the body (S3 proxy, multipart, no sendfile)
MAX_RANGES = 16  # more satisfiable ranges than this in one request: answer 200 with the whole body
PRESIGN_SECONDS = 300

_RANGE_SPEC = re.compile(r"(\d+)-(\d*)|-(\d+)")
_ETAG = re.compile(r'\s*(W/)?"([^"]*)"\s*')
_ETAG_MEMBER = re.compile(r'[\s,]*(W/)?"([^"]*)"[ \t]*(?:,|$)')
_BIG = 10**18  # any number of more digits is "larger than every object" (int() of huge strings is slow / refused)


# --- request evaluation -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What to answer: 200 (whole), 206 (`ranges`, one or several), 304, 412 or 416."""

    status: int
    ranges: tuple[tuple[int, int], ...] = ()  # inclusive (first, last) byte positions, in request order


def _number(digits: str) -> int:
    return int(digits) if len(digits) <= 18 else _BIG


def parse_range(value: str) -> list[tuple[int | None, int | None]] | None:
    """The range specs of a `Range` value as (first, last) with None for open ends ((None, n) is a suffix of n
    bytes), or None when the value is not a valid bytes range set (wrong unit, garbage, `5-2`): then it is
    ignored."""
    unit, sep, range_set = value.partition("=")
    if not sep or unit.lower() != "bytes":
        return None
    specs: list[tuple[int | None, int | None]] = []
    for element in range_set.split(","):
        element = element.strip(" \t")
        if not element:  # the list rule allows empty elements ("bytes=0-1,,4-5")
            continue
        match = _RANGE_SPEC.fullmatch(element)
        if match is None:
            return None
        first, last, suffix = match.groups()
        if suffix is not None:
            specs.append((None, _number(suffix)))
            continue
        first_pos = _number(first)
        last_pos = _number(last) if last else None
        if last_pos is not None and last_pos < first_pos:
            return None
        specs.append((first_pos, last_pos))
    return specs or None


def satisfiable_ranges(specs: list[tuple[int | None, int | None]], size: int) -> list[tuple[int, int]]:
    """The specs that select at least one byte of a `size`-byte representation, clipped to it (RFC 9110 §14.1.1:
    a range starting at or past the end and a zero-length suffix are unsatisfiable; nothing of an empty one is
    satisfiable)."""
    ranges = []
    for first, last in specs:
        if first is None:  # suffix
            assert last is not None
            if last == 0 or size == 0:
                continue
            ranges.append((max(size - last, 0), size - 1))
        elif first < size:
            ranges.append((first, size - 1 if last is None else min(last, size - 1)))
    return ranges


def _entity_tags(value: str) -> list[tuple[bool, str]] | None:
    """(weak, opaque-tag) of each entity-tag in a list (`"a", W/"b"`); None for `*`. A member that is not an
    entity-tag is skipped. Scanned, not split on commas: an opaque tag may contain a comma."""
    if value.strip() == "*":
        return None
    tags = []
    position = 0
    while position < len(value):
        match = _ETAG_MEMBER.match(value, position)
        if match is not None:
            tags.append((match.group(1) is not None, match.group(2)))
            position = match.end()
        else:
            comma = value.find(",", position)
            position = len(value) if comma < 0 else comma + 1
    return tags


def _own_tag(etag: str) -> tuple[bool, str]:
    match = _ETAG.fullmatch(etag)
    if match is None:  # an unquoted validator from a caller: treat it as the opaque tag
        return False, etag.strip()
    return match.group(1) is not None, match.group(2)


def _matches_any(header: str, etag: str, *, weak: bool) -> bool:
    tags = _entity_tags(header)
    if tags is None:  # "*": any current representation (this one exists)
        return True
    own_weak, own = _own_tag(etag)
    if not weak and own_weak:
        return False
    return any(tag == own and (weak or not tag_weak) for tag_weak, tag in tags)


def _seconds(moment: datetime) -> datetime:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def _if_range_holds(value: str, info: ObjectInfo, now: datetime) -> bool:
    """If-Range (RFC 9110 §13.1.5): an entity-tag matches by strong comparison only; a date matches when it is
    exactly the Last-Modified, and only if that is a strong validator (at least a second before now)."""
    value = value.strip()
    if value.startswith(('"', "W/")):
        tags = _entity_tags(value)
        if not tags or len(tags) != 1:
            return False
        tag_weak, tag = tags[0]
        own_weak, own = _own_tag(info.etag)
        return not tag_weak and not own_weak and tag == own
    date = parse_date(value)
    if date is None or info.last_modified is None:
        return False
    modified = _seconds(info.last_modified)
    return date == modified and now - modified >= timedelta(seconds=1)


def evaluate(info: ObjectInfo, method: str, headers, *, now: datetime | None = None) -> Plan:
    """The answer RFC 9110 §13.2.2 gives for a GET or HEAD of the representation `info` with these headers."""
    now = now or datetime.now(UTC)
    modified = _seconds(info.last_modified) if info.last_modified is not None else None

    if_match = headers.get("If-Match")
    if if_match is not None:
        if not _matches_any(if_match, info.etag, weak=False):
            return Plan(412)
    else:
        unmodified_since = parse_date(headers.get("If-Unmodified-Since"))
        if unmodified_since is not None and modified is not None and modified > unmodified_since:
            return Plan(412)

    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        if _matches_any(if_none_match, info.etag, weak=True):
            return Plan(304)
    else:
        modified_since = parse_date(headers.get("If-Modified-Since"))
        if modified_since is not None and modified is not None and modified <= modified_since:
            return Plan(304)

    range_header = headers.get("Range")
    if range_header is None or method not in ("GET", "HEAD"):
        return Plan(200)
    specs = parse_range(range_header)
    if specs is None:
        return Plan(200)  # invalid: ignored
    if_range = headers.get("If-Range")
    if if_range is not None and not _if_range_holds(if_range, info, now):
        return Plan(200)  # the client's copy is stale: send the whole new one
    ranges = satisfiable_ranges(specs, info.size)
    if not ranges:
        return Plan(416)
    if len(ranges) > 1:
        ordered = sorted(ranges)
        overlapping = any(b[0] <= a[1] for a, b in zip(ordered, ordered[1:], strict=False))
        if overlapping or len(ranges) > MAX_RANGES:
            return Plan(200)
    return Plan(206, tuple(ranges))


# --- bodies -------------------------------------------------------------------------------------------------


class FileSlice(io.RawIOBase):
    """An open file read from its current offset up to (not including) `stop`, then end of stream.

    Keeps `fileno()`, `tell()` and `seek()` of the underlying file, so a server's file wrapper can `sendfile`
    from the current offset (gunicorn sends exactly Content-Length bytes from there), while a generic wrapper
    that reads until EOF (werkzeug's) still gets only the slice.
    """

    def __init__(self, file: BinaryIO, start: int, stop: int):
        self._file = file
        self._stop = stop
        file.seek(start)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._file.fileno()

    def tell(self) -> int:
        return self._file.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def readinto(self, buffer) -> int:
        left = self._stop - self._file.tell()
        if left <= 0:
            return 0
        view = memoryview(buffer).cast("B")
        return self._file.readinto(view[: min(len(view), left)]) or 0

    def close(self) -> None:
        if not self.closed:
            try:
                self._file.close()
            finally:
                super().close()


class StreamBody:
    """A WSGI response iterable of `length` bytes read in CHUNK pieces from a stream (or from the stream a
    callable opens on first use).

    `close()` (called by the server when the response ends or the client goes away) closes the stream, even if
    iteration never started. A stream that ends early raises, so the server drops the connection instead of
    sending a short body under a longer Content-Length.
    """

    def __init__(self, stream: BinaryIO | Callable[[], BinaryIO], length: int, chunk: int = CHUNK):
        self._opener = stream if callable(stream) else None
        self._stream: BinaryIO | None = None if callable(stream) else stream
        self._left = length
        self._chunk = chunk
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._closed or self._left <= 0:
            self.close()
            raise StopIteration
        if self._stream is None:
            assert self._opener is not None
            self._stream = self._opener()
        data = self._stream.read(min(self._chunk, self._left))
        if not data:
            self.close()
            raise OSError(f"the stored object ended {self._left} bytes early")
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()


class MultipartBody:
    """multipart/byteranges (RFC 9110 §14.6) as a WSGI iterable: each part's bytes come from
    `read_range(first, last)` in CHUNK pieces, one part's stream open at a time, closed by `close()`."""

    def __init__(self, ranges, size: int, content_type: str, boundary: str,
                 read_range: Callable[[int, int], BinaryIO], on_close: Callable[[], None] | None = None):
        self._pieces = _multipart_pieces(ranges, size, content_type, boundary)
        self._read_range = read_range
        self._on_close = on_close
        self._current: StreamBody | None = None
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        while not self._closed:
            if self._current is not None:
                try:
                    return next(self._current)
                except StopIteration:
                    self._current = None
            try:
                piece = next(self._pieces)
            except StopIteration:
                break
            if isinstance(piece, bytes):
                return piece
            first, last = piece
            self._current = StreamBody(lambda f=first, la=last: self._read_range(f, la), last - first + 1)
        self.close()
        raise StopIteration

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._current is not None:
                self._current.close()
        finally:
            if self._on_close is not None:
                self._on_close()


def _part_header(first: int, last: int, size: int, content_type: str, boundary: str, *, leading: bool) -> bytes:
    return ((b"\r\n" if leading else b"") + f"--{boundary}\r\nContent-Type: {content_type}\r\n"
            f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n".encode("latin-1"))


def _multipart_pieces(ranges, size: int, content_type: str, boundary: str):
    for index, (first, last) in enumerate(ranges):
        yield _part_header(first, last, size, content_type, boundary, leading=index > 0)
        yield (first, last)
    yield f"\r\n--{boundary}--\r\n".encode("latin-1")


def multipart_length(ranges, size: int, content_type: str, boundary: str) -> int:
    length = len(f"\r\n--{boundary}--\r\n")
    for index, (first, last) in enumerate(ranges):
        length += len(_part_header(first, last, size, content_type, boundary, leading=index > 0))
        length += last - first + 1
    return length


class _Source(ABC):
    """Where a representation's bytes come from: `body(first, last)` for one range, `reader(first, last)` for
    the parts of a multipart answer, `release()` when no body is sent after all."""

    @abstractmethod
    def body(self, first: int, last: int): ...

    @abstractmethod
    def reader(self, first: int, last: int) -> BinaryIO: ...

    def release(self) -> None:  # noqa: B027 - optional hook
        pass


class _FileSource(_Source):
    def __init__(self, file: BinaryIO):
        self.file = file

    def body(self, first, last):
        direct = SendfileBody.of(request.environ, self.file.fileno(), first, last - first + 1, on_close=self.release)
        return direct or wrap_file(request.environ, FileSlice(self.file, first, last + 1), CHUNK)

    def reader(self, first, last):
        return _PreadReader(self.file.fileno(), first, last + 1)

    def release(self):
        self.file.close()


class _PreadReader(io.RawIOBase):
    """Bytes start..stop of a file descriptor by pread: several can share one open file without seeking."""

    def __init__(self, fd: int, start: int, stop: int):
        self._fd, self._pos, self._stop = fd, start, stop

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self._stop - self._pos)
        if n <= 0:
            return 0
        data = os.pread(self._fd, n, self._pos)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)


class _StoreSource(_Source):
    def __init__(self, store: ObjectStore, key: str):
        self.store, self.key = store, key

    def body(self, first, last):
        # Opened now, not on first iteration: a vanished object is still a 404 before any header is sent.
        return StreamBody(self.reader(first, last), last - first + 1)

    def reader(self, first, last):
        return self.store.open(self.key, first, last)


class _BytesSource(_Source):
    def __init__(self, data: bytes):
        self.data = data

    def body(self, first, last):
        return [self.data[first:last + 1]]

    def reader(self, first, last):
        return io.BytesIO(self.data[first:last + 1])


# --- responses ----------------------------------------------------------------------------------------------


def _representation_headers(info: ObjectInfo, cache_control: str) -> dict[str, str]:
    headers = {"Accept-Ranges": "bytes", "ETag": info.etag, "Cache-Control": cache_control}
    if info.last_modified is not None:
        headers["Last-Modified"] = http_date(info.last_modified)
    return headers


def _not_satisfiable(info: ObjectInfo) -> Response:
    return error_response(416, "range_not_satisfiable",
                          f"The requested range is not within the {info.size} bytes of this object.",
                          {"Content-Range": f"bytes */{info.size}", "Accept-Ranges": "bytes",
                           "Cache-Control": ERROR_CACHE})


def _precondition_failed() -> Response:
    return error_response(412, "precondition_failed", "The object does not match the request's preconditions.",
                          {"Cache-Control": ERROR_CACHE})


def _respond(plan: Plan, info: ObjectInfo, source: _Source | None, *, content_type: str,
             cache_control: str) -> Response:
    """Build the answer to `plan`; `source` None means "no body" (HEAD). The source is released when unused."""
    response_class = current_app.response_class
    try:
        if plan.status == 412:
            return _precondition_failed()
        if plan.status == 416:
            return _not_satisfiable(info)
        headers = _representation_headers(info, cache_control)
        if plan.status == 304:
            return response_class(status=304, headers=headers)
        if plan.status == 200 or not plan.ranges:
            ranges: tuple[tuple[int, int], ...] = ((0, info.size - 1),) if info.size else ()
            status = 200
        else:
            ranges, status = plan.ranges, 206
        headers["Content-Type"] = content_type
        if len(ranges) <= 1:
            if status == 206:
                first, last = ranges[0]
                headers["Content-Range"] = f"bytes {first}-{last}/{info.size}"
            length = ranges[0][1] - ranges[0][0] + 1 if ranges else 0
            headers["Content-Length"] = str(length)
            if source is None or not length:
                return response_class(status=status, headers=headers)
            body = source.body(*ranges[0])
            source = None  # the body owns it now
            return response_class(body, status=status, headers=headers, direct_passthrough=True)
        boundary = secrets.token_hex(16)
        headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
        headers["Content-Length"] = str(multipart_length(ranges, info.size, content_type, boundary))
        if source is None:
            return response_class(status=status, headers=headers)
        owner, source = source, None
        body = MultipartBody(ranges, info.size, content_type, boundary, owner.reader, owner.release)
        return response_class(body, status=status, headers=headers, direct_passthrough=True)
    finally:
        if source is not None:
            source.release()


def _open_local(path, store: ObjectStore, key: str) -> tuple[BinaryIO, ObjectInfo] | None:
    """The open file behind `key` and the store's info about that very file, or None if there is no file.

    Writes replace files by atomic rename, so a stat and an open done one after the other may see two versions
    (one's ETag and length, the other's bytes). The file is opened first, then stat'ed through the store, then
    the path is checked to still lead to the open file (an open file's inode number cannot be reused): if it
    does, the store's stat was of that file. Otherwise retried.
    """
    for _ in range(5):
        try:
            file = open(path, "rb", buffering=0)  # noqa: SIM115 - handed to the response, which closes it
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        try:
            opened = os.fstat(file.fileno())
            info = store.stat(key)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if (current is not None and (current.st_ino, current.st_dev) == (opened.st_ino, opened.st_dev)
                    and info.size == opened.st_size):
                return file, info
        except BaseException:
            file.close()
            raise
        file.close()
    raise ApiError(503, "unavailable", "The object is being replaced; try again.", headers={"Retry-After": "1"})


def _not_found(key: str) -> ApiError:
    return ApiError(404, "not_found", "No such object.")


def serve_object(store: ObjectStore, key: str, *, mode: str = "proxy", cache_control: str,
                 content_type: str | None = None, presign_expires: int = PRESIGN_SECONDS) -> Response:
    """Answer the current GET or HEAD request with the object at `key` (see the module docstring).

    `mode` applies to stores without local files: "proxy" streams the bytes through, "redirect" answers a GET
    with a 302 to a presigned plain GET (`Cache-Control: private, no-store`; the client repeats its Range there).
    Redirect mode redirects only a GET of the whole object or of one satisfiable range without preconditions
    (but a matching If-Range); the rest is answered here from the stat: HEAD (a presigned GET URL refuses HEAD),
    304 and 412, 416 with the contract body, and by proxy an invalid or multi-range Range, a stale If-Range (S3
    ignores If-Range and would send a range of the new object) and other preconditions that held.
    ObjectNotFound or an invalid key → ApiError 404.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    method = request.method
    try:
        path = store.local_path(key)
        opened = _open_local(path, store, key) if path is not None and method != "HEAD" else None
        info = opened[1] if opened is not None else store.stat(key)
    except (ObjectNotFound, InvalidKey):
        raise _not_found(key) from None
    content_type = content_type or info.content_type
    plan = evaluate(info, method, request.headers)

    if opened is not None:
        source: _Source | None = _FileSource(opened[0])
    elif method == "HEAD":
        source = None
    elif path is not None:  # a local store whose file vanished after the stat
        raise _not_found(key)
    else:
        source = _StoreSource(store, key)
        if mode == "redirect" and plan.status in (200, 206) and _redirectable(plan):
            url = store.presign_get(key, presign_expires)
            if url is not None:
                return current_app.response_class(
                    status=302, headers={"Location": url, "Cache-Control": REDIRECT_CACHE})
    try:
        return _respond(plan, info, source, content_type=content_type, cache_control=cache_control)
    except ObjectNotFound:  # deleted between the stat and the ranged GET
        raise _not_found(key) from None


_PRECONDITIONS = ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since")


def _redirectable(plan: Plan) -> bool:
    """Whether S3 will answer the client's repeated request as we would, so a redirect is safe: a GET with no
    preconditions for the whole object (200, no Range) or for one satisfiable range asked as one range-spec
    (206, with an If-Range that matched or none). Everything else is answered here: S3 ignores If-Range, so it
    would send a range of a changed object for a stale one; and what S3 implementations do with several ranges,
    an invalid Range, or combined preconditions (moto checks If-Modified-Since even beside If-None-Match)
    differs, while those requests are rare (a browser that follows our no-store 302 validates its cached copy
    against the S3 URL, not ours)."""
    if any(name in request.headers for name in _PRECONDITIONS):
        return False
    range_header = request.headers.get("Range")
    if range_header is None:
        return plan.status == 200
    specs = parse_range(range_header)
    return plan.status == 206 and len(plan.ranges) == 1 and specs is not None and len(specs) == 1 \
        and "," not in range_header


def serve_bytes(data: bytes, *, etag: str, last_modified: datetime | None, content_type: str,
                cache_control: str) -> Response:
    """Answer the current GET or HEAD request with a small in-memory body (conditional requests and ranges too).
    `etag` may be given quoted (`"abc"`, `W/"abc"`) or bare (it is quoted)."""
    if not etag.startswith(('"', 'W/"')):
        etag = f'"{etag}"'
    info = ObjectInfo(key="", size=len(data), etag=etag, last_modified=last_modified,  # type: ignore[arg-type]
                      content_type=content_type)
    plan = evaluate(info, request.method, request.headers)
    source = None if request.method == "HEAD" else _BytesSource(bytes(data))
    return _respond(plan, info, source, content_type=content_type, cache_control=cache_control)
