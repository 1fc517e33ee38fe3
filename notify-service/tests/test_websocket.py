"""The lean websocket send path: frames as wsproto builds them, and gevent's coalesced, non-blocking writes."""

from __future__ import annotations

import gevent
import gevent.socket
import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage

from notify_service.websocket import MAX_CACHED_FRAME, _Coalescing, frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
def test_frames_are_what_wsproto_sends(size):
    server = Connection(ConnectionType.SERVER)  # no extension: what the notify service negotiates
    text = "é" * (size // 2) + "x" * (size % 2)  # multi-byte UTF-8: the length is of the bytes, not the characters
    assert frame(text) == server.send(TextMessage(data=text))
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert frame(data) == server.send(BytesMessage(data=data))
    if size <= MAX_CACHED_FRAME:
        assert frame(text) is frame(text)  # framed once, then reused for every socket


def _read_available(sock) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(1 << 20, 0)
        except BlockingIOError:
            return b"".join(chunks)
        chunks.append(chunk)


def test_frames_sent_in_one_go_leave_in_one_write_when_the_sender_waits():
    left, right = gevent.socket.socketpair()
    right.setblocking(False)
    pending = _Coalescing(left)
    try:
        for n in range(10):
            pending.write(frame(f"event {n}"))
        assert _read_available(right) == b""  # nothing written while the sender still runs
        gevent.sleep(0)  # the sender waits: the hub writes
        assert _read_available(right) == b"".join(frame(f"event {n}") for n in range(10))
    finally:
        left.close()
        right.close()


def test_what_the_kernel_does_not_take_at_once_follows_in_order():
    left, right = gevent.socket.socketpair()
    big = frame(b"x" * (8 << 20))  # far more than a socket buffer
    pending = _Coalescing(left)
    received = bytearray()

    def read(total):
        while len(received) < total:
            received.extend(right.recv(1 << 20))

    try:
        pending.write(frame("first"))
        pending.write(big)
        gevent.sleep(0)
        assert pending.flusher is not None  # the hub wrote what it could and left the rest to a greenlet
        pending.write(frame("last"))
        expected = frame("first") + big + frame("last")
        reader = gevent.spawn(read, len(expected))
        pending.drain()
        reader.join(timeout=30)
        assert bytes(received) == expected
    finally:
        left.close()
        right.close()


def test_a_write_after_the_peer_went_away_raises():
    left, right = gevent.socket.socketpair()
    pending = _Coalescing(left)
    right.close()
    with pytest.raises(OSError):
        for _ in range(100):  # the first writes may land in the buffer before the reset is noticed
            pending.write(frame("event"))
            gevent.sleep(0)
    left.close()
