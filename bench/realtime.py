"""Realtime fan-out benchmark: N Socket.IO clients on one notify process, threading vs gevent, same run.

Each mode runs the notify service as a distributed replica would (`gunicorn -w 1`, gthread with one thread per
socket for threading mode, `-k gevent` for gevent mode) consuming the RabbitMQ event bus. A `reelhouse up` beside
it (same SQLite file, same bus) provides the account and the video. The clients connect in batches; then bursts of
events are published to the bus and every receipt is timed against the event's publish time. Reports connect time,
HTTP latency with every socket open, delivery latency p50/p99/max, deliveries received, the notify process's RSS
growth per connection, and the CPU time the notify process and the clients spent per burst.

The clients share the machine with the server, so a heavy client inflates the latency. The default client
(`--client raw`, like wrk beside nginx) speaks the real protocols over real sockets with little work per message:
a websocket handshake offering permessage-deflate as browsers do, Engine.IO open/ping/pong, the Socket.IO CONNECT
with the access token, and events kept as received (time, frame) and decoded after the run. `--client socketio`
uses python-socketio's asyncio client instead (one object, task and aiohttp session per socket).
Each run starts a fresh notify process per mode (modes interleaved); the table and the RESULT lines give the
median over `--runs`. The issue-10 targets (p99 <= 100 ms, <= 100 KiB per connection) are judged on the mode a notify
replica runs by default (`DEFAULT_MODE`, as in notify-service/Dockerfile); the other mode is reported beside it.
The benchmark fails (exit 1) if a client was refused or an event did not reach every socket once, in order.
Run: .venv/bin/python bench/realtime.py [--clients 1000] [--bursts 5] [--events 10] [--runs 5]
     [--modes threading,gevent]
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
import zlib
from pathlib import Path

import requests
import socketio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services.adapters.rabbitmq_events import RabbitEventBus  # noqa: E402
from services.testing import STRONG_PASSWORD, free_port, rss_kib  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import result  # noqa: E402

BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_MODE = "gevent"  # NOTIFY_ASYNC_MODE of a notify replica (notify-service/Dockerfile, k8s, docker-compose)
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


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (gunicorn's graceful stop), then SIGKILL if a loaded machine keeps it past 30 s."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)


class RawClient(asyncio.Protocol):
    """One Socket.IO client on a raw websocket: handshake, open/ping/pong and CONNECT; events kept undecoded."""
    def __init__(self, token: str, deflate: bool):
        self.token, self.offer_deflate = token, deflate
        self.buf = bytearray()
        self.upgraded = False
        self.inflate = None
        self.connected = asyncio.get_running_loop().create_future()
        self.events: list[tuple[float, bytes]] = []
        self.count = 0
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        ext = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if self.offer_deflate else ""
        host = "{}:{}".format(*transport.get_extra_info("peername")[:2])
        transport.write((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}\r\n"
                         f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                         f"Sec-WebSocket-Version: 13\r\n{ext}\r\n").encode())

    def send_text(self, text: str):
        data = text.encode()
        n = len(data)
        head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0xFE]) + n.to_bytes(2, "big")
        mask = os.urandom(4)
        masked = (int.from_bytes(data, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
        self.transport.write(head + mask + masked)

    def data_received(self, data):
        now = time.time()
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[: end + 4]
            if not head.startswith("HTTP/1.1 101"):
                self.fail(head.split("\r\n", 1)[0])
                return
            if "permessage-deflate" in head.lower():
                self.inflate = zlib.decompressobj(-15)
            self.upgraded = True
        buf = self.buf
        pos = 0
        while len(buf) - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n, start = b1 & 0x7F, pos + 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n, start = int.from_bytes(buf[pos + 2: pos + 4], "big"), pos + 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n, start = int.from_bytes(buf[pos + 2: pos + 10], "big"), pos + 10
            if len(buf) - start < n:
                break
            payload = bytes(buf[start: start + n])
            pos = start + n
            if b0 & 0x40:
                payload = self.inflate.decompress(payload + b"\x00\x00\xff\xff")
            self.frame(b0 & 0x0F, payload, now)
        del buf[:pos]

    def frame(self, opcode, payload, now):
        if opcode != 1:
            if opcode == 8:
                self.transport.close()
            return
        kind = payload[:1]
        if kind == b"4":
            if payload[1:2] == b"2":
                self.events.append((now, payload))
                self.count += 1
            elif payload[1:2] == b"0":
                if not self.connected.done():
                    self.connected.set_result(True)
            elif payload[1:2] == b"4":
                self.fail(payload.decode())
        elif kind == b"2":
            self.send_text("3")
        elif kind == b"0":
            self.send_text("40" + json.dumps({"token": self.token}))

    def fail(self, why):
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(why))
        self.transport.close()

    def connection_lost(self, exc):
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(str(exc)))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def worker_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a gunicorn master's worker (its only child)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    fields = Path(f"/proc/{children[0] if children else pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SocketIOClients:
    """python-socketio's asyncio client, one per socket (the heavier client)."""

    def __init__(self, url: str, token: str):
        self.url, self.token = url, token
        self.clients: list[socketio.AsyncClient] = []
        self.received: list[list[tuple[float, int, float]]] = []

    async def connect_batch(self, size: int) -> int:
        batch = []
        for _ in range(size):
            client, received = socketio.AsyncClient(reconnection=False), []

            async def on_progress(data, received=received):
                received.append((time.time(), data["seq"], data["ts"]))
            client.on("video.progress", on_progress)
            batch.append((client, received))
        results = await asyncio.gather(*(c.connect(self.url, auth={"token": self.token}, transports=["websocket"],
                                                   wait_timeout=30) for c, _ in batch), return_exceptions=True)
        for (client, received), outcome in zip(batch, results, strict=True):
            if not isinstance(outcome, Exception):
                self.clients.append(client)
                self.received.append(received)
        return sum(isinstance(outcome, Exception) for outcome in results)

    def counts(self) -> list[int]:
        return [len(r) for r in self.received]

    def deliveries(self) -> list[list[tuple[float, int, float]]]:
        return self.received

    async def close(self) -> None:
        await asyncio.gather(*(c.disconnect() for c in self.clients), return_exceptions=True)
        # engine.io's asyncio client keeps its aiohttp session open after disconnect()
        await asyncio.gather(*(c.eio.http.close() for c in self.clients if getattr(c.eio, "http", None)),
                             return_exceptions=True)


class RawClients:
    """`RawClient`s on one event loop."""

    def __init__(self, url: str, token: str):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.address, self.token = (host, int(port)), token
        self.clients: list[RawClient] = []

    async def connect_batch(self, size: int) -> int:
        loop = asyncio.get_running_loop()

        async def one() -> RawClient:
            _, client = await loop.create_connection(lambda: RawClient(self.token, deflate=True), *self.address)
            try:
                await asyncio.wait_for(client.connected, 30)
            except BaseException:
                client.transport.close()
                raise
            return client
        results = await asyncio.gather(*(one() for _ in range(size)), return_exceptions=True)
        self.clients += [c for c in results if isinstance(c, RawClient)]
        return sum(isinstance(c, BaseException) for c in results)

    def counts(self) -> list[int]:
        return [c.count for c in self.clients]

    def deliveries(self) -> list[list[tuple[float, int, float]]]:
        found = []
        for client in self.clients:
            found.append([])
            for got, frame in client.events:
                name, data = json.loads(frame[2:])
                if name == "video.progress":
                    found[-1].append((got, data["seq"], data["ts"]))
        return found

    async def close(self) -> None:
        for client in self.clients:
            client.transport.close()
        await asyncio.sleep(0.2)


async def run_clients(url: str, token: str, pid: int, args, publish) -> dict:
    clients = (RawClients if args.client == "raw" else SocketIOClients)(url, token)
    rss_before = rss_kib(pid)
    started = time.perf_counter()
    failures = 0
    for batch_start in range(0, args.clients, args.batch):
        failures += await clients.connect_batch(min(args.batch, args.clients - batch_start))
    connect_seconds = time.perf_counter() - started
    connected = len(clients.counts())
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
    server_cpu = client_cpu = 0.0
    for _ in range(args.bursts):
        first = seq + 1
        seq += args.events
        server0, client0 = worker_cpu_s(pid), time.process_time()
        await loop.run_in_executor(None, publish, first, seq)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(count >= seq for count in clients.counts()):
                break
            await asyncio.sleep(0.01)
        server_cpu += worker_cpu_s(pid) - server0
        client_cpu += time.process_time() - client0
        await asyncio.sleep(args.pause)

    per_client = clients.deliveries()
    await clients.close()
    latencies = [(got - ts) * 1000 for deliveries in per_client for got, _seq, ts in deliveries]
    # every socket must get every event once, in publishing order
    published = list(range(1, seq + 1))
    misordered = sum([number for _, number, _ in deliveries] != published for deliveries in per_client)
    expected = connected * args.bursts * args.events
    return {
        "connected": connected, "failed": failures, "connect_s": round(connect_seconds, 2),
        "rss_mib_idle": round(rss_before / 1024, 1), "rss_mib_connected": round(rss_after / 1024, 1),
        "kib_per_connection": round((rss_after - rss_before) / max(1, connected), 1),
        "healthz_ms_p50": round(statistics.median(http_ms), 1),
        "delivered": len(latencies), "expected": expected, "misordered": misordered,
        "latency_ms_p50": round(percentile(latencies, 50), 1) if latencies else None,
        "latency_ms_p99": round(percentile(latencies, 99), 1) if latencies else None,
        "latency_ms_max": round(max(latencies), 1) if latencies else None,
        "server_cpu_ms_per_burst": round(server_cpu * 1000 / args.bursts, 1),
        "server_cpu_us_per_delivery": round(server_cpu * 1e6 / max(1, len(latencies)), 1),
        "client_cpu_ms_per_burst": round(client_cpu * 1000 / args.bursts, 1),
    }


KEYS = ["connected", "failed", "connect_s", "healthz_ms_p50", "delivered", "expected", "misordered", "latency_ms_p50",
        "latency_ms_p99", "latency_ms_max", "server_cpu_ms_per_burst", "server_cpu_us_per_delivery",
        "client_cpu_ms_per_burst", "rss_mib_idle", "rss_mib_connected", "kib_per_connection"]


def medians(runs: list[dict]) -> dict:
    """The median of every figure over the runs of one mode (sums for the delivery counts)."""
    out = {}
    for key in KEYS:
        values = [r[key] for r in runs if r[key] is not None]
        if key in ("delivered", "expected", "failed", "misordered"):
            out[key] = sum(values)
        elif values:
            middle = statistics.median(values)
            out[key] = int(middle) if middle == int(middle) and isinstance(values[0], int) else round(middle, 1)
        else:
            out[key] = None
    return out


def report(results: dict[str, dict], per_run: dict[str, list[dict]], args) -> None:
    """RESULT lines: the targets on the default mode, the other mode's figures beside them without a target."""
    judged = DEFAULT_MODE if DEFAULT_MODE in results else next(iter(results))
    runs = len(per_run[judged])
    better = min(results, key=lambda m: (results[m]["latency_ms_p99"] or float("inf"),
                                         results[m]["kib_per_connection"]))
    sizes = f"{args.clients} clients, {args.bursts} bursts of {args.events} events"
    for mode in [judged, *(m for m in results if m != judged)]:
        r, others = results[mode], [m for m in results if m != mode]
        target = mode == judged
        label = f"{mode}{' (default)' if target else ''}"
        versus = "; ".join(f"{m} p99 {results[m]['latency_ms_p99']} ms" for m in others)
        result("realtime", f"delivery latency p99 (ms), {label}", r["latency_ms_p99"], "<= 100" if target else None,
               ours=f"p50 {r['latency_ms_p50']} ms, p99 {r['latency_ms_p99']} ms", baseline=versus, runs=runs,
               note=f"{sizes}; delivered {r['delivered']} of {r['expected']}; best p99 this run: {better}")
        versus = "; ".join(f"{m} {results[m]['kib_per_connection']} KiB" for m in others)
        result("realtime", f"memory per connection (KiB), {label}", r["kib_per_connection"],
               "<= 100" if target else None, ours=f"{r['rss_mib_idle']} -> {r['rss_mib_connected']} MiB RSS",
               baseline=versus, runs=runs, note=sizes)
        result("realtime", f"server CPU per delivery (us), {label}", r["server_cpu_us_per_delivery"], None,
               ours=f"{r['server_cpu_ms_per_burst']} ms per burst", runs=runs,
               note=f"client CPU {r['client_cpu_ms_per_burst']} ms per burst")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--bursts", type=int, default=5)
    parser.add_argument("--events", type=int, default=10, help="events per burst")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between bursts")
    parser.add_argument("--batch", type=int, default=50, help="clients connecting at once")
    parser.add_argument("--runs", type=int, default=5, help="fresh notify processes per mode (medians reported)")
    parser.add_argument("--modes", default="threading,gevent")
    parser.add_argument("--client", choices=["raw", "socketio"], default="raw",
                        help="raw: minimal websocket Socket.IO clients; socketio: python-socketio AsyncClient")
    parser.add_argument("--json", type=Path, help="also write every run's results here")
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
    modes = args.modes.split(",")
    per_run: dict[str, list[dict]] = {mode: [] for mode in modes}
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

        for run in range(1, args.runs + 1):
            for mode in modes:
                url, proc = start_notify(mode, args.clients, env, work)
                try:
                    figures = asyncio.run(run_clients(url, token, proc.pid, args, publish))
                finally:
                    stop(proc)
                per_run[mode].append(figures)
                print(f"run {run} {mode}", json.dumps(figures), flush=True)
    finally:
        if bus is not None:
            bus.delete_topology()
            bus.close()
        gateway.terminate()
        gateway.wait(30)

    results = {mode: medians(runs) for mode, runs in per_run.items()}
    print(f"\n{args.clients} clients, {args.bursts} bursts of {args.events} events, one notify process, median of "
          f"{args.runs} run(s) (machine: {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f} at the end)\n")
    print("| | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for key in KEYS:
        print(f"| {key} | " + " | ".join(str(results[m][key]) for m in results) + " |")
    print("| p99 of each run | " + " | ".join(", ".join(str(r["latency_ms_p99"]) for r in per_run[m])
                                           for m in results) + " |")
    print()
    report(results, per_run, args)
    if args.json:
        args.json.write_text(json.dumps(per_run, indent=2))
    lost = {m: (r["expected"] - r["delivered"], r["failed"], r["misordered"]) for m, r in results.items()
            if r["delivered"] != r["expected"] or r["failed"] or r["misordered"]}
    if lost:
        raise SystemExit(f"lost deliveries / refused clients / sockets that got events out of order, by mode: {lost}")


if __name__ == "__main__":
    main()
