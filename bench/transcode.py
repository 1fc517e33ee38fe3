"""Transcoding: the worker's whole job beside the identical ffmpeg command run directly, beside one ffmpeg process
per rung, and beside a plain one-pass ladder, on the same source, interleaved.

- worker: transcode_worker.media.pipeline.transcode() into a local store (faststart original; the HLS ladder
  published segment by segment, the thumbnail, poster and storyboard written by the same ffmpeg process; VOD
  playlists): what a job does between taking the message and acking it.
- direct: the very argv the worker runs (LadderPlan.command(): the top rung copied when the source allows it, the
  images as extra outputs), run as it is.
- per rung: the same rungs, one ffmpeg process each, one after another (the naive ladder, no images).
- plain: the issue's reference, every rung encoded by x264 veryfast in one process, no images, no copy.
Reports seconds, × realtime and the ratios (issue 10: worker ÷ direct ≤ 1.05 in time; per rung ÷ worker ≥ 1.3;
the worker ≥ 1.0× realtime), medians of --runs; then (untimed) SSIM and PSNR of every rung against the source,
for the worker's rungs and the plain ladder's.
The default source is camera-like: 1080p30 H.264 High with B-frames, an IDR every second, ≤ 6 Mbit/s, AAC, and
sensor-like grain so that it costs what filmed video costs to encode (testsrc2 alone is far cheaper). `--source`
takes any other file, e.g. one that may not be copied.
Run: .venv/bin/python bench/transcode.py [--seconds 60] [--size 1920x1080] [--runs 5] [--source FILE]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services import keys  # noqa: E402
from services.adapters.local_objects import LocalObjectStore  # noqa: E402
from services.media import probe  # noqa: E402
from transcode_worker.media.facts import video_facts  # noqa: E402
from transcode_worker.media.hls import hls_command  # noqa: E402
from transcode_worker.media.ladder import plan_ladder  # noqa: E402
from transcode_worker.media.pipeline import transcode  # noqa: E402
from transcode_worker.media.plan import plan_job  # noqa: E402
from transcode_worker.media.runner import ffmpeg_binary  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import result  # noqa: E402


def camera_clip(path: Path, seconds: float, size: str) -> Path:
    """A 30 fps H.264/AAC MP4 as a phone or an editor exports it (see the module docstring)."""
    subprocess.run([ffmpeg_binary(), "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
                    "-f", "lavfi", "-i", "sine", "-t", str(seconds), "-vf", "noise=alls=4:allf=t+u",
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", "21", "-maxrate", "6M", "-bufsize", "12M",
                    "-force_key_frames", "expr:gte(t,n_forced)", "-sc_threshold", "0", "-g", "300",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)], check=True, timeout=900)
    return path


def timed(run) -> tuple[float, float]:
    """Wall seconds, and CPU seconds of this process and its children (ffmpeg) while `run` ran: the CPU time
    moves far less with other sessions' load than the wall time."""
    start = time.perf_counter()
    before = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    run()
    after = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before, strict=True))
    return time.perf_counter() - start, cpu


def quality(rendition: Path, source: Path, width: int, height: int, seconds: float) -> tuple[float, float]:
    """(SSIM, PSNR dB) of a rendition against the source scaled to its size, frame by frame over its first
    `seconds`."""
    graph = (f"[0:v]setpts=PTS-STARTPTS[a];[1:v]scale={width}:{height},setsar=1,setpts=PTS-STARTPTS[b];"
             "[a]split[a1][a2];[b]split[b1][b2];[a1][b1]ssim;[a2][b2]psnr")
    run = subprocess.run([ffmpeg_binary(), "-hide_banner", "-nostdin", "-i", str(rendition), "-i", str(source),
                          "-lavfi", graph, "-t", str(seconds), "-f", "null", "-"], capture_output=True, text=True,
                         check=True)
    ssim = float(re.search(r"SSIM .* All:([\d.]+)", run.stderr).group(1))
    psnr = re.search(r"PSNR .* average:([\d.]+|inf)", run.stderr).group(1)
    return ssim, float(psnr)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--source", type=Path, help="transcode this file instead of the generated one")
    parser.add_argument("--no-quality", action="store_true", help="skip the SSIM/PSNR comparison")
    parser.add_argument("--quality-seconds", type=float, default=20,
                        help="SSIM/PSNR over this many seconds from the start (each rung costs ~1/4 of realtime)")
    parser.add_argument("--reference-runs", type=int, default=1,
                        help="runs of the plain-ladder reference (no target rides on it; it costs a run's third)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-transcode-", dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        source = args.source or camera_clip(work / "source.mp4", args.seconds, args.size)
        media = probe(str(source))
        seconds = media.duration
        (work / "plan").mkdir()
        plan = plan_job(str(source), media, video_facts(str(source)), work / "plan")
        store = LocalObjectStore(work / "objects")

        def worker() -> None:
            transcode(store, str(source), media, "bench", "v1", work_dir=work / "job")

        def direct() -> None:
            out = work / "direct"
            shutil.rmtree(out, ignore_errors=True)
            subprocess.run(plan.command(str(source), out, media), check=True, stdout=subprocess.DEVNULL)

        def per_rung() -> None:
            for index, rung in enumerate(plan.rungs):
                out = work / f"rung-{rung.name}"
                shutil.rmtree(out, ignore_errors=True)
                copied = plan.passthrough if index == 0 else None
                subprocess.run(hls_command(str(source), out, [rung], media, passthrough=copied), check=True,
                               stdout=subprocess.DEVNULL)

        def plain() -> None:
            out = work / "plain"
            shutil.rmtree(out, ignore_errors=True)
            subprocess.run(hls_command(str(source), out, plan_ladder(media), media), check=True,
                           stdout=subprocess.DEVNULL)

        variants = {"worker": worker, "direct": direct, "per_rung": per_rung, "plain": plain}
        times: dict[str, list[float]] = {key: [] for key in variants}
        cpus: dict[str, list[float]] = {key: [] for key in variants}
        loads = []
        for run in range(args.runs):  # interleaved, and each run in another order: all see the same machine
            order = list(variants)[run % len(variants):] + list(variants)[:run % len(variants)]
            for key in order:
                if key == "plain" and len(times["plain"]) >= max(1, args.reference_runs):
                    continue
                wall, cpu = timed(variants[key])
                times[key].append(wall)
                cpus[key].append(cpu)
            loads.append(os.getloadavg()[0])
        scores = {}
        if not args.no_quality:
            for rung in plan_ladder(media):
                ours = store.local_path(keys.hls_rendition_key("bench", "v1", rung.name, "index.m3u8"))
                scores[rung.name] = (quality(ours, source, rung.width, rung.height, args.quality_seconds),
                                     quality(work / "plain" / rung.name / "index.m3u8", source, rung.width,
                                             rung.height, args.quality_seconds))
    median = {k: statistics.median(v) for k, v in times.items()}
    load = f"load {min(loads):.1f}–{max(loads):.1f}"
    copied = f"top rung {plan.rungs[0].name} copied" if plan.passthrough else "every rung encoded"
    print(f"\n{seconds:.0f} s {media.width}x{media.height} {media.video_codec} source "
          f"({(media.bit_rate or 0) / 1e6:.1f} Mbit/s), rungs {', '.join(r.name for r in plan.rungs)} ({copied}), "
          f"median of {args.runs} interleaved runs, {os.cpu_count()} cores, {load}\n")
    cpu = {k: statistics.median(v) for k, v in cpus.items()}
    print("| | seconds | × realtime | CPU seconds | each run (s) |")
    print("|---|---|---|---|---|")
    for label, key in (("worker (whole job)", "worker"), ("the same ffmpeg command, direct", "direct"),
                       ("one ffmpeg per rung", "per_rung"), ("plain one-pass veryfast ladder (reference)", "plain")):
        runs = ", ".join(f"{t:.1f}" for t in times[key])
        print(f"| {label} | {median[key]:.1f} | {seconds / median[key]:.2f} | {cpu[key]:.1f} | {runs} |")
    print(f"\nCPU-bound estimate on {os.cpu_count()} idle cores (CPU seconds ÷ cores): worker "
          f"{seconds * (os.cpu_count() or 1) / cpu['worker']:.2f}× realtime, plain ladder "
          f"{seconds * (os.cpu_count() or 1) / cpu['plain']:.2f}×; worker ÷ direct in CPU "
          f"{cpu['worker'] / cpu['direct']:.3f}, per rung ÷ worker in CPU {cpu['per_rung'] / cpu['worker']:.2f}")
    if scores:
        print(f"\nQuality over the first {args.quality_seconds:.0f} s:\n")
        print("| rung | SSIM worker | SSIM plain | PSNR worker | PSNR plain |")
        print("|---|---|---|---|---|")
        for name, ((ssim, psnr), (plain_ssim, plain_psnr)) in scores.items():
            print(f"| {name} | {ssim:.4f} | {plain_ssim:.4f} | {psnr:.2f} dB | {plain_psnr:.2f} dB |")
    print()
    text = {key: f"{value:.1f} s" for key, value in median.items()}
    result("transcode", "worker ÷ the same ffmpeg command direct (time)", median["worker"] / median["direct"],
           "<= 1.05", ours=text["worker"], baseline=text["direct"], runs=args.runs, note=load)
    result("transcode", "one ffmpeg per rung ÷ the worker (time)", median["per_rung"] / median["worker"], ">= 1.3",
           ours=text["worker"], baseline=text["per_rung"], runs=args.runs, note=load)
    result("transcode", "worker's whole job, × realtime", seconds / median["worker"], ">= 1.0",
           ours=text["worker"], baseline=f"{seconds:.0f} s of video", runs=args.runs, note=f"{copied}; {load}")
    result("transcode", "plain veryfast ladder (reference), × realtime", seconds / median["plain"], None,
           ours=text["plain"], baseline=f"{seconds:.0f} s of video", runs=len(times["plain"]), note=load)


if __name__ == "__main__":
    main()
