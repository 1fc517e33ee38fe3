"""Realtime fan-out benchmark: N Socket.IO clients on one notify process, threading vs gevent, same run.

Each mode runs the notify service as a distributed replica would (`gunicorn -w 1`, gthread with one thread per
socket for threading mode, `-k gevent` for gevent mode) consuming the RabbitMQ event bus. A `reelhouse up` beside
it (same SQLite file, same bus) provides the account and the video. The clients (python-socketio's asyncio client,
websocket transport, one process) connect in batches; then bursts of events are published to the bus and every
receipt is timed against the event's publish time. Reports connect time, HTTP latency with every socket open,
delivery latency p50/p99/max, deliveries received, and the notify process's RSS growth per connection.
Run: .venv/bin/python bench/realtime.py [--clients 1000] [--bursts 5] [--events 10] [--modes threading,gevent]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests
import socketio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services.adapters.rabbitmq_events import RabbitEventBus  # noqa: E402
from services.testing import STRONG_PASSWORD, free_port, rss_kib  # noqa: E402

BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
GUNICORN = str(Path(sys.executable).parent / "gunicorn")


def wait_ready(url: str, proc: subprocess.Popen, log: Path, path: str = "/readyz") -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url} exited:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url + path, timeout=1).status_code == 200:
                return
        except requests.RequestException:  # not up yet, or too busy to answer within the timeout
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not ready within 60 s:\n{log.read_text()[-3000:]}")


def start_notify(mode: str, clients: int, env: dict, work: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    if mode == "threading":
        worker = ["-k", "gthread", "--threads", str(clients + 64)]
    else:
        worker = ["-k", "gevent"]
    # gunicorn's worker_connections (default 1000) caps gthread and gevent alike: above it nothing is accepted
    worker += ["--worker-connections", str(clients + 256)]
    log = work / f"notify-{mode}.log"
    proc = subprocess.Popen([GUNICORN, "-w", "1", *worker, "-b", f"127.0.0.1:{port}", "--no-control-socket",
                             "--backlog", "2048", "notify_service:create_app()"],
                            env={**env, "NOTIFY_ASYNC_MODE": mode}, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, log)
    return url, proc


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def run_clients(url: str, token: str, pid: int, args, publish) -> dict:
    received: list[list[tuple[int, float, float]]] = [[] for _ in range(args.clients)]
    clients: list[socketio.AsyncClient] = []

    def recorder(index: int):
        async def on_progress(data):
            received[index].append((data["seq"], data["ts"], time.time()))
        return on_progress

    rss_before = rss_kib(pid)
    started = time.perf_counter()
    failures = 0
    for batch_start in range(0, args.clients, args.batch):
        batch = []
        for index in range(batch_start, min(args.clients, batch_start + args.batch)):
            client = socketio.AsyncClient(reconnection=False)
            client.on("video.progress", recorder(index))
            batch.append(client)
        results = await asyncio.gather(*(c.connect(url, auth={"token": token}, transports=["websocket"],
                                                   wait_timeout=30) for c in batch), return_exceptions=True)
        for client, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                failures += 1
            else:
                clients.append(client)
    connect_seconds = time.perf_counter() - started
    await asyncio.sleep(2)  # let the server settle before reading its memory
    rss_after = rss_kib(pid)

    loop = asyncio.get_running_loop()
    http_ms = []
    for _ in range(20):
        t0 = time.perf_counter()
        try:
            status = await loop.run_in_executor(None, lambda: requests.get(url + "/healthz", timeout=10).status_code)
        except requests.RequestException:
            status = None
        http_ms.append((time.perf_counter() - t0) * 1000 if status == 200 else float("inf"))

    seq = 0
    for _ in range(args.bursts):
        first = seq + 1
        seq += args.events
        await loop.run_in_executor(None, publish, first, seq)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(len(r) and r[-1][0] >= seq for r in received[: len(clients)]):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(args.pause)

    await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)
    # engine.io's asyncio client keeps its aiohttp session open after disconnect()
    await asyncio.gather(*(c.eio.http.close() for c in clients if getattr(c.eio, "http", None)),
                         return_exceptions=True)
    latencies = [(got - ts) * 1000 for r in received for _seq, ts, got in r]
    expected = len(clients) * args.bursts * args.events
    return {
        "connected": len(clients), "failed": failures, "connect_s": round(connect_seconds, 2),
        "rss_mib_idle": round(rss_before / 1024, 1), "rss_mib_connected": round(rss_after / 1024, 1),
        "kib_per_connection": round((rss_after - rss_before) / max(1, len(clients)), 1),
        "healthz_ms_p50": round(statistics.median(http_ms), 1),
        "delivered": len(latencies), "expected": expected,
        "latency_ms_p50": round(percentile(latencies, 50), 1) if latencies else None,
        "latency_ms_p99": round(percentile(latencies, 99), 1) if latencies else None,
        "latency_ms_max": round(max(latencies), 1) if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--bursts", type=int, default=5)
    parser.add_argument("--events", type=int, default=10, help="events per burst")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between bursts")
    parser.add_argument("--batch", type=int, default=50, help="clients connecting at once")
    parser.add_argument("--modes", default="threading,gevent")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="reelhouse-bench-realtime-"))
    env = {**os.environ, "REELHOUSE_DATA_DIR": str(work / "data"), "BROKER_URL": BROKER,
           "BROKER_NAMESPACE": namespace, "LOG_LEVEL": "WARNING", "WORKER_CONCURRENCY": "0"}
    port = free_port()
    gateway_url = f"http://127.0.0.1:{port}"
    gateway_log = work / "gateway.log"
    gateway = subprocess.Popen([sys.executable, "-m", "reelhouse_gateway", "up"],
                               env={**env, "REELHOUSE_PORT": str(port)}, stdout=gateway_log.open("wb"),
                               stderr=subprocess.STDOUT)
    bus = None
    results = {}
    try:
        wait_ready(gateway_url, gateway, gateway_log, "/healthz")
        account = requests.post(gateway_url + "/api/auth/register", timeout=30, json={
            "tenant_name": "Bench", "email": "bench@bench.test", "password": STRONG_PASSWORD}).json()
        token, tenant_id = account["access_token"], account["user"]["tenant_id"]
        created = requests.post(gateway_url + "/api/uploads", timeout=30, headers={
            "Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0", "Upload-Length": "1000",
            "Upload-Metadata": f"title {base64.b64encode(b'Bench').decode()},visibility "
                               f"{base64.b64encode(b'tenant').decode()}"})
        assert created.status_code == 201, created.text
        video_id = created.headers["Location"].rsplit("/", 1)[1]
        bus = RabbitEventBus(BROKER, namespace=namespace)

        def publish(first: int, last: int) -> None:
            for seq in range(first, last + 1):
                bus.publish("video.progress", {"video_id": video_id, "tenant_id": tenant_id, "seq": seq,
                                               "ts": time.time(), "stage": "encode", "percent": seq % 100})

        for mode in args.modes.split(","):
            url, proc = start_notify(mode, args.clients, env, work)
            try:
                results[mode] = asyncio.run(run_clients(url, token, proc.pid, args, publish))
            finally:
                proc.terminate()
                proc.wait(30)
            print(mode, json.dumps(results[mode]), flush=True)
    finally:
        if bus is not None:
            bus.delete_topology()
            bus.close()
        gateway.terminate()
        gateway.wait(30)

    print(f"\n{args.clients} clients, {args.bursts} bursts of {args.events} events, one notify process "
          f"(machine: {os.cpu_count()} cores)\n")
    keys = ["connected", "failed", "connect_s", "healthz_ms_p50", "delivered", "expected", "latency_ms_p50",
            "latency_ms_p99", "latency_ms_max", "rss_mib_idle", "rss_mib_connected", "kib_per_connection"]
    print("| | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for key in keys:
        print(f"| {key} | " + " | ".join(str(results[m][key]) for m in results) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
