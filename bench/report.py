"""What every benchmark reports to `bench/run.py`: one `RESULT {json}` line per figure that has a target.

run.py collects these lines from every script into the summary table (figure, ours, baseline, ratio, target, met).
"""

from __future__ import annotations

import json
import operator
import sys

RESULT_PREFIX = "RESULT "
_COMPARE = {">=": operator.ge, "<=": operator.le}


def result(bench: str, figure: str, value: float, target: str | None, *, ours: str = "", baseline: str = "",
           runs: int = 1, note: str = "") -> dict:
    """Print (and return) one figure beside its target, e.g. `result("range", "(a) whole-file download ÷ nginx",
    0.92, ">= 0.9", ours="2360 MB/s", baseline="2564 MB/s", runs=5)`. `target` is an operator and a number, or
    None for a figure the issue asks to report without a target (`met` is then None)."""
    met = None
    if target is not None:
        op, _, bound = target.partition(" ")
        if op not in _COMPARE:
            raise ValueError(f"target must be '>= N' or '<= N', not {target!r}")
        met = bool(_COMPARE[op](value, float(bound)))
    line = {"bench": bench, "figure": figure, "value": round(value, 4), "target": target, "met": met,
            "ours": ours, "baseline": baseline, "runs": runs, "note": note}
    print(RESULT_PREFIX + json.dumps(line, ensure_ascii=False), flush=True)
    return line


def parse(stdout: str) -> list[dict]:
    """The RESULT lines of a benchmark's output."""
    found = []
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            try:
                found.append(json.loads(line[len(RESULT_PREFIX):]))
            except json.JSONDecodeError:
                print(f"unreadable result line: {line!r}", file=sys.stderr)
    return found
