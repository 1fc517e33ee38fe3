"""A PATCH body as the assemblers read it: into their own buffers, at most `limit` bytes, the lease checked first.

Under gunicorn the body comes straight from the client's socket (services.raw_body: large receives into the
assembler's buffer instead of gunicorn's 1 MiB pieces copied through two BytesIO buffers); elsewhere (werkzeug's
server, Flask's test client, a chunked body) from `wsgi.input` as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from werkzeug.exceptions import ClientDisconnected

from services.raw_body import RawBody

BROKEN = (ClientDisconnected, OSError, EOFError)  # what a source raises when the client went away or stalled


class Interrupted(Exception):
    """The client went away mid-body; what arrived before is kept."""


class Source(Protocol):
    def readinto(self, view: memoryview) -> int: ...


class StreamSource:
    """`wsgi.input` (through werkzeug's request.stream): one read() per call, copied into the caller's buffer."""

    def __init__(self, stream):
        self.stream = stream

    def readinto(self, view: memoryview) -> int:
        data = self.stream.read(len(view))
        view[:len(data)] = data
        return len(data)


class SocketSource:
    """The body straight from gunicorn's client socket; a client silent for `timeout` seconds has gone away."""

    def __init__(self, raw: RawBody, timeout: float):
        self.raw, self.timeout = raw, timeout

    def readinto(self, view: memoryview) -> int:
        return self.raw.readinto(view, self.timeout)


class Body:
    """At most `limit` bytes of `source`; `check()` runs before every read (the lease), `count(n)` after it (the
    received-bytes metric). A broken source raises Interrupted."""

    def __init__(self, source: Source, limit: int, check: Callable[[], None], count: Callable[[int], None]):
        self.source, self.left, self.check, self.count = source, limit, check, count
        self.head, self.head_wanted = bytearray(), 0

    def keep_head(self, n: int) -> None:
        """Keep a copy of the first `n` bytes read, in `head`."""
        self.head_wanted = n

    def readinto(self, buffer) -> int:
        """Up to len(buffer) bytes into `buffer`; 0 at the end of the body."""
        self.check()  # never write bytes of an upload somebody else has taken over
        view = memoryview(buffer).cast("B")[:max(self.left, 0)]
        if not len(view):
            return 0
        try:
            n = self.source.readinto(view)
        except BROKEN:
            raise Interrupted() from None
        self.left -= n
        self.count(n)
        if len(self.head) < self.head_wanted:
            self.head += view[:min(n, self.head_wanted - len(self.head))]
        return n

    def fill(self, buffer) -> tuple[int, bool]:
        """Reads until `buffer` is full or the body ends or breaks: (bytes read, interrupted)."""
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view):
            try:
                n = self.readinto(view[filled:])
            except Interrupted:
                return filled, True
            if not n:
                break
            filled += n
        return filled, False


def source_for(environ, stream, timeout: float) -> Source:
    """The client's socket when gunicorn lets go of it, else the WSGI stream."""
    raw = RawBody.of(environ)
    return StreamSource(stream) if raw is None else SocketSource(raw, timeout)
