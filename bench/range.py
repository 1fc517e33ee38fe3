"""Range-serving benchmark: the same 1 GiB file from nginx and from `reelhouse up` (/api/stream/<id>/original).

(a) whole-file download throughput, median of --runs; (b) random 64 KiB ranges with 32 connections for
--seconds, requests per second (wrk with a Lua script). Ratio = ours ÷ nginx.
Run: .venv/bin/python bench/range.py [--size-mib 1024] [--runs 5] [--seconds 10]   (needs nginx and wrk)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services.testing import STRONG_PASSWORD, free_port  # noqa: E402

NGINX_CONF = """{user}daemon off; worker_processes 2; pid {tmp}/nginx.pid; error_log {tmp}/error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; tcp_nopush on; client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  server {{ listen 127.0.0.1:{port}; root {root}; location / {{ }} }} }}
"""

LUA = """math.randomseed(os.time())
request = function()
  local start = math.random(0, {size} - 65536)
  return wrk.format("GET", "{path}", {{["Range"] = "bytes=" .. start .. "-" .. (start + 65535)}})
end
"""


def download(url: str) -> float:
    start = time.perf_counter()
    with requests.get(url, stream=True, timeout=300) as response:
        response.raise_for_status()
        for _ in response.iter_content(1024 * 1024):
            pass
    return time.perf_counter() - start


def wrk(url: str, size: int, seconds: int, work: Path) -> float:
    base, _, query = url.partition("/api/") if "/api/" in url else (url.rsplit("/", 1)[0], "", "")
    path = "/api/" + query if query else "/" + url.rsplit("/", 1)[1]
    script = work / f"ranges-{free_port()}.lua"
    script.write_text(LUA.format(size=size, path=path))
    out = subprocess.run(["wrk", "-t", "2", "-c", "32", "-d", f"{seconds}s", "-s", str(script), base],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if not shutil.which("nginx") or not shutil.which("wrk"):
        raise SystemExit("needs nginx and wrk (apt-get install nginx wrk)")
    with tempfile.TemporaryDirectory(prefix="bench-range-", dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        up = subprocess.Popen([sys.executable, "-m", "reelhouse_gateway", "up"],
                              env={**os.environ, "REELHOUSE_DATA_DIR": str(data_dir), "REELHOUSE_PORT": str(port),
                                   "LOG_LEVEL": "WARNING", "WORKER_CONCURRENCY": "0"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        nginx = None
        try:
            for _ in range(300):
                try:
                    if requests.get(url + "/readyz", timeout=1).status_code == 200:
                        break
                except requests.RequestException:  # not up yet, or too busy to answer within the timeout
                    time.sleep(0.1)
            session = requests.post(url + "/api/auth/register", timeout=30, json={
                "tenant_name": "Bench", "email": "b@bench.test", "password": STRONG_PASSWORD}).json()
            from services.adapters.sqlite_metadata import SqliteMetadataStore

            store = SqliteMetadataStore(data_dir / "reelhouse.db")
            video = store.videos.add({
                "tenant_id": session["tenant"]["id"], "owner_id": session["user"]["id"], "title": "bench",
                "status": "uploaded", "visibility": "tenant", "size": args.size_mib * 1024 * 1024,
                "source": {"video_codec": "h264", "audio_codec": "aac", "container": "mov,mp4"}})
            original = data_dir / "objects" / "tenants" / session["tenant"]["id"] / "videos" / video["id"] / "original"
            original.parent.mkdir(parents=True)
            block = os.urandom(1024 * 1024)
            with original.open("wb") as f:
                for _ in range(args.size_mib):
                    f.write(block)
            size = original.stat().st_size
            ours = url + requests.get(f"{url}/api/videos/{video['id']}", timeout=30, headers={
                "Authorization": f"Bearer {session['access_token']}"}).json()["playback"]["original_url"]

            nginx_port = free_port()
            (work / "nginx.conf").write_text(NGINX_CONF.format(
                tmp=work, port=nginx_port, root=original.parent,
                user="user root; " if os.geteuid() == 0 else ""))
            nginx = subprocess.Popen(["nginx", "-c", str(work / "nginx.conf"), "-p", str(work)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            theirs = f"http://127.0.0.1:{nginx_port}/original"
            for _ in range(100):
                try:
                    requests.head(theirs, timeout=1)
                    break
                except requests.RequestException:  # not up yet, or too busy to answer within the timeout
                    time.sleep(0.05)

            mb = size / 1e6
            ours_times, theirs_times = [], []
            for _ in range(args.runs):  # interleaved, so both see the same machine
                theirs_times.append(download(theirs))
                ours_times.append(download(ours))
            a_ours, a_theirs = mb / statistics.median(ours_times), mb / statistics.median(theirs_times)
            print(f"(a) whole {args.size_mib} MiB download: reelhouse {a_ours:7.0f} MB/s | nginx {a_theirs:7.0f} MB/s"
                  f" | ratio {a_ours / a_theirs:.2f} (target >= 0.9)")
            b_theirs = wrk(theirs, size, args.seconds, work)
            b_ours = wrk(ours, size, args.seconds, work)
            print(f"(b) random 64 KiB ranges, 32 connections: reelhouse {b_ours:7.0f} req/s | nginx {b_theirs:7.0f} "
                  f"req/s | ratio {b_ours / b_theirs:.2f} (target >= 0.25)")
        finally:
            if nginx is not None:
                nginx.terminate()
                nginx.wait(10)
            os.killpg(up.pid, 9)
            up.wait(10)


if __name__ == "__main__":
    main()
