"""`make bench`: every benchmark, one after another, each beside its baseline; `--smoke`: tiny sizes (CI).

The output of each is printed as it comes and collected in bench/results/<UTC time>.md (git-ignored); the figures
worth keeping are copied into BENCHMARKS.md by hand, with the machine they were measured on.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (script, full arguments, smoke arguments)
BENCHMARKS = [
    ("range.py", [], ["--size-mib", "16", "--runs", "1", "--seconds", "1"]),
    ("upload.py", [], ["--size-mib", "16", "--patch-mib", "8"]),
    ("gateway.py", [], ["--size-mib", "8", "--runs", "1"]),
    ("realtime.py", [], ["--clients", "20", "--bursts", "1", "--events", "2"]),
    ("transcode.py", [], ["--seconds", "4", "--size", "640x360", "--runs", "1"]),
    ("scaling.py", [], ["--jobs", "2", "--seconds", "2", "--size", "320x180"]),
    ("playable.py", [], ["--seconds", "4", "--size", "320x180", "--runs", "1"]),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that every benchmark runs")
    parser.add_argument("--only", help="comma-separated script names, e.g. range.py,gateway.py")
    args = parser.parse_args()
    missing = [tool for tool in ("nginx", "wrk") if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        print(f"needs {' and '.join(missing)}: apt-get install nginx-light wrk", file=sys.stderr)
        return 2
    chosen = [b for b in BENCHMARKS if not args.only or b[0] in args.only.split(",")]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    report = results / f"{stamp}{'-smoke' if args.smoke else ''}.md"
    lines = [f"# make bench {stamp} ({os.cpu_count()} cores{', smoke' if args.smoke else ''})", ""]
    failed = []
    for script, full, smoke in chosen:
        command = [sys.executable, str(HERE / script), *(smoke if args.smoke else full)]
        print(f"=== {script} {' '.join(command[2:])}", flush=True)
        started = time.monotonic()
        run = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        seconds = time.monotonic() - started
        table = [line for line in run.stdout.splitlines() if line.strip()]
        print("\n".join(table[-16:]), flush=True)
        if run.returncode != 0:
            failed.append(script)
            print(run.stderr[-3000:], file=sys.stderr, flush=True)
        lines += [f"## {script} ({seconds:.0f} s, exit {run.returncode})", "", *table[-16:], ""]
    report.write_text("\n".join(lines))
    print(f"\nwritten to {report}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
