"""Upload benchmark: a tus upload of SIZE through `reelhouse up` into each store, beside its baseline.

Local store vs `cp` of the same file on the same disk; S3 store (moto's server) vs one boto3 upload_file of the
same file to the same server. Reports MB/s, the ratio to the baseline, and the serving process's RSS growth.
Run: .venv/bin/python bench/upload.py [--size-mib 1024] [--patch-mib 64]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services.testing import STRONG_PASSWORD, MotoS3Server, free_port, rss_kib  # noqa: E402


class FileSlice:
    def __init__(self, path: Path, start: int, length: int):
        self.file = path.open("rb")
        self.file.seek(start)
        self.left = length

    def __len__(self):
        return self.left

    def read(self, size=-1):
        size = self.left if size < 0 else min(size, self.left)
        data = self.file.read(size)
        self.left -= len(data)
        return data


def tus_upload(source: Path, env: dict, patch_mib: int, work: Path) -> tuple[float, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "reelhouse_gateway", "up"],
                            env={**os.environ, "REELHOUSE_DATA_DIR": str(work / "data"), "REELHOUSE_PORT": str(port),
                                 "LOG_LEVEL": "WARNING", **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(300):
            try:
                if requests.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:  # not up yet, or too busy to answer within the timeout
                time.sleep(0.1)
        registered = requests.post(url + "/api/auth/register", timeout=30, json={
            "tenant_name": "Bench", "email": "b@bench.test", "password": STRONG_PASSWORD})
        token = registered.json()["access_token"]
        auth = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
        size = source.stat().st_size
        location = requests.post(url + "/api/uploads", headers={**auth, "Upload-Length": str(size)},
                                 timeout=30).headers["Location"]
        before, peak, offset = rss_kib(proc.pid), 0, 0
        start = time.perf_counter()
        while offset < size:
            n = min(patch_mib * 1024 * 1024, size - offset)
            response = requests.patch(url + location, data=FileSlice(source, offset, n), timeout=600, headers={
                **auth, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
            response.raise_for_status()
            offset += n
            peak = max(peak, rss_kib(proc.pid))
        return time.perf_counter() - start, (peak - before) / 1024
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--patch-mib", type=int, default=64)
    args = parser.parse_args()
    size = args.size_mib * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="bench-upload-", dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        source = work / "source.bin"
        with source.open("wb") as f:  # random-ish bytes (not a video: the upload then ends `failed`, after timing)
            block = os.urandom(1024 * 1024)
            for _ in range(args.size_mib):
                f.write(block)
        mb = size / 1e6

        start = time.perf_counter()
        shutil.copyfile(source, work / "copy.bin")
        os.sync()
        cp = time.perf_counter() - start
        (work / "copy.bin").unlink()
        local, local_rss = tus_upload(source, {}, args.patch_mib, work / "local")
        print(f"local store: tus {mb / local:7.1f} MB/s | cp {mb / cp:7.1f} MB/s | ratio {cp / local:.2f} "
              f"(target >= 0.5) | RSS growth {local_rss:.1f} MiB")

        moto = MotoS3Server()
        moto.start()
        try:
            s3 = boto3.client("s3", endpoint_url=moto.endpoint_url, aws_access_key_id="test",
                              aws_secret_access_key="test", region_name="us-east-1")  # noqa: S106 - moto's test key
            bucket = f"baseline-{uuid.uuid4().hex[:8]}"
            s3.create_bucket(Bucket=bucket)
            start = time.perf_counter()
            s3.upload_file(str(source), bucket, "baseline")
            boto = time.perf_counter() - start
            env = {"STORAGE_URL": f"s3://bench-{uuid.uuid4().hex[:8]}", "S3_ENDPOINT_URL": moto.endpoint_url,
                   "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
            remote, remote_rss = tus_upload(source, env, args.patch_mib, work / "s3")
        finally:
            moto.stop()
        print(f"S3 store:    tus {mb / remote:7.1f} MB/s | boto3 {mb / boto:7.1f} MB/s | ratio {boto / remote:.2f} "
              f"(target >= 0.8) | RSS growth {remote_rss:.1f} MiB")


if __name__ == "__main__":
    main()
