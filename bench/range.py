"""Range-serving benchmark: the same 1 GiB file from nginx and from Reelhouse (/api/stream/<id>/original), served
by `reelhouse up` and by the stream service under gunicorn (a `make cluster` topology without workers).

(a) whole-file download throughput, (b) random 64 KiB ranges with 32 connections for --seconds, requests per second
(wrk with a Lua script). Ours and nginx interleaved; medians of --runs. Ratio = ours ÷ nginx (targets, issue 10:
(a) ≥ 0.9, (b) ≥ 0.25).
Run: .venv/bin/python bench/range.py [--size-mib 1024] [--runs 5] [--seconds 4]   (needs nginx and wrk)
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
from reelhouse_gateway.cluster import Cluster  # noqa: E402
from services.testing import STRONG_PASSWORD, free_port  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nginx import available, file_server, nginx  # noqa: E402
from report import result  # noqa: E402

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


def wait_up(url: str) -> None:
    for _ in range(300):
        try:
            if requests.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except requests.RequestException:  # not up yet, or too busy to answer within the timeout
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not become ready")


def publish_original(url: str, data_dir: Path, objects: Path, source: Path) -> str:
    """Registers an account at `url`, records a video whose original is `source` (hard-linked into the store) and
    returns the original's playback URL."""
    session = requests.post(url + "/api/auth/register", timeout=30, json={
        "tenant_name": "Bench", "email": "b@bench.test", "password": STRONG_PASSWORD}).json()
    from services.adapters.sqlite_metadata import SqliteMetadataStore

    store = SqliteMetadataStore(data_dir / "reelhouse.db")
    video = store.videos.add({
        "tenant_id": session["tenant"]["id"], "owner_id": session["user"]["id"], "title": "bench",
        "status": "uploaded", "visibility": "tenant", "size": source.stat().st_size,
        "source": {"video_codec": "h264", "audio_codec": "aac", "container": "mov,mp4"}})
    store.close()
    original = objects / "tenants" / session["tenant"]["id"] / "videos" / video["id"] / "original"
    original.parent.mkdir(parents=True)
    os.link(source, original)
    return url + requests.get(f"{url}/api/videos/{video['id']}", timeout=30, headers={
        "Authorization": f"Bearer {session['access_token']}"}).json()["playback"]["original_url"]


def compare(label: str, ours: str, theirs: str, size: int, args, work: Path) -> None:
    """Whole downloads and wrk range runs, ours and nginx interleaved, medians of --runs."""
    times: dict[str, list[float]] = {"ours": [], "nginx": []}
    rates: dict[str, list[float]] = {"ours": [], "nginx": []}
    urls = {"ours": ours, "nginx": theirs}
    for url in urls.values():  # untimed: the first download of a fresh process and connection is slower
        download(url)
    for run in range(args.runs):
        # A sample: the mean of --repeat whole downloads (one takes ~0.3 s), ours and nginx taking turns download
        # by download. Back-to-back runs favour one side: 8 samples of 3 back-to-back downloads measured reelhouse
        # 2.8 GB/s and nginx 3.5; taking turns, 3.8 and 3.2 (2 cores shared by client and server).
        sample = {"ours": 0.0, "nginx": 0.0}
        for turn in range(args.repeat):
            for key in (("ours", "nginx") if (run + turn) % 2 else ("nginx", "ours")):
                sample[key] += download(urls[key]) / args.repeat
        for key, seconds in sample.items():
            times[key].append(seconds)
    for _ in range(args.runs):
        rates["nginx"].append(wrk(theirs, size, args.seconds, work))
        rates["ours"].append(wrk(ours, size, args.seconds, work))
    mb = size / 1e6
    a_ours, a_nginx = mb / statistics.median(times["ours"]), mb / statistics.median(times["nginx"])
    b_ours, b_nginx = statistics.median(rates["ours"]), statistics.median(rates["nginx"])
    print(f"{label}: (a) whole {args.size_mib} MiB download: reelhouse {a_ours:7.0f} MB/s | nginx {a_nginx:7.0f} "
          f"MB/s | ratio {a_ours / a_nginx:.2f} (target >= 0.9)")
    print(f"{label}: (b) random 64 KiB ranges, 32 connections: reelhouse {b_ours:7.0f} req/s | nginx {b_nginx:7.0f} "
          f"req/s | ratio {b_ours / b_nginx:.2f} (target >= 0.25)")
    result("range", f"(a) whole-file download ÷ nginx, {label}", a_ours / a_nginx, ">= 0.9",
           ours=f"{a_ours:.0f} MB/s", baseline=f"{a_nginx:.0f} MB/s", runs=args.runs)
    result("range", f"(b) random 64 KiB ranges ÷ nginx, {label}", b_ours / b_nginx, ">= 0.25",
           ours=f"{b_ours:.0f} req/s", baseline=f"{b_nginx:.0f} req/s", runs=args.runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4, help="length of each wrk run")
    parser.add_argument("--repeat", type=int, default=3, help="whole downloads per (a) sample")
    args = parser.parse_args()
    if not available() or not shutil.which("wrk"):
        raise SystemExit("needs nginx and wrk (apt-get install nginx-light wrk)")
    with tempfile.TemporaryDirectory(prefix="bench-range-", dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        source = work / "source" / "original"
        source.parent.mkdir()
        block = os.urandom(1024 * 1024)
        with source.open("wb") as f:
            for _ in range(args.size_mib):
                f.write(block)
        size = source.stat().st_size
        with nginx(work / "nginx", free_port(), file_server(source.parent)) as server:
            theirs = f"{server.url}/original"
            data_dir, port = work / "up", free_port()
            up = subprocess.Popen([sys.executable, "-m", "reelhouse_gateway", "up"],
                                  env={**os.environ, "REELHOUSE_DATA_DIR": str(data_dir), "REELHOUSE_PORT": str(port),
                                       "LOG_LEVEL": "WARNING", "WORKER_CONCURRENCY": "0"},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                wait_up(f"http://127.0.0.1:{port}")
                ours = publish_original(f"http://127.0.0.1:{port}", data_dir, data_dir / "objects", source)
                compare("reelhouse up", ours, theirs, size, args, work)
            finally:
                os.killpg(up.pid, 9)
                up.wait(10)

            cluster = Cluster(work / "cluster", free_port(), workers=0, notify_replicas=1, store="local")
            cluster.start()
            try:
                stream = next(f"http://127.0.0.1:{s.port}" for s in cluster.services if s.name == "stream")
                gateway = f"http://127.0.0.1:{cluster.port}"
                path = publish_original(gateway, work / "cluster" / "data", work / "cluster" / "objects", source)
                compare("stream service (gunicorn)", stream + path.removeprefix(gateway), theirs, size, args, work)
            finally:
                cluster.stop()


if __name__ == "__main__":
    main()
