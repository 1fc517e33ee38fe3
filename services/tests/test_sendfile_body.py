"""services.sendfile_body under a real gunicorn: file ranges sent by non-blocking sendfile(2) into the client's
socket, a kept-alive connection still answered at the right byte afterwards, and a client that takes nothing (or a
file that ends early) cut off with a short body instead of a hung thread or a corrupt connection."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path

import pytest

from services.sendfile_body import STEP, SendfileBody
from services.testing import gunicorn_app

SIZE = 32 * STEP + 12345  # several steps and a partial one; more than loopback's socket buffers hold

# The app under gunicorn: GET /?first=&count=[&claim=][&timeout=] sends `count` bytes of the file from `first`
# (claiming `claim` bytes in Content-Length, to fake a file that ends early); X-How says which path was taken.
APP = '''
import os
from urllib.parse import parse_qs
from services.sendfile_body import SendfileBody

PATH = os.environ["SENDFILE_TEST_FILE"]
CLOSED = PATH + ".closed"

def app(environ, start_response):
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    first, count = int(query.get("first", 0)), int(query.get("count", os.path.getsize(PATH)))
    claim = int(query.get("claim", count))
    fd = os.open(PATH, os.O_RDONLY)

    def closed():
        os.close(fd)
        with open(CLOSED, "a") as f:
            f.write("x")

    body = SendfileBody.of(environ, fd, first, claim, on_close=closed, timeout=float(query.get("timeout", 30)))
    how = "sendfile" if body is not None else "fallback"
    if body is None:
        os.lseek(fd, first, 0)
        body = [os.read(fd, count)]
        closed()
    start_response("200 OK", [("Content-Length", str(claim)), ("X-How", how)])
    return body
'''


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data = os.urandom(SIZE)
    path = tmp_path_factory.mktemp("sendfile") / "file.bin"
    path.write_bytes(data)
    with gunicorn_app(APP, env={"SENDFILE_TEST_FILE": str(path)}) as port:
        yield port, data, Path(str(path) + ".closed")


def _get(sock: socket.socket, query: str) -> None:
    sock.sendall(f"GET /?{query} HTTP/1.1\r\nHost: t\r\n\r\n".encode())


def _read_answer(sock: socket.socket) -> tuple[dict[str, str], bytes, bool]:
    """Headers, the body bytes that came (up to Content-Length), and whether the connection ended before all came."""
    stream = sock.makefile("rb")
    status = stream.readline()
    assert status.startswith(b"HTTP/1.1 200"), status
    headers = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    body = bytearray()
    while len(body) < length:
        piece = stream.read1(length - len(body))
        if not piece:
            return headers, bytes(body), True
        body += piece
    return headers, bytes(body), False


def test_whole_file_and_ranges_on_one_kept_alive_connection(served):
    port, data, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for first, count in ((0, SIZE), (STEP - 7, STEP + 100), (SIZE - 1, 1), (5, 65536)):
            _get(sock, f"first={first}&count={count}")
            headers, body, cut = _read_answer(sock)
            assert headers["x-how"] == "sendfile"
            assert not cut
            assert hashlib.sha256(body).digest() == hashlib.sha256(data[first:first + count]).digest()


def test_a_client_that_takes_nothing_is_cut_off_and_the_file_closed(served):
    port, data, closed = served
    before = closed.read_text() if closed.exists() else ""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # before connecting: a small window
        sock.settimeout(30)
        sock.connect(("127.0.0.1", port))
        _get(sock, "timeout=1")
        time.sleep(3)  # take nothing for longer than the server's send timeout
        headers, body, cut = _read_answer(sock)
        assert cut and 0 < len(body) < SIZE
        assert body == data[:len(body)]  # what came is right, only short
    deadline = time.monotonic() + 10
    while (closed.read_text() if closed.exists() else "") == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(closed.read_text()) == len(before) + 1
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:  # the server is still serving
        _get(sock, "first=0&count=10")
        assert _read_answer(sock)[1] == data[:10]


def test_a_file_that_ends_early_closes_the_connection_after_a_short_body(served):
    port, data, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        _get(sock, f"first={SIZE - 100}&count=100&claim=500")  # 500 claimed, 100 there
        headers, body, cut = _read_answer(sock)
        assert cut and body == data[SIZE - 100:]


def test_head_and_other_servers_get_none():
    a, b = socket.socketpair()
    try:
        assert SendfileBody.of({"REQUEST_METHOD": "GET"}, 0, 0, 1) is None  # no gunicorn socket: another server
        assert SendfileBody.of({"REQUEST_METHOD": "HEAD", "gunicorn.socket": a}, 0, 0, 1) is None
        assert isinstance(SendfileBody.of({"REQUEST_METHOD": "GET", "gunicorn.socket": a}, 0, 0, 1), SendfileBody)
    finally:
        a.close()
        b.close()
