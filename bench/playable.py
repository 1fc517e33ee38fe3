"""Time to playable, the headline figure: from the last upload byte acknowledged to the video playing.

Against `reelhouse up` (what `make run` starts), a client that polls nothing: it uploads over tus, listens to
Socket.IO, and fetches only when an event says something changed (`video.status`, `video.playable`):
- (a) a 60 s H.264/AAC MP4: until a range of `original_url` has arrived (206);
- (b) a 60 s HEVC MKV (no browser plays it as it is): until the master playlist, a rung's playlist, its init
  segment and first media segment have arrived.
Baseline in the same run, for (b): a plain one-pass ffmpeg ladder (x264 veryfast, 1080/720/480/360/240, 2 s
segments) on the same file, timed from its start until every rung's playlist lists a first segment.
Every fetched result is then checked to decode (untimed). Medians of --runs, interleaved.
Targets (issue 10): median (a) ≤ 1 s, (b) ≤ 2 s on a 2-core machine.
Run: .venv/bin/python bench/playable.py [--seconds 60] [--size 1920x1080] [--runs 5]
"""

from __future__ import annotations

import argparse
import base64
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urljoin

import requests
import socketio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services.testing import ReelhouseProcess, register_account  # noqa: E402
from transcode_worker.media.runner import ffmpeg_binary  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import result  # noqa: E402

TARGETS = {"original": 1.0, "hls": 2.0}
LADDER = [(1080, "4500k"), (720, "2500k"), (480, "1000k"), (360, "600k"), (240, "300k")]


def make_source(path: Path, seconds: float, size: str, codec: str) -> Path:
    """A test-pattern clip: a short piece encoded once, then repeated by stream copy (fast even for HEVC 1080p)."""
    piece = path.with_name(f"piece-{path.name}")
    video = ["-c:v", "libx264", "-preset", "veryfast"] if codec == "h264" else [
        "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error", "-tag:v", "hvc1"]
    piece_seconds = min(seconds, 6)
    subprocess.run([ffmpeg_binary(), "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(piece_seconds),
                    *video, "-g", "60", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(piece)],
                   check=True, timeout=600)
    loops = max(0, round(seconds / piece_seconds) - 1)
    extra = ["-movflags", "+faststart"] if path.suffix == ".mp4" else []
    subprocess.run([ffmpeg_binary(), "-v", "error", "-y", "-stream_loop", str(loops), "-i", str(piece), "-c", "copy",
                    *extra, str(path)], check=True, timeout=600)
    piece.unlink()
    return path


class Client:
    """One viewer-uploader: a Socket.IO connection whose events land in a queue, and a requests session."""

    def __init__(self, url: str, token: str):
        self.url, self.token = url, token
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.events: queue.Queue = queue.Queue()
        self.sio = socketio.Client(reconnection=False)
        for name in ("video.status", "video.playable", "video.ready", "video.failed"):
            self.sio.on(name, self._recorder(name))
        self.sio.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=15)

    def _recorder(self, name: str):
        def record(data: dict) -> None:
            self.events.put((time.monotonic(), name, data))
        return record

    def upload(self, path: Path, title: str) -> tuple[str, float]:
        """tus: create, then PATCHes of 64 MiB; returns the video id and when the last byte was acknowledged."""
        data = path.read_bytes()
        tus = {"Tus-Resumable": "1.0.0"}
        created = self.http.post(self.url + "/api/uploads", timeout=30, headers={
            **tus, "Upload-Length": str(len(data)),
            "Upload-Metadata": f"title {base64.b64encode(title.encode()).decode()},"
                               f"filename {base64.b64encode(path.name.encode()).decode()}"})
        created.raise_for_status()
        location = created.headers["Location"]
        step = 64 * 1024 * 1024
        for offset in range(0, len(data), step):
            done = self.http.patch(self.url + location, data=data[offset:offset + step], timeout=300, headers={
                **tus, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
            if done.status_code != 204:
                raise SystemExit(f"PATCH answered {done.status_code}: {done.text}")
        return location.rsplit("/", 1)[1], time.monotonic()

    def wait_playable(self, video_id: str, kind: str, timeout: float = 120) -> tuple[float, dict]:
        """Fetch the video whenever one of its events arrives, until `kind` plays; returns (when, fetched)."""
        deadline = time.monotonic() + timeout
        fetched: dict = {}
        check = True  # the event may have come before the upload's last PATCH was answered
        while time.monotonic() < deadline:
            if check:
                video = self.http.get(f"{self.url}/api/videos/{video_id}", timeout=30).json()
                if video["status"] == "failed":
                    raise SystemExit(f"{video_id} failed: {video.get('error')}")
                fetched = self.fetch(video, kind)
                if fetched:
                    return time.monotonic(), fetched
            try:
                _, _, data = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            check = data.get("video_id") == video_id
        raise SystemExit(f"{video_id}: {kind} not playable within {timeout:.0f} s")

    def fetch(self, video: dict, kind: str) -> dict:
        """The bytes a player needs first, or {} if the URL is not there yet."""
        if kind == "original":
            url = video["playback"]["original_url"]
            if not url:
                return {}
            first = self.http.get(self.url + url, headers={"Range": "bytes=0-1048575"}, timeout=30)
            assert first.status_code == 206, first.status_code
            return {"url": self.url + url, "first": first.content}
        url = video["playback"]["hls_url"]
        if not url:
            return {}
        master_url = self.url + url
        master = self.http.get(master_url, timeout=30)
        assert master.status_code == 200, master.status_code
        variant = [line for line in master.text.splitlines() if line and not line.startswith("#")][-1]
        playlist_url = urljoin(master_url, variant)
        playlist = self.http.get(playlist_url, timeout=30)
        assert playlist.status_code == 200, playlist.status_code
        init = next(line.split('URI="')[1].split('"')[0] for line in playlist.text.splitlines()
                    if line.startswith("#EXT-X-MAP"))
        segment = next(line for line in playlist.text.splitlines() if line and not line.startswith("#"))
        parts = [self.http.get(urljoin(playlist_url, uri), timeout=30) for uri in (init, segment)]
        assert all(part.status_code == 200 for part in parts), [part.status_code for part in parts]
        return {"url": master_url, "first": b"".join(part.content for part in parts)}

    def close(self) -> None:
        self.sio.disconnect()


def decodes(data: bytes, work: Path) -> bool:
    """Whether ffmpeg decodes at least one video frame from what the player fetched."""
    sample = work / "sample.bin"
    sample.write_bytes(data)
    run = subprocess.run([ffmpeg_binary(), "-v", "error", "-i", str(sample), "-frames:v", "1", "-f", "null", "-"],
                         capture_output=True, timeout=60)
    return run.returncode == 0


def plain_ladder_first_segment(source: Path, height: int, work: Path) -> float:
    """The baseline: one-pass x264 veryfast ladder with 2 s segments; seconds until every rung has a segment."""
    out = work / "plain"
    shutil.rmtree(out, ignore_errors=True)
    ladder = [(h, b) for h, b in LADDER if h <= height] or LADDER[-1:]
    for index in range(len(ladder)):
        (out / str(index)).mkdir(parents=True)
    split = f"[0:v]split={len(ladder)}" + "".join(f"[s{i}]" for i in range(len(ladder))) + ";" + ";".join(
        f"[s{i}]scale=-2:{h}[v{i}]" for i, (h, _) in enumerate(ladder))
    argv = [ffmpeg_binary(), "-v", "error", "-y", "-i", str(source), "-filter_complex", split]
    for index in range(len(ladder)):
        argv += ["-map", f"[v{index}]", "-map", "0:a"]
    argv += ["-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-sc_threshold", "0", "-c:a", "aac"]
    for index, (_, bitrate) in enumerate(ladder):
        argv += [f"-b:v:{index}", bitrate]
    argv += ["-f", "hls", "-hls_time", "2", "-hls_segment_type", "fmp4", "-hls_playlist_type", "event",
             "-var_stream_map", " ".join(f"v:{i},a:{i}" for i in range(len(ladder))),
             "-hls_segment_filename", str(out / "%v" / "seg_%03d.m4s"), str(out / "%v" / "index.m3u8")]
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while process.poll() is None:
            lists = [out / str(i) / "index.m3u8" for i in range(len(ladder))]
            if all(p.exists() and "#EXTINF" in p.read_text(errors="replace") for p in lists):
                return time.monotonic() - started
            time.sleep(0.01)
        raise SystemExit(f"the plain ladder ended without segments: {process.stderr.read().decode()[-2000:]}")
    finally:
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    height = int(args.size.split("x")[1])
    with tempfile.TemporaryDirectory(prefix="bench-playable-", dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        sources = {"original": make_source(work / "h264.mp4", args.seconds, args.size, "h264"),
                   "hls": make_source(work / "hevc.mkv", args.seconds, args.size, "hevc")}
        server = ReelhouseProcess(work / "data", ACCESS_TOKEN_TTL="86400")  # noqa: S106 - a lifetime, one token for the run
        times: dict[str, list[float]] = {"original": [], "hls": [], "plain": []}
        try:
            account = register_account(server.url)
            client = Client(server.url, account["token"])
            try:
                for run in range(args.runs):  # interleaved: every kind sees the same machine
                    for kind, source in sources.items():
                        video_id, acknowledged = client.upload(source, f"{kind} {run}")
                        when, fetched = client.wait_playable(video_id, kind)
                        times[kind].append(when - acknowledged)
                        print(f"run {run + 1} {kind}: {when - acknowledged:.2f} s", file=sys.stderr, flush=True)
                        if not decodes(fetched["first"], work):
                            raise SystemExit(f"{kind}: what the player fetched does not decode")
                        _discard(client, video_id)
                    times["plain"].append(plain_ladder_first_segment(sources["hls"], height, work))
                    print(f"run {run + 1} plain ladder: {times['plain'][-1]:.2f} s", file=sys.stderr, flush=True)
            finally:
                client.close()
        finally:
            server.stop()
    median = {kind: statistics.median(values) for kind, values in times.items()}
    print(f"\n{args.seconds:.0f} s {args.size} sources, `reelhouse up`, median of {args.runs} interleaved runs, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}\n")
    print("| from last byte acknowledged to | median s | runs (s) | target | met |")
    print("|---|---|---|---|---|")
    rows = (("(a) H.264/AAC MP4: a range of original_url", "original"),
            ("(b) HEVC MKV: master, playlist, init and first segment", "hls"))
    for label, kind in rows:
        runs = ", ".join(f"{t:.2f}" for t in times[kind])
        ok = "yes" if median[kind] <= TARGETS[kind] else "NO"
        print(f"| {label} | {median[kind]:.2f} | {runs} | ≤ {TARGETS[kind]:.0f} s | {ok} |")
    runs = ", ".join(f"{t:.2f}" for t in times["plain"])
    print(f"| baseline: plain ffmpeg ladder (2 s segments), first segment of every rung after start | "
          f"{median['plain']:.2f} | {runs} | | |")
    print(f"\n(b) ÷ plain ladder: {median['hls'] / median['plain']:.2f}")
    result("playable", "(a) H.264/AAC MP4: original_url playable, median s", median["original"],
           f"<= {TARGETS['original']}", ours=f"{median['original']:.2f} s", runs=args.runs)
    result("playable", "(b) HEVC MKV: first HLS segment playable, median s", median["hls"], f"<= {TARGETS['hls']}",
           ours=f"{median['hls']:.2f} s", baseline=f"plain ladder {median['plain']:.2f} s", runs=args.runs)


def _discard(client: Client, video_id: str, timeout: float = 120) -> None:
    """Delete the measured video, which stops its job, and wait until the worker is idle again: every run starts
    on an idle machine, and the run does not wait out a whole 60 s ladder it no longer measures."""
    gone = client.http.delete(f"{client.url}/api/videos/{video_id}", timeout=30)
    if gone.status_code not in (200, 204):
        raise SystemExit(f"DELETE {video_id} answered {gone.status_code}: {gone.text}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = client.http.get(f"{client.url}/metrics", timeout=30).text
        busy = [line for line in metrics.splitlines() if line.startswith("reelhouse_worker_busy_jobs")]
        if busy and all(float(line.split()[-1]) == 0 for line in busy):
            return
        time.sleep(0.2)
    raise SystemExit(f"the worker was still busy {timeout:.0f} s after {video_id} was deleted")

if __name__ == "__main__":
    main()
