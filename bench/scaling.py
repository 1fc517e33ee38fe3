"""Worker scaling: the same batch of short jobs done by 1 and by 2 `reelhouse worker` processes (RabbitMQ).

`reelhouse up` (no workers of its own) takes the uploads; their jobs wait in the queue, whose depth is read the way
KEDA reads it (jobs waiting in the lane queues); then N workers start and the clock runs until every video is
ready. Reports the wall time per N, the speed-up (ideal ≈ 2 on 2 cores), and CPU utilisation: the CPU seconds of
the workers and their ffmpeg children ÷ (wall time × cores).
Medians of --runs batches per worker count, interleaved.
Run: .venv/bin/python bench/scaling.py [--jobs 8] [--seconds 6] [--size 640x360] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services.adapters.rabbitmq_events import RabbitEventBus  # noqa: E402
from services.adapters.rabbitmq_jobs import RabbitJobQueue  # noqa: E402
from services.testing import free_port, make_clip, register_account, tus_upload  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import result  # noqa: E402

BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process and of its children that have ended (ffmpeg runs)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICKS


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:  # not up yet
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def batch(url: str, env: dict, clip: Path, jobs: int, workers: int, work: Path) -> dict:
    account = register_account(url)
    token = account["token"]
    ids = [tus_upload(url, token, clip, f"job {i}") for i in range(jobs)]
    queue = RabbitJobQueue(BROKER, namespace=env["BROKER_NAMESPACE"])
    try:
        deadline = time.monotonic() + 30
        depth = queue.pending()
        while depth < jobs and time.monotonic() < deadline:
            time.sleep(0.2)
            depth = queue.pending()
    finally:
        queue.close()
    procs = []
    started = time.monotonic()
    for index in range(workers):
        log = (work / f"worker-{workers}-{index}.log").open("wb")
        procs.append(subprocess.Popen([sys.executable, "-m", "reelhouse_gateway", "worker", "--health-port",
                                       str(free_port())], env={**env, "WORK_DIR": str(work / f"w{index}")},
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    auth = {"Authorization": f"Bearer {token}"}
    cpu = 0.0
    # What KEDA reads from the management API (ready + unacknowledged messages) is the jobs not finished yet:
    # sampled once a second.
    unfinished: list[int] = []
    try:
        while time.monotonic() - started < 1800:
            statuses = [requests.get(f"{url}/api/videos/{i}", headers=auth, timeout=30).json()["status"] for i in ids]
            if len(unfinished) <= time.monotonic() - started:
                unfinished.append(sum(s not in ("ready", "failed") for s in statuses))
            if all(s in ("ready", "failed") for s in statuses):
                break
            time.sleep(0.25)
        wall = time.monotonic() - started
        cpu = sum(cpu_seconds(p.pid) for p in procs)
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(60)
    assert all(s == "ready" for s in statuses), statuses
    return {"wall": wall, "cpu": cpu, "depth": depth, "unfinished": unfinished}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6, help="length of each clip")
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--runs", type=int, default=5, help="batches per worker count (medians are reported)")
    args = parser.parse_args()
    namespace = f"bench-scaling-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="bench-scaling-", dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        env = {**os.environ, "REELHOUSE_DATA_DIR": str(work / "data"), "BROKER_URL": BROKER,
               "BROKER_NAMESPACE": namespace, "WORKER_CONCURRENCY": "0", "LOG_LEVEL": "WARNING",
               "AUTH_REGISTER_RATE_LIMIT": "1000 per hour"}
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        up = subprocess.Popen([sys.executable, "-m", "reelhouse_gateway", "up"],
                              env={**env, "REELHOUSE_PORT": str(port)}, stdout=(work / "up.log").open("wb"),
                              stderr=subprocess.STDOUT, start_new_session=True)
        batches: dict[int, list[dict]] = {1: [], 2: []}
        loads = []
        try:
            wait_http(url + "/readyz", up)
            clip = make_clip(work / "clip.mp4", args.seconds, args.size)
            worker_env = {k: v for k, v in env.items() if k != "WORKER_CONCURRENCY"}
            for run in range(args.runs):  # interleaved, each run in the other order
                for workers in ((1, 2) if run % 2 == 0 else (2, 1)):
                    batches[workers].append(batch(url, worker_env, clip, args.jobs, workers, work))
                loads.append(os.getloadavg()[0])
        finally:
            os.killpg(up.pid, signal.SIGTERM)
            up.wait(60)
            RabbitJobQueue(BROKER, namespace=namespace).delete_topology()
            RabbitEventBus(BROKER, namespace=namespace).delete_topology()
    cores = os.cpu_count() or 1
    results = {}
    for workers, runs in batches.items():
        middle = sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]  # the median batch, timeline and all
        results[workers] = {**middle, "wall": statistics.median(r["wall"] for r in runs),
                            "cpu": statistics.median(r["cpu"] for r in runs),
                            "utilisation": statistics.median(r["cpu"] / (r["wall"] * cores) for r in runs)}
    load = f"load {min(loads):.1f}–{max(loads):.1f}"
    print(f"\n{args.jobs} jobs of a {args.seconds:.0f} s {args.size} clip, {cores} cores, medians of {args.runs} "
          f"batches per worker count, {load}; queue depth before the workers started (KEDA's metric): "
          f"{results[1]['depth']} and {results[2]['depth']}\n")
    print("| workers | wall time (median) | each batch | CPU utilisation (median) | KEDA's metric (jobs not finished) "
          "once a second, median batch |")
    print("|---|---|---|---|---|")
    for workers, r in results.items():
        each = ", ".join(f"{b['wall']:.1f}" for b in batches[workers])
        print(f"| {workers} | {r['wall']:.1f} s | {each} | {r['utilisation'] * 100:.0f} % | "
              f"{' '.join(map(str, r['unfinished']))} |")
    print(f"\nspeed-up with 2 workers: {results[1]['wall'] / results[2]['wall']:.2f} (ideal ≈ 2 on 2 cores)")
    # The issue asks for these figures without a target: on 2 cores the ceiling is set by what one worker leaves.
    result("scaling", "2 workers ÷ 1 worker, speed-up (ideal ≈ 2 on 2 cores)", results[1]["wall"] / results[2]["wall"],
           None, ours=f"{results[2]['wall']:.1f} s", baseline=f"{results[1]['wall']:.1f} s", runs=args.runs, note=load)
    for workers, r in results.items():
        result("scaling", f"CPU utilisation, {workers} worker{'s' if workers > 1 else ''} (share of {cores} cores)",
               r["utilisation"], None, ours=f"{r['cpu']:.1f} CPU s", baseline=f"{r['wall']:.1f} s wall",
               runs=args.runs, note=load)
    result("scaling", "queue depth before the workers started (KEDA's metric)", results[1]["depth"], None,
           ours=f"{results[1]['depth']} jobs", baseline=f"{args.jobs} queued", runs=args.runs, note=load)


if __name__ == "__main__":
    main()
