"""nginx (Debian package) as a benchmark baseline: a file server for range.py, a reverse proxy for gateway.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CONF = """{user}daemon off; worker_processes 2; pid {tmp}/nginx.pid; error_log {tmp}/error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; tcp_nopush on; client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  server {{ listen 127.0.0.1:{port}; {server} }} }}
"""


def file_server(root: Path) -> str:
    """The server block of a static file server (sendfile) rooted at `root`."""
    return f"root {root}; location / {{ }}"


def reverse_proxy(routes: dict[str, str]) -> str:
    """The server block of a streaming reverse proxy: each path prefix to its upstream URL, bodies passed on as
    they come (no request buffering, no temp files), keep-alive to the upstreams, and buffers of 256 KiB-1 MiB
    (nginx's 4-8 KiB defaults cost it several times the CPU per byte)."""
    blocks = [f"location {prefix} {{ proxy_pass {upstream}; proxy_http_version 1.1; "
              'proxy_set_header Connection ""; proxy_set_header Host $host; proxy_request_buffering off; '
              "proxy_max_temp_file_size 0; client_max_body_size 0; proxy_read_timeout 600s; "
              "proxy_buffer_size 256k; proxy_buffers 8 256k; proxy_busy_buffers_size 512k; "
              "client_body_buffer_size 1m; }"
              for prefix, upstream in routes.items()]
    return " ".join(blocks)


def available() -> bool:
    return bool(shutil.which("nginx")) or Path("/usr/sbin/nginx").exists()


@dataclass
class Nginx:
    url: str
    pid: int  # the master's: its workers are its children


@contextmanager
def nginx(work: Path, port: int, server: str) -> Iterator[Nginx]:
    """nginx with `server` as its one server block on 127.0.0.1:`port`."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "nginx.conf").write_text(CONF.format(tmp=work, port=port, server=server,
                                                 user="user root; " if os.geteuid() == 0 else ""))
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    process = subprocess.Popen([binary, "-c", str(work / "nginx.conf"), "-p", str(work)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (work / "error.log").read_text() if (work / "error.log").exists() else ""
                    raise SystemExit(f"nginx did not start: {log[-2000:]}") from None
                time.sleep(0.05)
        yield Nginx(f"http://127.0.0.1:{port}", process.pid)
    finally:
        process.terminate()
        process.wait(10)
