"""Upload benchmark: a tus upload of SIZE into the upload service for each store, beside its baseline.

The upload service runs as it is deployed (`gunicorn -k gthread upload_service:create_app()`, beside an auth
service for the account), with the local store and then with the S3 store (moto's server). Local store vs `cp` of
the same file on the same disk, then fsync of the copy (the service makes every byte durable before it answers);
S3 store vs one boto3 `upload_file` of the same file to the same server (multipart, boto3's 10 threads). Runs are
interleaved, each side going first in turn, after one uncounted pair; ratios are median throughput ÷ median
throughput. The upload service's peak RSS is sampled every 10 ms while it receives. The tus client sends each
PATCH's body by sendfile(2) from a keep-alive connection (http.client for the rest): it shares the 2 cores with
the server, and a client that copies the file through Python (`requests` sends 8 KiB at a time) takes CPU a remote
client would not.
Run: .venv/bin/python bench/upload.py [--size-mib 1024] [--patch-mib 64] [--runs 5] [--local-runs 11]
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import boto3
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services.testing import STRONG_PASSWORD, MotoS3Server, free_port, rss_kib  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import result  # noqa: E402

BIN = Path(sys.executable).parent


class PeakRss:
    """Samples a process's RSS every 10 ms in a thread; `peak` in KiB."""

    def __init__(self, pid: int):
        self.pid, self.peak = pid, rss_kib(pid)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.stopped.wait(0.01):
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except (OSError, AssertionError):
                return

    def stop(self) -> float:
        self.stopped.set()
        self.thread.join()
        return self.peak / 1024


def wait_ready(url: str, process: subprocess.Popen) -> None:
    for _ in range(600):
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}")
        try:
            if requests.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not become ready")


@contextmanager
def services(work: Path, env: dict):
    """An auth service and an upload service on one data directory: (upload URL, upload master pid, token)."""
    common = {**os.environ, "REELHOUSE_DATA_DIR": str(work / "data"), "LOG_LEVEL": "WARNING", **env}
    processes = []
    try:
        urls = {}
        apps = (("auth", "auth_service:create_app()"), ("upload", "upload_service:create_app(background=True)"))
        for name, app in apps:
            port = free_port()
            process = subprocess.Popen(
                [str(BIN / "gunicorn"), "-w", "1", "-k", "gthread", "--threads", "32", "-b", f"127.0.0.1:{port}",
                 "--no-control-socket", app], env=common, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
            processes.append(process)
            urls[name] = f"http://127.0.0.1:{port}"
            wait_ready(urls[name], process)  # one at a time: the first creates the signing key in the data dir
        session = requests.post(urls["auth"] + "/api/auth/register", timeout=30, json={
            "tenant_name": "Bench", "email": "b@bench.test", "password": STRONG_PASSWORD}).json()
        yield urls["upload"], processes[1].pid, session["access_token"]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def tus_upload(base: str, token: str, source: Path, patch: int) -> float:
    """Seconds from creation to the last PATCH's answer; the video is deleted afterwards (frees disk or moto)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    auth = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}

    def call(method: str, path: str, body=None, **headers) -> http.client.HTTPResponse:
        conn.request(method, path, body=body, headers={**auth, **headers})
        response = conn.getresponse()
        response.read()
        return response

    size = source.stat().st_size
    try:
        start = time.perf_counter()
        created = call("POST", "/api/uploads", **{"Upload-Length": str(size)})
        assert created.status == 201, created.status
        location = created.headers["Location"]
        with source.open("rb") as file:
            for offset in range(0, size, patch):
                n = min(patch, size - offset)
                conn.putrequest("PATCH", location)
                for name, value in {**auth, "Upload-Offset": str(offset), "Content-Length": str(n),
                                    "Content-Type": "application/offset+octet-stream"}.items():
                    conn.putheader(name, value)
                conn.endheaders()
                conn.sock.sendfile(file, offset, n)
                answer = conn.getresponse()
                answer.read()
                assert answer.status == 204, answer.status
        seconds = time.perf_counter() - start
        video = location.rsplit("/", 1)[1]
        assert call("DELETE", f"/api/videos/{video}").status == 204
        return seconds
    finally:
        conn.close()


def cp(source: Path, target: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["cp", str(source), str(target)], check=True)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    seconds = time.perf_counter() - start
    target.unlink()
    return seconds


def boto3_upload(s3, source: Path, bucket: str) -> float:
    start = time.perf_counter()
    s3.upload_file(str(source), bucket, "baseline")
    seconds = time.perf_counter() - start
    s3.delete_object(Bucket=bucket, Key="baseline")
    return seconds


def compare(label: str, runs: int, ours, baseline) -> tuple[list[float], list[float]]:
    # One uncounted pair first: whichever side sends the first GiB through a fresh moto server pays for its heap
    # growing (12.5 s where later runs take 7), and the first local run pays the service's own warm-up.
    warm = baseline(), ours()
    print(f"  {label} warm-up (not counted): baseline {warm[0]:.2f} s, ours {warm[1]:.2f} s", flush=True)
    times: tuple[list[float], list[float]] = ([], [])
    for run in range(runs):  # interleaved, each going first in turn: both see the same machine
        for side in ((0, 1) if run % 2 == 0 else (1, 0)):
            times[side].append((ours, baseline)[side]())
        print(f"  {label} run {run + 1}: ours {times[0][-1]:.2f} s, baseline {times[1][-1]:.2f} s", flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--patch-mib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    # fsync of 1 GiB on this disk takes one of two times run to run (cp + fsync: 0.65 or 1.07 s), for either side:
    # medians of 5 landed on different modes often enough to swing the local ratio 0.4-0.75; a pair takes ~3 s
    parser.add_argument("--local-runs", type=int, default=11)
    args = parser.parse_args()
    size, patch = args.size_mib * 1024 * 1024, args.patch_mib * 1024 * 1024
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-upload-", dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        source = work / "source.bin"
        with source.open("wb") as f:  # random bytes (not a video: the upload then ends `failed`, after timing)
            block = os.urandom(1024 * 1024)
            for _ in range(args.size_mib):
                f.write(block)
        os.sync()

        with services(work / "local", {}) as (base, pid, token):
            rss = PeakRss(pid)
            local = compare("local", args.local_runs, lambda: tus_upload(base, token, source, patch),
                            lambda: cp(source, work / "copy.bin"))
            local_rss = rss.stop()

        moto = MotoS3Server()
        moto.start()
        try:
            s3 = boto3.client("s3", endpoint_url=moto.endpoint_url, aws_access_key_id="test",
                              aws_secret_access_key="test", region_name="us-east-1")  # noqa: S106 - moto's test key
            bucket = f"baseline-{uuid.uuid4().hex[:8]}"
            s3.create_bucket(Bucket=bucket)
            env = {"STORAGE_URL": f"s3://bench-{uuid.uuid4().hex[:8]}", "S3_ENDPOINT_URL": moto.endpoint_url,
                   "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
            with services(work / "s3", env) as (base, pid, token):
                rss = PeakRss(pid)
                remote = compare("S3", args.runs, lambda: tus_upload(base, token, source, patch),
                                 lambda: boto3_upload(s3, source, bucket))
                remote_rss = rss.stop()
        finally:
            moto.stop()

    mb = size / 1e6
    rates = {name: (mb / statistics.median(ours), mb / statistics.median(base))
             for name, (ours, base) in (("local", local), ("S3", remote))}
    print(f"\n{args.size_mib} MiB in {args.patch_mib} MiB PATCHes, medians of {args.local_runs} (local) and "
          f"{args.runs} (S3) interleaved runs, "
          f"{os.cpu_count()} cores, {time.monotonic() - started:.0f} s in all\n")
    print("| store | tus upload | baseline | ratio (ours ÷ baseline) | target | upload service peak RSS |")
    print("|---|---|---|---|---|---|")
    print(f"| local directory | {rates['local'][0]:.0f} MB/s | `cp` + fsync: {rates['local'][1]:.0f} MB/s | "
          f"{rates['local'][0] / rates['local'][1]:.2f} | ≥ 0.5 | {local_rss:.0f} MiB |")
    print(f"| S3 (moto server) | {rates['S3'][0]:.0f} MB/s | boto3 `upload_file`: {rates['S3'][1]:.0f} MB/s | "
          f"{rates['S3'][0] / rates['S3'][1]:.2f} | ≥ 0.8 | {remote_rss:.0f} MiB |")
    result("upload", "local store ÷ cp", rates["local"][0] / rates["local"][1], ">= 0.5",
           ours=f"{rates['local'][0]:.0f} MB/s", baseline=f"{rates['local'][1]:.0f} MB/s", runs=args.local_runs)
    result("upload", "S3 store ÷ boto3 alone", rates["S3"][0] / rates["S3"][1], ">= 0.8",
           ours=f"{rates['S3'][0]:.0f} MB/s", baseline=f"{rates['S3'][1]:.0f} MB/s", runs=args.runs)
    result("upload", "upload service peak RSS, MiB", max(local_rss, remote_rss), "<= 150",
           ours=f"local {local_rss:.0f} MiB, S3 {remote_rss:.0f} MiB", runs=args.runs)


if __name__ == "__main__":
    main()
