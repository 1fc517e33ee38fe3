"""services.raw_body under a real gunicorn: request bodies read or spliced straight from the client's socket, and
gunicorn still reads the next request on a kept-alive connection at the right byte (or closes it when a body
broke off)."""

from __future__ import annotations

import hashlib
import os
import socket
import threading

import pytest

from services.raw_body import SpliceBroken, splice
from services.testing import gunicorn_app

pytestmark = pytest.mark.skipif(not hasattr(os, "splice"), reason="splice(2) is Linux-only")

# The app under gunicorn: reads the body with RawBody (readinto, or splice into a file with `X-Splice: 1`) and
# answers how it read it and the body's sha256; 408 when the body stalled, 400 when it ended early.
APP = '''
import hashlib, os, tempfile
from services.raw_body import RawBody, SpliceBroken

def app(environ, start_response):
    raw = RawBody.of(environ)
    how, status, digest = "stream", "200 OK", hashlib.sha256()
    timeout = float(environ.get("HTTP_X_TIMEOUT", "5"))
    try:
        if raw is None:
            digest.update(environ["wsgi.input"].read())
        elif environ.get("HTTP_X_SPLICE"):
            how = "splice"
            with tempfile.TemporaryFile() as f:
                f.write(raw.take())
                raw.splice_into(f.fileno(), read_timeout=timeout)
                f.seek(0)
                digest.update(f.read())
        else:
            how, buffer = "raw", bytearray(1 << 20)
            while n := raw.readinto(buffer, timeout):
                digest.update(buffer[:n])
    except (TimeoutError, SpliceBroken) as error:
        timed_out = isinstance(error, TimeoutError) or isinstance(getattr(error, "error", None), TimeoutError)
        status = "408 Request Timeout" if timed_out else "400 Bad Request"
    except EOFError:
        status = "400 Bad Request"
    body = digest.hexdigest().encode()
    start_response(status, [("Content-Length", str(len(body))), ("X-How", how)])
    return [body]
'''


@pytest.fixture(scope="module")
def server():
    with gunicorn_app(APP) as port:
        yield port


def _request(body: bytes, *extra: str, length: int | None = None) -> bytes:
    head = ["POST /x HTTP/1.1", "Host: t", f"Content-Length: {len(body) if length is None else length}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _answers(sock: socket.socket, count: int, timeout: float = 15) -> list[tuple[int, dict, bytes]]:
    """Reads `count` HTTP answers (Content-Length bodies) from the socket."""
    sock.settimeout(timeout)
    data, found = b"", []
    while len(found) < count:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            lines = data[:end].decode().split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            size = int(headers.get("content-length", 0))
            if len(data) >= end + 4 + size:
                found.append((int(lines[0].split()[1]), headers, data[end + 4: end + 4 + size]))
                data = data[end + 4 + size:]
                continue
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    return found


def test_a_large_body_is_read_from_the_socket_whole(server):
    data = os.urandom(5 * 1024 * 1024 + 7)
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.sendall(_request(data))
        [(status, headers, body)] = _answers(sock, 1)
    assert (status, headers["x-how"]) == (200, "raw")
    assert body.decode() == hashlib.sha256(data).hexdigest()


def test_pipelined_requests_after_a_raw_body_are_read_at_the_right_byte(server):
    """The first body, the whole second request and the start of a third arrive in one send: the bytes gunicorn
    buffered past the first body go back to it."""
    bodies = [os.urandom(300_000), b"second", os.urandom(2 * 1024 * 1024)]
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.sendall(b"".join(_request(b) for b in bodies))
        answers = _answers(sock, 3)
    assert [(status, h["x-how"], body.decode()) for status, h, body in answers] == [
        (200, "raw", hashlib.sha256(b).hexdigest()) for b in bodies]


def test_a_body_spliced_into_a_file_then_a_kept_alive_request(server):
    data = os.urandom(3 * 1024 * 1024 + 1)
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.sendall(_request(data, "X-Splice: 1"))
        sock.sendall(_request(b"next"))
        answers = _answers(sock, 2)
    assert [(s, h["x-how"], b.decode()) for s, h, b in answers] == [
        (200, "splice", hashlib.sha256(data).hexdigest()), (200, "raw", hashlib.sha256(b"next").hexdigest())]


def test_a_chunked_body_falls_back_to_the_wsgi_stream(server):
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        [(status, headers, body)] = _answers(sock, 1)
    assert (status, headers["x-how"], body.decode()) == (200, "stream", hashlib.sha256(b"hello").hexdigest())


@pytest.mark.parametrize("splice_it", [False, True], ids=["readinto", "splice"])
def test_a_stalled_body_times_out_and_the_connection_is_not_reused(server, splice_it):
    """Half a body, then silence: the app sees a timeout; what follows on that connection is never parsed as a
    request (gunicorn closes it, since it cannot know where the body would have ended)."""
    extra = ["X-Timeout: 0.5", *(["X-Splice: 1"] if splice_it else [])]
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.sendall(_request(b"x" * 100_000, *extra, length=200_000))
        [(status, _, _)] = _answers(sock, 1)
        assert status == 408
        try:
            sock.sendall(b"x" * 100_000 + _request(b"smuggled"))
            rest = _answers(sock, 1, timeout=5)
        except OSError:  # reset by the closed connection
            rest = []
    assert rest == []


@pytest.mark.parametrize("splice_it", [False, True], ids=["readinto", "splice"])
def test_a_body_cut_short_by_the_client_is_an_early_end(server, splice_it):
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.sendall(_request(b"x" * 100_000, *(["X-Splice: 1"] if splice_it else []), length=200_000))
        sock.shutdown(socket.SHUT_WR)  # the client stops sending but still reads the answer
        [(status, _, _)] = _answers(sock, 1)
    assert status == 400


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        near = socket.create_connection(listener.getsockname())
        far, _ = listener.accept()
    return near, far


def test_splice_moves_exactly_its_count_and_names_the_side_that_failed():
    (client, source), (sink, reader) = _tcp_pair(), _tcp_pair()
    try:
        source.settimeout(7.0)
        data = os.urandom(3 * 1024 * 1024 + 5)
        threading.Thread(target=client.sendall, args=(data,), daemon=True).start()
        received = bytearray()

        def drain():
            while len(received) < len(data) - 5 and (chunk := reader.recv(1 << 20)):
                received.extend(chunk)

        drainer = threading.Thread(target=drain)
        drainer.start()
        splice(source, sink, len(data) - 5, read_timeout=5, write_timeout=5)
        drainer.join(10)
        assert bytes(received) == data[:-5]
        assert source.gettimeout() == 7.0 and sink.gettimeout() is None  # both restored
        assert source.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
        assert source.recv(100) == data[-5:]  # what was not asked for stays in the source

        with pytest.raises(SpliceBroken) as stalled:  # nothing comes
            splice(source, sink, 10, read_timeout=0.3, write_timeout=5)
        assert stalled.value.side == "source" and isinstance(stalled.value.error, TimeoutError)
        client.sendall(b"x" * 100)
        client.close()
        with pytest.raises(SpliceBroken) as short:  # the source ends early
            splice(source, sink, 1000, read_timeout=5, write_timeout=5)
        assert short.value.side == "source" and isinstance(short.value.error, EOFError)
        assert short.value.moved == 100
        assert reader.recv(1000) == b"x" * 100
    finally:
        for sock in (client, source, sink, reader):
            sock.close()


def test_splice_into_a_file_descriptor(tmp_path):
    client, source = _tcp_pair()
    try:
        data = os.urandom(2 * 1024 * 1024 + 3)
        threading.Thread(target=client.sendall, args=(data,), daemon=True).start()
        with open(tmp_path / "out", "wb", buffering=0) as f:  # unbuffered: the splice writes at the fd's offset
            f.write(b"head")
            splice(source, f.fileno(), len(data), read_timeout=5, write_timeout=5)
        assert (tmp_path / "out").read_bytes() == b"head" + data
    finally:
        client.close()
        source.close()
