"""The websocket under Engine.IO, with a leaner send path for fan-out (measured in bench/realtime.py).

Engine.IO gives every socket a writer (thread or greenlet) that takes the packets queued for it and sends each
through simple-websocket, which frames it with wsproto (pure Python) and makes one `send()` system call per packet.
A burst of 10 events to 1,000 sockets was 10,000 framings and 10,000 system calls; framing and writing were 80 % of
the notify process's CPU. Two changes, nothing else of simple-websocket's behaviour (handshake, reading, close):

- A server frame carries no mask, so one packet's frame is the same bytes for every socket: it is built once per
  distinct message (Engine.IO encodes a broadcast once and hands every socket the same string) and reused.
- Under gevent, the frames of one moment leave in one system call per socket: `send` appends to the socket's
  pending bytes, and a hub callback (run as soon as the sending greenlet waits) writes them without blocking;
  whatever the kernel does not take at once goes on in a greenlet. Threads (threading mode) send each frame at once.
- Under gevent, a broadcast (`FanOutManager.emit`) appends its frame straight to the pending bytes of every socket
  whose Engine.IO queue is empty, instead of queueing a packet and waking that socket's writer greenlet for it.
  The order of packets is kept: an empty queue means the writer already handed every earlier packet to `send`
  (its loop from taking packets to sending them never yields), and a socket with packets queued gets the event
  through its queue, behind them.

`install(server)` puts the websocket class in Engine.IO's slot for its async mode's websocket (`Server._async`, the
table through which Engine.IO picks its eventlet, gevent or threading websocket); it checks the slot's shape, so an
Engine.IO that changed it fails at start-up, not on the first event.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import socketio
from engineio import packet as eio_packet
from engineio.async_drivers._websocket_wsgi import SimpleWebSocketWSGI
from socketio import packet as sio_packet

log = logging.getLogger(__name__)

MAX_CACHED_FRAME = 16 * 1024  # larger packets (rare: events are ~200 bytes) are framed per send
_CACHE_SIZE = 256
_frames: dict[str | bytes, bytes] = {}


def frame(message: str | bytes) -> bytes:
    """The unmasked, unfragmented websocket frame of one message: text for str, binary for bytes."""
    found = _frames.get(message)
    if found is not None:
        return found
    payload, opcode = (message.encode(), 0x81) if isinstance(message, str) else (bytes(message), 0x82)
    n = len(payload)
    if n < 126:
        head = bytes((opcode, n))
    elif n < 1 << 16:
        head = bytes((opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((opcode, 127)) + n.to_bytes(8, "big")
    built = head + payload
    if n <= MAX_CACHED_FRAME:
        if len(_frames) >= _CACHE_SIZE:
            _frames.clear()  # a burst's messages are sent within moments; older ones are not asked for again
        _frames[message] = built
    return built


class _Coalescing:
    """Pending bytes of one gevent socket, written by a hub callback in one system call."""

    def __init__(self, sock):
        import gevent

        self.sock, self.gevent = sock, gevent
        self.loop = gevent.get_hub().loop
        self.pending: list[bytes] = []
        self.scheduled = False
        self.flusher = None
        self.failure: OSError | None = None

    def write(self, data: bytes) -> None:
        if self.failure is not None:
            raise self.failure
        self.pending.append(data)
        if not self.scheduled and self.flusher is None:
            self.scheduled = True
            self.loop.run_callback(self._flush_in_hub)

    def _flush_in_hub(self) -> None:
        self.scheduled = False
        if self.flusher is not None or not self.pending:
            return
        data = b"".join(self.pending)
        self.pending.clear()
        try:
            sent = os.write(self.sock.fileno(), data)  # gevent keeps the OS socket non-blocking
        except BlockingIOError:
            sent = 0
        except OSError as error:  # the client is gone: the writer stops on its next send
            self.failure = error
            return
        if sent < len(data):  # the kernel's buffer is full: the rest waits in a greenlet, not in the hub
            self.pending.insert(0, data[sent:])
            self.flusher = self.gevent.spawn(self._flush_waiting)

    def _flush_waiting(self) -> None:
        try:
            while self.pending:
                data = b"".join(self.pending)
                self.pending.clear()
                self.sock.sendall(data)
        except OSError as error:
            self.failure = error
        finally:
            self.flusher = None

    def drain(self) -> None:
        """Write what is pending now (before the close frame)."""
        if self.flusher is not None:
            self.flusher.join()
        if self.pending and self.failure is None:
            self._flush_waiting()


def lean_websocket(base: type, registry: dict[str, Any]) -> type:
    """Engine.IO's websocket class `base` (simple-websocket's WSGI wrapper) with the send path above; each open
    one is in `registry` under its Engine.IO session id while it serves its socket."""

    class LeanWebSocket(base):
        _coalescing: _Coalescing | None = None
        eio_socket: Any = None

        def __call__(self, environ, start_response):
            # Engine.IO hands its socket's bound `_websocket_handler` as the WSGI app of this websocket
            self.eio_socket = getattr(self.app, "__self__", None)
            sid = getattr(self.eio_socket, "sid", None)
            if sid is not None:
                registry[sid] = self
            try:
                return super().__call__(environ, start_response)
            finally:
                if sid is not None and registry.get(sid) is self:
                    del registry[sid]

        def append_if_idle(self, data: bytes) -> bool:
            """Append a frame to the pending bytes if nothing is queued before it (gevent); else False."""
            s, pending = self.eio_socket, self._coalescing
            if pending is None or pending.failure is not None or not self.ws.connected or s is None:
                return False
            if not s.upgraded or s.upgrading or s.closing or s.closed or not s.queue.empty():
                return False
            pending.write(data)
            return True

        def send(self, message):
            ws = self.ws
            if not ws.connected:
                raise OSError("websocket closed")  # what Engine.IO's writer expects of a closed socket
            if self._coalescing is None:
                if not _gevent_socket(ws.sock):
                    ws.sock.sendall(frame(message))
                    return
                self._coalescing = _Coalescing(ws.sock)
            self._coalescing.write(frame(message))

        def close(self):
            if self._coalescing is not None:
                try:
                    self._coalescing.drain()
                except OSError:  # the client is gone; closing goes on
                    pass
            return super().close()

    LeanWebSocket.__qualname__ = LeanWebSocket.__name__ = f"Lean{base.__name__}"
    return LeanWebSocket


def _gevent_socket(sock: Any) -> bool:
    return type(sock).__module__.startswith("gevent.")


class FanOutManager(socketio.Manager):
    """python-socketio's in-memory client manager whose broadcasts go straight to idle gevent sockets."""

    def __init__(self):
        super().__init__()
        self.websockets: dict[str, Any] = {}  # Engine.IO sid -> open LeanWebSocket (filled by `install`)

    def emit(self, event, data, namespace, room=None, skip_sid=None, callback=None, to=None, **kwargs):
        room = to or room
        if callback is not None or namespace not in self.rooms or not self.websockets:
            return super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs)
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        encoded = self.server.packet_class(sio_packet.EVENT, namespace=namespace, data=[event, *args]).encode()
        if isinstance(encoded, list):  # binary attachments: several packets, the common path
            return super().emit(event, data, namespace, room=room, skip_sid=skip_sid, **kwargs)
        eio_pkt = eio_packet.Packet(eio_packet.MESSAGE, encoded)
        data_frame = frame(eio_pkt.encode())
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        websockets = self.websockets
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid in skip:
                continue
            ws = websockets.get(eio_sid)
            if ws is None or not ws.append_if_idle(data_frame):
                self.server._send_eio_packet(eio_sid, eio_pkt)  # what socketio.Manager.emit does
        return None


def install(server: Any) -> bool:
    """Use the lean websocket in this python-socketio `server`'s Engine.IO server (only there: the driver's table
    is shared by every Engine.IO server of the process, so it is copied, not changed), and let its manager, if a
    `FanOutManager`, write to those websockets. False if the driver's websocket is not simple-websocket's
    (gevent-websocket installed, say): that one is left as it is."""
    eio = server.eio
    table = getattr(eio, "_async", None)
    if not isinstance(table, dict) or "websocket" not in table:
        raise RuntimeError(f"unexpected Engine.IO driver table {table!r}; see notify_service/websocket.py")
    base = table["websocket"]
    if not (isinstance(base, type) and issubclass(base, SimpleWebSocketWSGI)):
        log.warning("Engine.IO's websocket is %r, not simple-websocket's: the lean send path is not used", base)
        return False
    manager = server.manager
    registry = manager.websockets if isinstance(manager, FanOutManager) else {}
    eio._async = {**table, "websocket": lean_websocket(base, registry)}
    return True
