"""A range of an open file sent into gunicorn's client socket by non-blocking sendfile(2) in 1 MiB steps.

gunicorn's file wrapper path calls `socket.sendfile()` once for the whole range on a blocking socket: a single
sendfile(2) of up to 1 GiB, asleep in the kernel whenever the socket buffer is full. Over loopback on 2 cores (1 GiB,
3 rounds of 12 downloads each, a raw client) that ran at 2.7-3.0 GB/s, while non-blocking steps of at most 1 MiB
with poll() between them ran at 3.2-3.8 GB/s with ~10 % less CPU per byte. That is nginx's way (sendfile_max_chunk,
epoll), and it was the gap between the stream service and nginx in bench/range.py.

`SendfileBody.of(environ, ...)` is None unless the server is gunicorn (sync/gthread workers hand over their plain
client socket as `gunicorn.socket`); the caller then uses the server's own file wrapper.
"""

from __future__ import annotations

import errno
import os
import select
import socket
from collections.abc import Callable, Iterator

from services.raw_body import plain_socket, poll_ms, poller

STEP = 1024 * 1024  # bytes per sendfile(2); see the module docstring
SEND_TIMEOUT = 60.0  # seconds a client may take nothing before it is cut off (nginx's send_timeout)


class SendfileBody:
    """A WSGI iterable: an empty first piece (gunicorn sends the status line and headers on the first write), then
    `count` bytes of `fd` from `offset` straight into the socket. A client that goes away or takes nothing for
    `timeout` seconds, or a file that ends early, raises OSError: the headers are out, so gunicorn can only close
    the connection, and the client sees a short body. `on_close` runs when the server closes the iterable."""

    def __init__(self, sock: socket.socket, fd: int, offset: int, count: int, *,
                 on_close: Callable[[], None] | None = None, timeout: float = SEND_TIMEOUT):
        self.sock, self.fd, self.offset, self.count = sock, fd, offset, count
        self.on_close, self.timeout = on_close, timeout
        self.sent = 0

    @classmethod
    def of(cls, environ, fd: int, offset: int, count: int, *, on_close: Callable[[], None] | None = None,
           timeout: float = SEND_TIMEOUT) -> SendfileBody | None:
        sock = plain_socket(environ.get("gunicorn.socket"))
        if sock is None or environ.get("REQUEST_METHOD") == "HEAD":  # plain_socket: Linux, so sendfile(2) too
            return None
        return cls(sock, fd, offset, count, on_close=on_close, timeout=timeout)

    def __iter__(self) -> Iterator[bytes]:
        yield b""
        self._send()

    def _send(self) -> None:
        saved = self.sock.gettimeout()
        writable = poller(self.sock.fileno(), select.POLLOUT)
        self.sock.settimeout(0.0)
        try:
            while self.sent < self.count:
                try:
                    step = os.sendfile(self.sock.fileno(), self.fd, self.offset + self.sent,
                                       min(STEP, self.count - self.sent))
                except BlockingIOError:
                    if not writable.poll(poll_ms(self.timeout)):
                        raise TimeoutError(errno.ETIMEDOUT, f"the client took nothing for {self.timeout:.0f} s "
                                                            f"({self.sent} of {self.count} bytes sent)") from None
                    continue
                if not step:
                    raise OSError(errno.EIO, f"the file ended {self.count - self.sent} bytes early")
                self.sent += step
        finally:
            try:
                self.sock.settimeout(saved)
            except OSError:  # the socket is gone already
                pass

    def close(self) -> None:
        if self.on_close is not None:
            on_close, self.on_close = self.on_close, None
            on_close()
