"""Gateway overhead: a ranged download and a tus upload through `reelhouse gateway` vs straight to the service.

A `make cluster`-style topology (reelhouse_gateway.cluster) with the local store and no workers (nothing competes
for the CPU): the same 256 MiB original fetched with `Range: bytes=0-` from the gateway and from the stream
service, and the same 256 MiB uploaded over tus in 64 MiB PATCHes through the gateway and to the upload service.
The same two transfers also go through nginx as a reverse proxy to the same services (a reference: what one
proxy hop costs with a mature, C proxy). Runs are interleaved; medians of --runs. Ratio = through the gateway ÷
direct (target ≥ 0.8, issue 10).
CPU seconds per GiB (user + system from /proc over all runs, 10 ms ticks) are printed too for the gateway, the
service and this client: far less sensitive than wall time to other load on the machine, and they show where the
cores go; when the machine is CPU-bound the ratio cannot exceed direct Σ ÷ gateway Σ.
Run: .venv/bin/python bench/gateway.py [--size-mib 256] [--runs 5]
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reelhouse_gateway.cluster import Cluster  # noqa: E402
from services.testing import STRONG_PASSWORD, free_port, rss_kib  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nginx import nginx, reverse_proxy  # noqa: E402
from report import result  # noqa: E402

PATCH = 64 * 1024 * 1024


class Blocks:
    """`count` MiB of one random block, as a file-like body with a length (streamed, never held whole)."""

    def __init__(self, block: bytes, size: int):
        self.block, self.left = block, size

    def __len__(self):
        return self.left

    def read(self, size: int = -1) -> bytes:
        n = min(self.left, len(self.block) if size is None or size < 0 else min(size, len(self.block)))
        self.left -= n
        return self.block[:n]


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU of process `pid` and its descendants (a gunicorn master and its worker)."""
    user = system = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        user, system = int(fields[11]) / TICK, int(fields[12]) / TICK
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                more = cpu_seconds(int(child))
                user, system = user + more[0], system + more[1]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return user, system


def own_cpu() -> tuple[float, float]:
    usage = os.times()
    return usage.user, usage.system


def ceiling(sums: dict[str, float], direct: str, key: str) -> float:
    """The ratio a CPU-bound machine allows: direct CPU ÷ this path's CPU (NaN when too small to tell)."""
    return sums[direct] / sums[key] if sums[key] else float("nan")


def download(url: str) -> float:
    start = time.perf_counter()
    with requests.get(url, headers={"Range": "bytes=0-"}, stream=True, timeout=600) as response:
        assert response.status_code == 206, response.status_code
        for _ in response.iter_content(1024 * 1024):
            pass
    return time.perf_counter() - start


def upload(base: str, token: str, size: int, block: bytes) -> float:
    auth = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
    start = time.perf_counter()
    created = requests.post(base + "/api/uploads", timeout=60, headers={
        **auth, "Upload-Length": str(size), "Upload-Metadata": f"title {base64.b64encode(b'bench').decode()}"})
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    for offset in range(0, size, PATCH):
        length = min(PATCH, size - offset)
        response = requests.patch(base + location, data=Blocks(block, length), timeout=600, headers={
            **auth, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
        assert response.status_code == 204, response.text
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    size = args.size_mib * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="bench-gateway-", dir=os.environ.get("BENCH_DIR")) as tmp:
        cluster = Cluster(Path(tmp) / "cluster", free_port(), workers=0, notify_replicas=1, store="local")
        cluster.start()
        stack = ExitStack()
        try:
            ports = {s.name: s.port for s in cluster.services}
            pids = {s.name: s.process.pid for s in cluster.services}
            gateway, stream, uploads = (f"http://127.0.0.1:{ports[name]}" for name in ("gateway", "stream", "upload"))
            session = requests.post(gateway + "/api/auth/register", timeout=30, json={
                "tenant_name": "Bench", "email": "b@bench.test", "password": STRONG_PASSWORD}).json()
            token, tenant = session["access_token"], session["tenant"]["id"]

            from services.adapters.sqlite_metadata import SqliteMetadataStore

            data_dir = Path(tmp) / "cluster" / "data"
            store = SqliteMetadataStore(data_dir / "reelhouse.db")
            video = store.videos.add({
                "tenant_id": tenant, "owner_id": session["user"]["id"], "title": "bench", "status": "uploaded",
                "visibility": "tenant", "size": size,
                "source": {"video_codec": "h264", "audio_codec": "aac", "container": "mov,mp4"}})
            store.close()
            original = Path(tmp) / "cluster" / "objects" / "tenants" / tenant / "videos" / video["id"] / "original"
            original.parent.mkdir(parents=True)
            block = os.urandom(1024 * 1024)
            with original.open("wb") as f:
                for _ in range(args.size_mib):
                    f.write(block)
            path = requests.get(f"{gateway}/api/videos/{video['id']}", timeout=30, headers={
                "Authorization": f"Bearer {token}"}).json()["playback"]["original_url"]

            # The reference proxy: the same hop through nginx, to tell the cost of any proxy from ours.
            proxy = stack.enter_context(nginx(Path(tmp) / "nginx", free_port(), reverse_proxy(
                {"/api/stream/": stream, "/api/uploads": uploads})))
            pids["nginx"], proxied = proxy.pid, proxy.url
            rss_before = rss_kib(pids["gateway"])
            times: dict[str, list[float]] = {key: [] for key in (
                "down_gw", "down_direct", "down_nginx", "up_gw", "up_direct", "up_nginx")}
            cpu: dict[str, dict[str, list[tuple[float, float]]]] = {
                key: {"gateway": [], "service": [], "client": []} for key in times}

            def measured(key: str, service: str, run) -> None:
                watched = {"gateway": pids["nginx" if key.endswith("nginx") else "gateway"], "service": pids[service]}
                before = {name: cpu_seconds(pid) for name, pid in watched.items()} | {"client": own_cpu()}
                times[key].append(run())
                after = {name: cpu_seconds(pid) for name, pid in watched.items()} | {"client": own_cpu()}
                for name in before:
                    cpu[key][name].append(tuple((a - b) * 1024 / args.size_mib
                                                for a, b in zip(after[name], before[name], strict=True)))

            for _ in range(args.runs):  # interleaved: every path sees the same machine
                measured("down_gw", "stream", lambda: download(gateway + path))
                measured("down_direct", "stream", lambda: download(stream + path))
                measured("down_nginx", "stream", lambda: download(proxied + path))
                measured("up_gw", "upload", lambda: upload(gateway, token, size, block))
                measured("up_direct", "upload", lambda: upload(uploads, token, size, block))
                measured("up_nginx", "upload", lambda: upload(proxied, token, size, block))
            rss_after = rss_kib(pids["gateway"])
        finally:
            stack.close()
            cluster.stop()
    mb = size / 1e6
    rate = {k: mb / statistics.median(v) for k, v in times.items()}
    print(f"\n{args.size_mib} MiB, median of {args.runs} interleaved runs, {os.cpu_count()} cores; "
          f"gateway RSS {rss_before / 1024:.0f} → {rss_after / 1024:.0f} MiB\n")
    kinds = (("ranged download", "(`Range: bytes=0-`)", "down_gw", "down_direct", "down_nginx"),
             ("tus upload", "(64 MiB PATCHes)", "up_gw", "up_direct", "up_nginx"))
    print("| | through the gateway | straight to the service | ratio | target | through nginx (reference) | "
          "nginx ratio |")
    print("|---|---|---|---|---|---|---|")
    for label, detail, gw, direct, proxied in kinds:
        print(f"| {label} {detail} | {rate[gw]:.0f} MB/s | {rate[direct]:.0f} MB/s | {rate[gw] / rate[direct]:.2f} "
              f"| ≥ 0.8 | {rate[proxied]:.0f} MB/s | {rate[proxied] / rate[direct]:.2f} |")
    print("\nCPU seconds per GiB (user + system over all runs ÷ bytes moved; each process with its children; "
          "the proxy column is nginx on its rows)\n")
    print("| | proxy | service | client | Σ | CPU-bound ratio: direct Σ ÷ this Σ |")
    print("|---|---|---|---|---|---|")
    for label, _, gw, direct, proxied in kinds:
        sums = {}
        for key, how in ((direct, "direct"), (gw, "through the gateway"), (proxied, "through nginx")):
            each = {name: tuple(sum(run[i] for run in values) / args.runs for i in (0, 1))
                    for name, values in cpu[key].items()}
            if key == direct:
                each["gateway"] = (0.0, 0.0)  # no proxy on this path (the column held the idle gateway)
            sums[key] = sum(u + s for u, s in each.values())
            cells = " | ".join(f"{u + s:.2f} ({u:.2f} user)" for u, s in each.values())
            bound = f"{ceiling(sums, direct, key):.2f}" if key != direct else ""
            print(f"| {label}, {how} | {cells} | {sums[key]:.2f} | {bound} |")
        result("gateway", f"{label}: through the gateway ÷ direct", rate[gw] / rate[direct], ">= 0.8",
               ours=f"{rate[gw]:.0f} MB/s", baseline=f"{rate[direct]:.0f} MB/s", runs=args.runs,
               note=f"CPU-bound ceiling {ceiling(sums, direct, gw):.2f}")
        result("gateway", f"{label}: through nginx ÷ direct (reference proxy)", rate[proxied] / rate[direct], None,
               ours=f"{rate[proxied]:.0f} MB/s", baseline=f"{rate[direct]:.0f} MB/s", runs=args.runs,
               note=f"CPU-bound ceiling {ceiling(sums, direct, proxied):.2f}")

if __name__ == "__main__":
    main()
