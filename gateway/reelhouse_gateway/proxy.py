"""Distributed gateway: each service's path prefixes (routing.ROUTES) are forwarded to its URL.

Bodies stream both ways, never whole in memory: under gunicorn on Linux a large body of known length goes from one
socket to the other through a kernel pipe (`splice`, no copy through Python), otherwise in 256 KiB pieces read
ahead by a helper thread. Status codes, `Range`, tus and CORS headers pass through unchanged; `X-Request-ID` and
`X-Forwarded-*` go upstream. A service that refuses connections answers 503, one that times out 504, one that
breaks the exchange 502, all in the contract's error shape. Socket.IO websocket upgrades are tunnelled byte for
byte (`WebSocketTunnel`); an ingress may also send `/socket.io` straight to the notify replicas.
"""

from __future__ import annotations

import json
import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import requests
import urllib3
from flask import Blueprint, Flask, Response, current_app, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from werkzeug.middleware.proxy_fix import ProxyFix

from reelhouse_gateway.routing import ROUTES
from services.errors import ApiError
from services.raw_body import RawBody, plain_socket
from services.raw_body import SpliceBroken as _Broken
from services.raw_body import splice as _splice
from services.tokens import TokenError
from services.web import rate_limiter

log = logging.getLogger(__name__)

CHUNK = 256 * 1024  # per response read and write; with READ_AHEAD, what one download may hold in the gateway
# RFC 9110 §7.6.1 connection-specific fields, plus the ones the gateway sets itself
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
              "transfer-encoding", "upgrade", "proxy-connection"}
NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length", "x-request-id", "x-forwarded-for", "x-forwarded-proto",
                              "x-forwarded-host"}
NOT_RETURNED = HOP_BY_HOP | {"server", "date", "x-request-id"}
SERVICE_NAMES = {"auth": "auth service", "upload": "upload service", "stream": "stream service",
                 "notify": "notify service"}


# A service under gunicorn closes a keep-alive connection idle for 2 s (its --keep-alive default); a request sent
# at the moment it does is lost with a reset, which the load test saw as rare 502s. So an idle connection is only
# reused well before that, and a safe request (GET, HEAD, OPTIONS) lost that way is sent once more.
IDLE_REUSE_LIMIT = 1.0
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class _FreshConnections:
    """Pool mixin: a connection idle longer than IDLE_REUSE_LIMIT is closed (dialled anew on use), not reused."""

    def _put_conn(self, conn):
        if conn is not None:
            conn.reelhouse_idle_since = time.monotonic()
        super()._put_conn(conn)

    def _get_conn(self, timeout=None):
        conn = super()._get_conn(timeout)
        since = getattr(conn, "reelhouse_idle_since", None)
        if since is not None and time.monotonic() - since > IDLE_REUSE_LIMIT:
            conn.close()  # as urllib3 does with a dropped connection: the next request connects again
        return conn


class _SplicingConnection(urllib3.connection.HTTPConnection):
    """A connection that sends a `_ClientBody` by splicing it from the client's socket into its own."""

    def send(self, data) -> None:
        if isinstance(data, _ClientBody):
            data.splice_into(self.sock)
        else:
            super().send(data)


class _FreshHTTPPool(_FreshConnections, urllib3.HTTPConnectionPool):
    ConnectionCls = _SplicingConnection


class _FreshHTTPSPool(_FreshConnections, urllib3.HTTPSConnectionPool):
    pass


class Upstream:
    """One service: its base URL and a pool of keep-alive connections to it."""

    def __init__(self, name: str, base_url: str, *, connect_timeout: float, read_timeout: float, maxsize: int):
        parts = urlsplit(base_url)
        self.name, self.base_url = name, base_url.rstrip("/")
        self.host, self.port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self.netloc = parts.netloc
        self.secure = parts.scheme == "https"
        self.timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        pool = _FreshHTTPSPool if self.secure else _FreshHTTPPool
        self.pool = pool(self.host, self.port, maxsize=maxsize, block=False, timeout=self.timeout, retries=False,
                         blocksize=CHUNK)

    def ready(self) -> None:
        response = requests.get(self.base_url + "/readyz", timeout=(2, 3))
        if response.status_code != 200:
            raise ConnectionError(f"{self.name} /readyz answered {response.status_code}")


def _target(environ) -> str:
    """The path and query exactly as the client sent them (percent-encoding kept)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw and raw.startswith("/"):
        return raw
    query = environ.get("QUERY_STRING")
    path = quote(environ.get("PATH_INFO", ""), safe="/:@!$&'()*+,;=-._~")
    return path + (f"?{query}" if query else "")


def _forwarded_headers(upstream: Upstream) -> dict[str, str]:
    headers = {name: value for name, value in request.headers.items() if name.lower() not in NOT_FORWARDED}
    # What the gateway itself believes (its TRUSTED_PROXIES decided how much of the incoming X-Forwarded-* to
    # take), never the client's own claims: the services trust exactly one proxy, the gateway.
    headers["X-Forwarded-For"] = request.remote_addr or ""
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = request.host
    headers["X-Request-ID"] = g.get("request_id", "")
    # The public Host, as an ingress passes it: services compare it with Origin (Socket.IO) and build URLs from it.
    headers["Host"] = request.host
    return headers


class Relayed(Response):
    default_mimetype = None  # never invent a Content-Type the service did not send
    automatically_set_content_length = False


def forward(upstream: Upstream) -> Response:
    headers = _forwarded_headers(upstream)
    body, chunked = None, False
    length = request.content_length
    if length:
        headers["Content-Length"] = str(length)
        spliced = _ClientBody.of(request.environ, length) if length >= SPLICE_MIN and not upstream.secure else None
        body = spliced or _BodyReader(request.stream, length)
        if length <= SMALL_BODY:  # JSON and the like: whole first, so a stalled client holds no service thread
            reader = body
            try:
                body = b"".join(iter(reader.read, b""))
            finally:
                reader.close()
    elif "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        chunked = True
        body = iter(lambda: request.stream.read(CHUNK), b"")
    service = SERVICE_NAMES[upstream.name]
    try:
        answer = _send(upstream, headers, body, chunked)
    except NewConnectionError:
        raise ApiError(503, "service_unavailable", f"The {service} is not reachable; try again shortly.",
                       headers={"Retry-After": "5"}) from None
    except (ConnectTimeoutError, ReadTimeoutError):
        raise ApiError(504, "gateway_timeout", f"The {service} did not answer in time.") from None
    except (ProtocolError, HTTPError, OSError) as error:
        log.warning("proxy to %s failed: %s", upstream.name, error)
        raise ApiError(502, "bad_gateway", f"The {service} broke off the exchange.") from None
    finally:
        if isinstance(body, _BodyReader):
            body.close()
    response_headers = [(name, value) for name, value in answer.headers.items()
                        if name.lower() not in NOT_RETURNED]
    # A service under gunicorn drains at most 64 KiB of a body it did not read (an early 404 or 413), then closes
    # the connection it had just announced as keep-alive: one that carried a larger body is not reused.
    reuse = body is None or isinstance(body, bytes)
    client = _splice_target(request.environ, answer) if not upstream.secure else None
    relay = _relay_spliced(answer, upstream.name, reuse, client) if client else _relay(answer, upstream.name, reuse)
    return Relayed(relay, status=answer.status, headers=response_headers, direct_passthrough=True)


def _send(upstream: Upstream, headers: dict[str, str], body, chunked: bool) -> urllib3.BaseHTTPResponse:
    """The service's answer; a safe request without a body whose connection was closed under it goes once more."""
    def urlopen() -> urllib3.BaseHTTPResponse:
        return upstream.pool.urlopen(
            request.method, upstream.base_path + _target(request.environ), body=body, headers=headers,
            redirect=False, retries=False, preload_content=False, decode_content=False, chunked=chunked,
            assert_same_host=False)

    try:
        return urlopen()
    except ProtocolError as error:
        if request.method not in SAFE_METHODS or body is not None:
            raise
        log.info("%s closed the connection under %s %s (%s); sending it again", upstream.name, request.method,
                 request.path, error)
    return urlopen()


def _relay(answer: urllib3.BaseHTTPResponse, name: str, reuse: bool = True) -> Iterator[bytes]:
    ahead = ReadAhead(lambda: answer.read(CHUNK, decode_content=False), ahead=2)
    complete = False
    try:
        while chunk := ahead.next():
            yield chunk
        complete = True
    except (ProtocolError, ReadTimeoutError, OSError) as error:
        # headers are out: all that is left is to cut the connection so the client sees a short body
        log.warning("%s broke off a response mid-body: %s", name, error)
        raise
    finally:
        ahead.close()
        if not complete or not reuse:
            answer.close()  # unread bytes (or see forward()): this connection must not be reused as it is
        answer.release_conn()


class ReadAhead:
    """Pieces from `read()` (b"" at the end), fetched by a helper thread at most AHEAD pieces in advance.

    Receiving on one side and sending on the other then overlap instead of taking turns; alternating them left
    each side idle half the time (uploads through the gateway: 188 vs 640 MB/s direct, bench/gateway.py).
    Memory stays bounded (`ahead` pieces); an error in `read()` is raised by `next()`, and so is a piece that
    takes longer than `timeout` to arrive (a client that stalls mid-body); `close()` stops the thread."""

    def __init__(self, read, *, ahead: int = 2, timeout: float | None = None):
        self.read, self.timeout = read, timeout
        self.pieces: queue.Queue = queue.Queue(maxsize=ahead)
        self.closed = threading.Event()
        self.finished = False
        threading.Thread(target=self._fill, daemon=True, name="read-ahead").start()

    def _put(self, item) -> bool:
        while not self.closed.is_set():
            try:
                self.pieces.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self) -> None:
        try:
            while not self.closed.is_set():
                data = self.read()
                if not self._put(data) or not data:
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consuming thread
            self._put(error)

    def next(self) -> bytes:
        if self.finished:
            return b""
        try:
            item = self.pieces.get(timeout=self.timeout)
        except queue.Empty:
            self.finished = True
            raise TimeoutError(f"nothing arrived for {self.timeout:.0f} s") from None
        if isinstance(item, BaseException):
            self.finished = True
            raise item
        if not item:
            self.finished = True
        return item

    def close(self) -> None:
        self.closed.set()


# --- zero-copy bodies (Linux) ---------------------------------------------------------------------------------
# Copying every byte through Python (recv into a new bytes object, sendall out of it, plus gunicorn's own buffering
# of request bodies) cost the gateway ~1.1 CPU seconds per GiB downloaded and ~1.9 per GiB uploaded, on the cores
# the client and the service also need (bench/gateway.py). A body of known length of at least SPLICE_MIN instead
# moves socket -> pipe -> socket with splice(2): the kernel passes page references along, the gateway only counts.
# The splice loop and the taking over of gunicorn's client socket live in services.raw_body (the upload service
# reads its PATCH bodies the same way).

SPLICE_MIN = 1024 * 1024


def _splice_target(environ, answer: urllib3.BaseHTTPResponse) -> socket.socket | None:
    """The client's socket, if this answer's body can be spliced into it: gunicorn (sync/gthread) hands the raw
    socket over, the body has a known length of at least SPLICE_MIN, and nothing of it has been read yet."""
    client = plain_socket(environ.get("gunicorn.socket"))
    raw = getattr(answer, "_fp", None)  # http.client's response under urllib3's
    if client is None or raw is None or environ.get("REQUEST_METHOD") == "HEAD" or answer.status in (204, 304):
        return None
    length = getattr(raw, "length", None)
    if (not isinstance(length, int) or length < SPLICE_MIN or getattr(raw, "chunked", True)
            or answer.headers.get("Content-Length") != str(length)
            or answer.connection is None or plain_socket(answer.connection.sock) is None):
        return None
    return client


def _relay_spliced(answer: urllib3.BaseHTTPResponse, name: str, reuse: bool,
                   client: socket.socket) -> Iterator[bytes]:
    """`_relay` for a body spliced straight into the client's socket, after gunicorn has sent the headers."""
    raw = answer._fp
    upstream = answer.connection.sock
    complete = False
    try:
        yield b""  # gunicorn sends the status line and headers on the first write; the body then goes around it
        left = raw.length
        # http.client read the head through a buffer that may already hold the first bytes of the body: one
        # read1() at least that large hands exactly those over (or receives afresh if there were none)
        first = raw.fp.read1(min(left, CHUNK))
        if not first:
            raise ProtocolError(f"the connection closed {left} bytes before the end")
        try:
            client.sendall(first)
        except OSError as error:
            raise _Broken("sink", error) from error
        _splice(upstream, client, left - len(first), read_timeout=upstream.gettimeout(), write_timeout=None)
        raw.length = 0
        raw._close_conn()  # as http.client does at the end of a body: the connection can be reused
        complete = True
    except _Broken as broken:
        if broken.side == "sink":  # the client went away: nothing to report
            raise broken.error from None
        log.warning("%s broke off a response mid-body: %s", name, broken.error)
        raise (broken.error if isinstance(broken.error, OSError) else ProtocolError(str(broken.error))) from None
    except (ProtocolError, ReadTimeoutError, OSError) as error:
        # headers are out: all that is left is to cut the connection so the client sees a short body
        log.warning("%s broke off a response mid-body: %s", name, error)
        raise
    finally:
        if not complete or not reuse:
            answer.close()  # unread bytes (or see forward()): this connection must not be reused as it is
        answer.release_conn()


class _ClientBody:
    """A request body of known length to be spliced from gunicorn's client socket into the upstream connection
    (`_SplicingConnection`): urllib3 iterates it, gets this object itself as the one piece, and sends it."""

    @classmethod
    def of(cls, environ, length: int) -> _ClientBody | None:
        raw = RawBody.of(environ, length)
        return None if raw is None else cls(raw)

    def __init__(self, raw: RawBody):
        self.raw = raw
        self.timeout = current_app.extensions["reelhouse"].config.client_body_timeout

    def __iter__(self):
        yield self

    def __bool__(self) -> bool:
        return True

    def splice_into(self, upstream: socket.socket) -> None:
        held = self.raw.take()
        try:
            if held:
                upstream.sendall(held)
            self.raw.splice_into(upstream, read_timeout=self.timeout, write_timeout=upstream.gettimeout())
        except _Broken as broken:
            if broken.side == "sink":
                raise broken.error from None  # the service's side: urllib3 reports it (or reads an early answer)
            if isinstance(broken.error, TimeoutError):
                raise ApiError(408, "request_timeout",
                               f"The request body stalled for {self.timeout:.0f} s.") from None
            raise ApiError(400, "incomplete_body", "The request body ended before its Content-Length.") from None


class _BodyReader:
    """The request body as a file for urllib3: at most `length` bytes, read ahead from the client."""

    def __init__(self, stream, length: int):
        self.left = length

        def read() -> bytes:
            if self.left <= 0:
                return b""
            data = stream.read(min(BODY_CHUNK, self.left))
            if not data:
                raise EOFError("short body")
            self.left -= len(data)
            return data

        self.timeout = current_app.extensions["reelhouse"].config.client_body_timeout
        self.ahead = ReadAhead(read, timeout=self.timeout)

    def read(self, _size: int = -1) -> bytes:
        try:
            return self.ahead.next()
        except TimeoutError:
            raise ApiError(408, "request_timeout", f"The request body stalled for {self.timeout:.0f} s.") from None
        except Exception:  # noqa: BLE001 - the client went away or sent less than it announced
            raise ApiError(400, "incomplete_body", "The request body ended before its Content-Length.") from None

    def close(self) -> None:
        self.ahead.close()


BODY_CHUNK = 1024 * 1024  # gunicorn hands a known-length body over in recv()s of up to 1 MiB
SMALL_BODY = 64 * 1024  # read whole before the service is contacted: a stalled client never holds its threads


# --- Flask wiring ---------------------------------------------------------------------------------------------

def _tenant_key() -> str | None:
    """The caller's tenant, if the request carries a valid access token (playback-token requests carry none)."""
    if "tenant_key" in g:
        return g.tenant_key
    g.tenant_key = None
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer " and header[7:].strip():
        try:
            principal = current_app.extensions["reelhouse"].verifier.principal(header[7:].strip())
            g.tenant_key = "tenant:" + principal.tenant_id
        except (TokenError, ApiError):
            pass
        except Exception:  # noqa: BLE001 - the JWKS may be unreachable; the service will answer 401/503 itself
            log.debug("tenant key unavailable", exc_info=True)
    return g.tenant_key


def install(app: Flask, upstreams: dict[str, Upstream]) -> Limiter:
    """Registers one forwarding view per route prefix, each with per-address and per-tenant rate limits."""
    config = app.extensions["reelhouse"].config
    limiter = rate_limiter(app, get_remote_address, config, "gateway")
    bp = Blueprint("proxy", __name__)
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    per_address = limiter.shared_limit(config.api_rate_limit_per_address, scope="address")
    per_tenant = limiter.shared_limit(config.api_rate_limit_per_tenant, scope="tenant",
                                      key_func=lambda: _tenant_key() or "", exempt_when=lambda: _tenant_key() is None)
    for prefix, name in ROUTES:
        upstream = upstreams[name]

        def view(path: str = "", _upstream: Upstream = upstream) -> Response:
            return forward(_upstream)

        endpoint = "forward_" + prefix.strip("/").replace("/", "_").replace(".", "_")
        view = per_tenant(per_address(view))
        for rule, suffix in ((prefix, ""), (prefix + "/", "_slash")):
            bp.add_url_rule(rule, endpoint + suffix, view, methods=methods, provide_automatic_options=False,
                            strict_slashes=True)
        bp.add_url_rule(prefix + "/<path:path>", endpoint + "_sub", view, methods=methods,
                        provide_automatic_options=False)
    app.register_blueprint(bp)
    return limiter


# --- websocket upgrades ----------------------------------------------------------------------------------------

class WebSocketTunnel:
    """WSGI middleware: a websocket upgrade under `prefix` becomes a byte tunnel to the upstream.

    Needs the raw client socket, which gunicorn's sync/gthread workers expose as `gunicorn.socket`; raising
    StopIteration afterwards tells gunicorn the connection was consumed (as simple-websocket does)."""

    def __init__(self, app, upstream: Upstream, prefix: str = "/socket.io", idle_timeout: float = 120.0,
                 trusted_proxies: int = 0, max_tunnels: int = 256, max_per_address: int = 32):
        self.app, self.upstream, self.prefix, self.idle_timeout = app, upstream, prefix, idle_timeout
        self.trusted_proxies = trusted_proxies
        # Each tunnel holds one of the gateway's threads: never so many that HTTP requests starve.
        self.max_tunnels, self.max_per_address = max_tunnels, max_per_address
        self.open: dict[str, int] = {}
        self.lock = threading.Lock()

    def _claim(self, address: str) -> bool:
        with self.lock:
            if sum(self.open.values()) >= self.max_tunnels or self.open.get(address, 0) >= self.max_per_address:
                return False
            self.open[address] = self.open.get(address, 0) + 1
            return True

    def _release(self, address: str) -> None:
        with self.lock:
            self.open[address] -= 1
            if not self.open[address]:
                del self.open[address]

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        wants_upgrade = environ.get("HTTP_UPGRADE", "").lower() == "websocket"
        client = environ.get("gunicorn.socket")
        if not wants_upgrade or client is None or not (path == self.prefix or path.startswith(self.prefix + "/")):
            return self.app(environ, start_response)
        trusted = self._as_trusted(environ)
        address = trusted.get("REMOTE_ADDR", "")
        if not self._claim(address):
            return _json_error(start_response, "503 Service Unavailable", "too_many_connections",
                               "Too many live connections through the gateway; try again shortly.")
        try:
            try:
                upstream = socket.create_connection((self.upstream.host, self.upstream.port),
                                                    timeout=self.upstream.timeout.connect_timeout)
            except OSError:
                return _json_error(start_response, "503 Service Unavailable", "service_unavailable",
                                   "The notify service is not reachable; try again shortly.")
            upstream.settimeout(None)
            upstream.sendall(self._request_head(trusted))
            log.info("websocket tunnel %s -> %s", path, self.upstream.name)
            _pipe(client, upstream, self.idle_timeout)
        finally:
            self._release(address)
        raise StopIteration()

    def _as_trusted(self, environ) -> dict:
        """The environ as the app sees it behind ProxyFix (this middleware sits outside it)."""
        if not self.trusted_proxies:
            return environ
        fixed: dict = {}
        n = self.trusted_proxies
        ProxyFix(lambda env, _start: fixed.update(env) or [], x_for=n, x_proto=n, x_host=n)(dict(environ), None)
        return fixed

    def _request_head(self, environ) -> bytes:
        lines = [f"{environ['REQUEST_METHOD']} {self.upstream.base_path}{_target(environ)} HTTP/1.1"]
        for key, value in environ.items():
            if key.startswith("HTTP_") and not key.startswith("HTTP_X_FORWARDED_"):
                lines.append(f"{key[5:].replace('_', '-').title()}: {value}")
        lines.append(f"X-Forwarded-For: {environ.get('REMOTE_ADDR', '')}")  # after the gateway's ProxyFix
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _json_error(start_response, status: str, code: str, message: str) -> list[bytes]:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                            ("Retry-After", "5")])
    return [body]


def _pipe(client: socket.socket, upstream: socket.socket, idle_timeout: float) -> None:
    """Copy bytes both ways until either side closes (or nothing moves for `idle_timeout`)."""
    selector = selectors.DefaultSelector()  # epoll: no FD_SETSIZE limit, unlike select()
    selector.register(client, selectors.EVENT_READ, upstream)
    selector.register(upstream, selectors.EVENT_READ, client)
    try:
        while True:
            events = selector.select(idle_timeout)
            if not events:
                return
            for key, _ in events:
                data = key.fileobj.recv(CHUNK)
                if not data:
                    return
                key.data.sendall(data)
    except OSError:
        return
    finally:
        selector.close()
        try:
            upstream.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        upstream.close()
