"""`make bench`: every benchmark, one after another, each beside its baseline; `--smoke`: tiny sizes (CI).

Installs what the baselines need if it is missing (nginx and wrk from Debian packages, when run as root) and starts
RabbitMQ if it is installed but not running. The output of each benchmark is printed as it comes; at the end, one
table puts every figure next to its issue-10 target (from the `RESULT` lines of bench/report.py). All of it is
also written to bench/results/<UTC time>.md (git-ignored); the figures worth keeping go into BENCHMARKS.md with the
machine they were measured on.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from report import RESULT_PREFIX, parse  # noqa: E402

# (script, full arguments, smoke arguments)
BENCHMARKS = [
    ("range.py", [], ["--size-mib", "16", "--runs", "1", "--seconds", "1", "--repeat", "1"]),
    ("upload.py", [], ["--size-mib", "16", "--patch-mib", "8"]),
    ("gateway.py", [], ["--size-mib", "8", "--runs", "1"]),
    ("realtime.py", ["--pause", "0.5"], ["--clients", "20", "--bursts", "1", "--events", "2", "--runs", "1"]),
    # Medians of 3 here, to keep `make bench` under 20 minutes: one run of the four ladders takes ~3 minutes
    # (BENCHMARKS.md records `transcode.py --runs 5`).
    ("transcode.py", ["--runs", "3"], ["--seconds", "4", "--size", "640x360", "--runs", "1"]),
    ("scaling.py", [], ["--jobs", "2", "--seconds", "2", "--size", "320x180", "--runs", "1"]),
    ("playable.py", [], ["--seconds", "4", "--size", "320x180", "--runs", "1"]),
]


def _have(tool: str) -> bool:
    return bool(shutil.which(tool)) or Path(f"/usr/sbin/{tool}").exists()


def ensure_tools() -> list[str]:
    """nginx and wrk (Debian packages) and a running RabbitMQ; returns what is still missing."""
    packages = {"nginx": "nginx-light", "wrk": "wrk"}
    wanted = [packages[tool] for tool in packages if not _have(tool)]
    if wanted and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"--- apt-get install {' '.join(wanted)}", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *wanted], env=env, check=False)
    missing = [f"{tool} (apt-get install {packages[tool]})" for tool in packages if not _have(tool)]
    if not _listening(5672):
        server = shutil.which("rabbitmq-server") or "/usr/sbin/rabbitmq-server"
        if Path(server).exists():
            print("--- starting rabbitmq-server -detached", flush=True)
            subprocess.run([server, "-detached"], check=False)
            deadline = time.monotonic() + 60
            while not _listening(5672) and time.monotonic() < deadline:
                time.sleep(1)
        if not _listening(5672):
            missing.append("RabbitMQ on 127.0.0.1:5672 (apt-get install rabbitmq-server; rabbitmq-server -detached)")
    return missing


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def summary(results: list[dict], seconds: float, smoke: bool) -> list[str]:
    """The table of every figure next to its target."""
    lines = [f"## Summary: every figure beside its target ({os.cpu_count()} cores, {seconds / 60:.1f} min in all"
             f"{'; smoke sizes, figures not judged' if smoke else ''})", "",
             "| benchmark | figure | ours | baseline | value | target | met | runs | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        met = {True: "yes", False: "**NO**", None: "(reported)"}[r["met"]]
        target = (r["target"] or "—").replace(">=", "≥").replace("<=", "≤")
        lines.append(f"| {r['bench']} | {r['figure']} | {r['ours']} | {r['baseline']} | {r['value']:.2f} | "
                     f"{target} | {met} | {r['runs']} | {r['note']} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that every benchmark runs")
    parser.add_argument("--only", help="comma-separated script names, e.g. range.py,gateway.py")
    args = parser.parse_args()
    missing = ensure_tools()
    if missing:
        print(f"needs {'; '.join(missing)}", file=sys.stderr)
        return 2
    chosen = [b for b in BENCHMARKS if not args.only or b[0] in args.only.split(",")]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    report = results_dir / f"{stamp}{'-smoke' if args.smoke else ''}.md"
    lines = [f"# make bench {stamp} ({os.cpu_count()} cores{', smoke' if args.smoke else ''})", ""]
    failed, results = [], []
    began = time.monotonic()
    for script, full, smoke in chosen:
        command = [sys.executable, str(HERE / script), *(smoke if args.smoke else full)]
        print(f"=== {script} {' '.join(command[2:])}", flush=True)
        started = time.monotonic()
        run = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        seconds = time.monotonic() - started
        found = parse(run.stdout)
        results += found
        table = [line for line in run.stdout.splitlines() if line.strip() and not line.startswith(RESULT_PREFIX)]
        print("\n".join(table[-24:]), flush=True)
        print(f"({seconds:.0f} s)", flush=True)
        if run.returncode != 0 or not found:
            failed.append(script)
            print(run.stderr[-3000:] or f"{script} reported no RESULT line", file=sys.stderr, flush=True)
        lines += [f"## {script} ({seconds:.0f} s, exit {run.returncode})", "", *table[-24:], ""]
    table = summary(results, time.monotonic() - began, args.smoke)
    print("\n" + "\n".join(table), flush=True)
    report.write_text("\n".join(lines + table) + "\n")
    print(f"\nwritten to {report}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
