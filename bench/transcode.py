"""Transcoding: the worker's whole job beside the identical ffmpeg ladder command run directly, and beside one
ffmpeg process per rung (the naive ladder), on the same source, interleaved.

- worker: transcode_worker.media.pipeline.transcode() into a local store (faststart original, thumbnail and
  poster, the HLS ladder published segment by segment, storyboard, VOD playlists): what a job does between
  taking the message and acking it.
- direct: the argv of hls_command() for the same rungs, run as it is (the ladder alone).
- per rung: hls_command() with one rung at a time, the processes run one after another.
Reports seconds, × realtime and the ratios (issue 10: worker ÷ direct ≤ 1.05 in time; per-rung ÷ one-process
≥ 1.3; the ladder ≥ 1.0× realtime). Medians of --runs.
Run: .venv/bin/python bench/transcode.py [--seconds 60] [--size 1920x1080] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services.adapters.local_objects import LocalObjectStore  # noqa: E402
from services.media import probe  # noqa: E402
from services.testing import make_clip  # noqa: E402
from transcode_worker.media.hls import hls_command  # noqa: E402
from transcode_worker.media.ladder import plan_ladder  # noqa: E402
from transcode_worker.media.pipeline import transcode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import result  # noqa: E402


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-transcode-", dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        source = make_clip(work / "source.mp4", args.seconds, args.size, preset="veryfast")
        media = probe(str(source))
        rungs = plan_ladder(media)
        store = LocalObjectStore(work / "objects")

        def worker() -> None:
            transcode(store, str(source), media, "bench", "v1", work_dir=work / "job")

        def direct() -> None:
            out = work / "direct"
            shutil.rmtree(out, ignore_errors=True)
            subprocess.run(hls_command(str(source), out, rungs, media), check=True, stdout=subprocess.DEVNULL)

        def per_rung() -> None:
            for rung in rungs:
                out = work / f"rung-{rung.name}"
                shutil.rmtree(out, ignore_errors=True)
                subprocess.run(hls_command(str(source), out, [rung], media), check=True, stdout=subprocess.DEVNULL)

        times: dict[str, list[float]] = {"worker": [], "direct": [], "per_rung": []}
        for _ in range(args.runs):  # interleaved: all three see the same machine
            times["direct"].append(timed(direct))
            times["worker"].append(timed(worker))
            times["per_rung"].append(timed(per_rung))
    median = {k: statistics.median(v) for k, v in times.items()}
    load = os.getloadavg()[0]
    print(f"\n{args.seconds:.0f} s {args.size} H.264 source, rungs {', '.join(r.name for r in rungs)}, "
          f"median of {args.runs} interleaved runs, {os.cpu_count()} cores, load {load:.1f}\n")
    print("| | seconds | × realtime |")
    print("|---|---|---|")
    for label, key in (("worker (whole job)", "worker"), ("the same ladder command, direct", "direct"),
                       ("one ffmpeg per rung", "per_rung")):
        print(f"| {label} | {median[key]:.1f} | {args.seconds / median[key]:.2f} |")
    seconds = {key: f"{value:.1f} s" for key, value in median.items()}
    result("transcode", "worker ÷ the same ladder command direct (time)", median["worker"] / median["direct"],
           "<= 1.05", ours=seconds["worker"], baseline=seconds["direct"], runs=args.runs, note=f"load {load:.1f}")
    result("transcode", "one ffmpeg per rung ÷ one process (time)", median["per_rung"] / median["direct"], ">= 1.3",
           ours=seconds["direct"], baseline=seconds["per_rung"], runs=args.runs, note=f"load {load:.1f}")
    result("transcode", "worker's whole job, × realtime", args.seconds / median["worker"], ">= 1.0",
           ours=seconds["worker"], baseline=f"{args.seconds:.0f} s of video", runs=args.runs,
           note=f"load {load:.1f}")


if __name__ == "__main__":
    main()
