"""`make bench BENCH_ARGS=--smoke`: every benchmark runs end to end at tiny sizes (the figures are not judged)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from services.testing import require_infra

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]


def test_every_benchmark_runs_beside_its_baseline():
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            require_infra(f"{tool} (Debian package), a benchmark baseline")
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        require_infra("RabbitMQ on 127.0.0.1:5672")
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke"], capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    summary = out[out.index("## Summary: every figure beside its target"):]
    rows = [line.split(" | ")[:2] for line in summary.splitlines() if line.startswith("| ") and " | " in line]
    for bench in ("range", "upload", "gateway", "realtime", "transcode", "scaling", "playable"):
        assert any(row[0] == f"| {bench}" for row in rows), f"no figure of {bench}.py in the summary table"
    for figure in ("(a) whole-file download ÷ nginx, reelhouse up", "(b) random 64 KiB ranges ÷ nginx, stream service",
                   "ranged download: through the gateway ÷ direct", "(b) HEVC MKV: first HLS segment playable"):
        assert figure in summary, figure
    for expected in ("(a) whole 16 MiB download", "(b) random 64 KiB ranges", "| local directory |",
                     "| S3 (moto server) |", "| ranged download", "| tus upload", "| delivered | 40 | 40 |",
                     "| worker (whole job) |", "| one ffmpeg per rung |", "speed-up with 2 workers",
                     "(KEDA's metric): 2 and 2", "(a) H.264/AAC MP4: a range of original_url",
                     "baseline: plain ffmpeg ladder"):
        assert expected in out, expected
