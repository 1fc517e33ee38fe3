"""A request body of known length read straight from gunicorn's client socket, not through its body reader.

gunicorn's Body hands a body over through two layers of BytesIO buffers (several copies of every byte, and Python
work per piece): ~1 CPU second per GiB, on cores the client and the storage also need. Under gunicorn's sync and
gthread workers `RawBody.of(environ)` takes the connection over instead, when nothing of the body has been read yet:
first the bytes gunicorn already holds, then large `recv_into()`s into the caller's buffer, or `splice(2)` through a
kernel pipe into another socket or a file (no copy through Python at all). Anything else (another server, a chunked
body, a body partly read already) gets None, and the caller reads `wsgi.input` as usual.

Until the whole body is through, gunicorn cannot know where the client's next request starts: its `Body.failed`
is set meanwhile, so that if the body ends early it closes the connection instead of parsing the rest as a request.
"""

from __future__ import annotations

import fcntl
import io
import os
import select
import socket

PIPE_SIZE = 1024 * 1024  # the pipe's capacity (Linux's default limit for unprivileged processes): bytes per splice
LOWAT = 256 * 1024  # a receive waits for at least this much (or less, at the end or after a read timeout)


class SpliceBroken(Exception):
    """A splice stopped: `side` ("source" or "sink") failed with `error` (an OSError; EOFError for a short source).
    `moved` bytes had reached the sink before."""

    def __init__(self, side: str, error: BaseException, moved: int = 0):
        super().__init__(f"{side}: {error}")
        self.side, self.error, self.moved = side, error, moved


def plain_socket(sock) -> socket.socket | None:
    """`sock` if it is a plain (not TLS) open socket and this system has splice(2)."""
    return sock if hasattr(os, "splice") and type(sock) is socket.socket and sock.fileno() >= 0 else None


def poller(fd: int, events: int):
    """A poll object watching `fd` for `events`, errors and hang-ups."""
    watch = select.poll()
    watch.register(fd, events | select.POLLERR | select.POLLHUP)
    return watch


def poll_ms(timeout: float | None) -> int:
    """A timeout in seconds (None: forever) as poll()'s milliseconds."""
    return -1 if timeout is None else max(0, int(timeout * 1000))


class _LowWater:
    """SO_RCVLOWAT on a socket, raised for large receives and put back to 1 afterwards (a kept-alive connection
    then reads its next request as before)."""

    def __init__(self, sock: socket.socket):
        self.sock, self.value = sock, 1

    def want(self, count: int) -> None:
        # Wake up for a worthwhile amount (a client writing 8 KiB at a time made 30 000 turns of a splice loop per
        # 256 MiB): poll() and recv() then wait until this many bytes are there, or the connection ends or fails.
        if self.value != min(count, LOWAT):
            self.value = min(count, LOWAT)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, self.value)

    def reset(self) -> None:
        if self.value != 1:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
            except OSError:
                pass
            self.value = 1


def splice(source: socket.socket, sink: socket.socket | int, count: int, *, read_timeout: float | None,
           write_timeout: float | None) -> None:
    """Moves exactly `count` bytes from `source` to `sink` (a socket, or the descriptor of a file written at its
    current position) through a kernel pipe, waiting at most `read_timeout` for the source and `write_timeout` for
    the sink at a time (the sockets' own timeouts are restored afterwards). Raises SpliceBroken naming the side
    that failed and how much had been moved."""
    sockets = [s for s in (source, sink) if isinstance(s, socket.socket)]
    timeouts = [s.gettimeout() for s in sockets]
    out, into = os.pipe()
    lowat = _LowWater(source)
    moved = 0
    try:
        try:
            fcntl.fcntl(into, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:  # a lower /proc/sys/fs/pipe-max-size: the default 64 KiB still works, in smaller steps
            pass
        room = fcntl.fcntl(into, fcntl.F_GETPIPE_SZ)
        for s in sockets:
            s.settimeout(0.0)  # non-blocking: the waits (and their timeouts) are ours
        src = source.fileno()
        dst = sink.fileno() if isinstance(sink, socket.socket) else sink
        readable, writable = poller(src, select.POLLIN), poller(dst, select.POLLOUT)
        flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
        while count:
            lowat.want(count)
            try:
                held = os.splice(src, into, min(count, room), flags=flags)
            except BlockingIOError:
                if not readable.poll(poll_ms(read_timeout)):  # less than the low-water mark in that time: take it
                    try:
                        held = os.splice(src, into, min(count, room), flags=flags)
                    except BlockingIOError:
                        raise SpliceBroken("source", TimeoutError(f"nothing came for {read_timeout:.0f} s"),
                                           moved) from None
                    except OSError as error:
                        raise SpliceBroken("source", error, moved) from error
                else:
                    continue
            except OSError as error:
                raise SpliceBroken("source", error, moved) from error
            if not held:
                raise SpliceBroken("source", EOFError(f"the connection closed {count} bytes before the end"), moved)
            count -= held
            while held:
                try:
                    step = os.splice(out, dst, held, flags=flags | (os.SPLICE_F_MORE if count else 0))
                    held -= step
                    moved += step
                except BlockingIOError:
                    if not writable.poll(poll_ms(write_timeout)):
                        raise SpliceBroken("sink", TimeoutError(f"nothing went for {write_timeout:.0f} s"),
                                           moved) from None
                except OSError as error:
                    raise SpliceBroken("sink", error, moved) from error
    finally:
        os.close(out)
        os.close(into)
        for s, timeout in zip(sockets, timeouts, strict=True):
            try:
                s.settimeout(timeout)
            except OSError:
                pass
        lowat.reset()


class RawBody:
    """The body of the current request, read from gunicorn's client socket (see the module's docstring)."""

    @classmethod
    def of(cls, environ, length: int | None = None) -> RawBody | None:
        """The body, if it can be taken over: gunicorn's own reader for a body of known length (`length`, or
        CONTENT_LENGTH), nothing of it read yet, and a plain socket under it. Otherwise None."""
        try:
            from gunicorn.http.body import Body, LengthReader
            from gunicorn.http.unreader import SocketUnreader
        except ImportError:
            return None
        stream, sock = environ.get("wsgi.input"), plain_socket(environ.get("gunicorn.socket"))
        if sock is None or type(stream) is not Body or type(stream.reader) is not LengthReader:
            return None
        unreader = stream.reader.unreader
        if type(unreader) is not SocketUnreader or unreader.sock is not sock:
            return None
        if length is None:
            try:
                length = int(environ.get("CONTENT_LENGTH") or "")
            except ValueError:
                return None
        if getattr(stream, "failed", False) or stream.buf.tell() + stream.reader.length != length:
            return None  # part of it was read already
        return cls(stream, sock, length)

    def __init__(self, stream, sock: socket.socket, length: int):
        self.stream, self.sock, self.length = stream, sock, length
        self.pending: memoryview | None = None  # taken bytes readinto() has not handed over yet; None: not taken
        self._timeout: tuple[float | None] | None = None  # the socket's own, while readinto() changed it
        self._lowat = _LowWater(sock)

    @property
    def on_socket(self) -> int:
        """Bytes of the body still to be received from the socket."""
        return self.stream.reader.length

    def take(self) -> bytes:
        """Claims the connection, once, before anything else reads: returns the bytes of the body gunicorn had
        already received; the rest (`on_socket` bytes) is still on the socket."""
        if self.pending is not None:
            raise RuntimeError("the body was taken already")
        stream, reader = self.stream, self.stream.reader
        stream.failed = True
        held = stream.buf.getvalue()  # bytes gunicorn has already received, first those its Body holds
        stream.buf = io.BytesIO()
        buffered = reader.unreader.take_buffered()
        if len(buffered) > reader.length:  # the start of a pipelined next request: not ours
            reader.unreader.unread(buffered[reader.length:])
            buffered = buffered[:reader.length]
        reader.length -= len(buffered)
        self.pending = memoryview(b"")
        self._finish_if_done()
        return held + buffered

    def _finish_if_done(self) -> None:
        if not self.on_socket and not self.pending:
            self._restore()
            self.stream.failed = False  # all through: gunicorn may read the next request on this connection

    def _restore(self) -> None:
        self._lowat.reset()
        if self._timeout is not None:
            try:
                self.sock.settimeout(self._timeout[0])
            except OSError:
                pass
            self._timeout = None

    def readinto(self, buffer, timeout: float | None = None) -> int:
        """Up to len(buffer) bytes of the body into `buffer`; 0 at its end. EOFError if the client closed the
        connection early, TimeoutError if nothing came for `timeout` seconds, OSError if the connection broke."""
        if self.pending is None:
            self.pending = memoryview(self.take())
        view = memoryview(buffer).cast("B")
        if self.pending:
            n = min(len(view), len(self.pending))
            view[:n] = self.pending[:n]
            self.pending = self.pending[n:]
            self._finish_if_done()
            return n
        want = min(len(view), self.on_socket)
        if not want:
            return 0
        try:
            if self._timeout is None:  # kept for the whole body: two system calls fewer per receive
                self._timeout = (self.sock.gettimeout(),)
                self.sock.settimeout(timeout)
            self._lowat.want(want)
            n = self.sock.recv_into(view[:want])
        except OSError:
            self._restore()
            raise
        if not n:
            self._restore()
            raise EOFError(f"the connection closed {self.on_socket} bytes before the end of the body")
        self.stream.reader.length -= n
        self._finish_if_done()
        return n

    def splice_into(self, sink: socket.socket | int, count: int | None = None, *, read_timeout: float | None,
                    write_timeout: float | None = None) -> None:
        """Moves `count` bytes (all that is on the socket by default) from the socket into `sink`, a socket or a
        file's descriptor, after `take()` (whose bytes go first, by the caller). Raises SpliceBroken."""
        count = self.on_socket if count is None else count
        try:
            splice(self.sock, sink, count, read_timeout=read_timeout, write_timeout=write_timeout)
        except SpliceBroken as broken:
            self.stream.reader.length -= broken.moved
            raise
        self.stream.reader.length -= count
        self._finish_if_done()
