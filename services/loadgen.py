"""A bounded load generator for a running Reelhouse, for loopback tests only (tests/reliability/test_load.py).

Plain threads and `requests`, no extra dependency. Two kinds of simulated users:

- a *viewer* plays like an HLS player: the video's API record (fresh playback URLs), the master playlist, one
  rung's media playlist, its init segment and every media segment in order, then a few range requests of the
  original (as a seek in a progressive player would), and again with another video and rung;
- an *uploader* behaves like a user of the web app: a tus upload of a clip (create, PATCHes, a HEAD to check the
  offset), then it follows the video over the API until it is `ready`, then the next upload. So the job queue
  never holds more than one job per uploader and the workers transcode all along.

Every request is timed and recorded by endpoint kind (`KINDS`); a response other than the expected status, a
short body or a transport error is a failure. `ProcessMemory` samples the resident memory of every process of a
`make cluster` topology (each process tree summed: gunicorn master + worker, nginx master + worker; the ffmpeg
children of the transcode workers are counted apart, as `ffmpeg_mib`, since they live only as long as a job).
"""

from __future__ import annotations

import base64
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

import requests

KINDS = ("api", "master_playlist", "media_playlist", "segment", "original_range", "tus_create", "tus_patch",
         "tus_head")
REQUEST_TIMEOUT = 60  # seconds for any one request: a slower answer counts as a failure
_MAP_URI = re.compile(r'#EXT-X-MAP:.*URI="([^"]+)"')


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


class Recorder:
    """Thread-safe tally of every request: latency and bytes per kind, and the failures with what went wrong."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
        self.bytes: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.failures: list[dict] = []
        self.statuses: dict[str, dict[int, int]] = {kind: {} for kind in KINDS}

    def record(self, kind: str, seconds: float, status: int | None, size: int, failure: str | None = None) -> None:
        with self.lock:
            self.latencies[kind].append(seconds)
            self.bytes[kind] += size
            if status is not None:
                self.statuses[kind][status] = self.statuses[kind].get(status, 0) + 1
            if failure:
                self.failures.append({"kind": kind, "status": status, "detail": failure[:300]})

    def summary(self, wall_seconds: float) -> dict:
        """Per kind: requests, failures, p50/p99/max latency (ms), bytes, requests per second; and the totals."""
        with self.lock:
            kinds = {}
            for kind in KINDS:
                values = self.latencies[kind]
                kinds[kind] = {
                    "requests": len(values),
                    "failed": sum(1 for f in self.failures if f["kind"] == kind),
                    "p50_ms": round(percentile(values, 0.50) * 1000, 1),
                    "p99_ms": round(percentile(values, 0.99) * 1000, 1),
                    "max_ms": round(max(values, default=0) * 1000, 1),
                    "mib": round(self.bytes[kind] / 2**20, 2),
                    "per_second": round(len(values) / wall_seconds, 1) if wall_seconds else 0.0,
                    "statuses": {str(k): v for k, v in sorted(self.statuses[kind].items())},
                }
            total = sum(k["requests"] for k in kinds.values())
            return {"kinds": kinds, "requests": total, "failed": len(self.failures),
                    "per_second": round(total / wall_seconds, 1) if wall_seconds else 0.0,
                    "mib": round(sum(self.bytes.values()) / 2**20, 1), "failures": self.failures[:50]}


class Client:
    """One simulated user's HTTP session: every call is timed and checked against the status it expects."""

    def __init__(self, base_url: str, recorder: Recorder, token: str | None = None):
        self.base_url, self.recorder = base_url.rstrip("/"), recorder
        self.session = requests.Session()
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, kind: str, method: str, url: str, expect: int, *,
             check: Callable[[requests.Response], str | None] | None = None, **kwargs) -> requests.Response | None:
        """The response when it has status `expect` and `check` finds nothing wrong with it, else None (a failure)."""
        url = url if url.startswith("http") else self.base_url + url
        started = time.monotonic()
        try:
            response = self.session.request(method, url, timeout=REQUEST_TIMEOUT, **kwargs)
            body = response.content  # the whole body: a truncated one raises (urllib3 enforces Content-Length)
        except requests.RequestException as error:
            self.recorder.record(kind, time.monotonic() - started, None, 0, f"{method} {url}: {error!r}")
            return None
        failure = None
        if response.status_code != expect:
            failure = f"{method} {url}: {response.status_code} (expected {expect}) {body[:200]!r}"
        elif check is not None and (problem := check(response)):
            failure = f"{method} {url}: {problem}"
        self.recorder.record(kind, time.monotonic() - started, response.status_code, len(body), failure)
        return None if failure else response

    def close(self) -> None:
        self.session.close()


class Library:
    """The videos viewers may watch: the seeds, then every upload that becomes ready during the run."""

    def __init__(self, video_ids: list[str]):
        self.lock, self.video_ids = threading.Lock(), list(video_ids)

    def add(self, video_id: str) -> None:
        with self.lock:
            self.video_ids.append(video_id)

    def pick(self, rng: random.Random) -> str:
        with self.lock:
            return rng.choice(self.video_ids)


def media_uris(playlist: str) -> list[str]:
    """The init segment (EXT-X-MAP) then the media segments of a media playlist, in order."""
    uris = [m.group(1) for m in map(_MAP_URI.match, playlist.splitlines()) if m]
    return uris + [line.strip() for line in playlist.splitlines() if line.strip() and not line.startswith("#")]


def watch_once(client: Client, library: Library, rng: random.Random, stop: threading.Event) -> None:
    """One viewing: API record → master → a random rung → init + segments in order → two seeks in the original."""
    record = client.call("api", "GET", f"/api/videos/{library.pick(rng)}", 200, headers=client.auth)
    if record is None or not record.json()["playback"]["hls_url"]:
        return
    playback = record.json()["playback"]
    master_url = urljoin(client.base_url + "/", playback["hls_url"])
    master = client.call("master_playlist", "GET", master_url, 200)
    if master is None:
        return
    rungs = [line.strip() for line in master.text.splitlines() if line.strip() and not line.startswith("#")]
    media_url = urljoin(master_url, rng.choice(rungs))
    media = client.call("media_playlist", "GET", media_url, 200,
                        check=lambda r: None if "#EXT-X-ENDLIST" in r.text else "a ready video's playlist has no end")
    if media is None:
        return
    for uri in media_uris(media.text):
        if stop.is_set():
            return
        if client.call("segment", "GET", urljoin(media_url, uri), 200,
                       check=lambda r: None if r.content else "empty segment") is None:
            return
    seek_original(client, urljoin(client.base_url + "/", playback["original_url"]), rng)


def seek_original(client: Client, url: str, rng: random.Random, span: int = 65536) -> None:
    """The first `span` bytes (which tell the size), then `span` bytes from a random offset: both exact."""
    head = client.call("original_range", "GET", url, 206, check=_exact_range(0, span),
                       headers={"Range": f"bytes=0-{span - 1}"})
    if head is None:
        return
    first = rng.randrange(max(1, _total(head) - span))
    client.call("original_range", "GET", url, 206, check=_exact_range(first, span),
                headers={"Range": f"bytes={first}-{first + span - 1}"})


def _total(response: requests.Response) -> int:
    return int(response.headers.get("Content-Range", "/0").rsplit("/", 1)[1])


def _exact_range(first: int, span: int) -> Callable[[requests.Response], str | None]:
    """A 206 must say `bytes first-last/size` and carry exactly those bytes."""
    def check(response: requests.Response) -> str | None:
        size = _total(response)
        last = min(first + span, size) - 1
        if response.headers.get("Content-Range") != f"bytes {first}-{last}/{size}":
            return f"Content-Range {response.headers.get('Content-Range')!r}, expected bytes {first}-{last}/{size}"
        if len(response.content) != last - first + 1:
            return f"{len(response.content)} bytes, expected {last - first + 1}"
        return None
    return check


def viewer(base_url: str, token: str, library: Library, recorder: Recorder, stop: threading.Event,
           seed: int) -> None:
    client, rng = Client(base_url, recorder, token), random.Random(seed)  # noqa: S311 - not for security
    try:
        while not stop.is_set():
            watch_once(client, library, rng, stop)
    finally:
        client.close()


@dataclass
class UploadResult:
    video_id: str
    started: float
    uploaded_seconds: float  # tus create → last PATCH acknowledged
    ready_seconds: float | None = None  # tus create → the API says ready
    status: str = "uploading"


def tus_once(client: Client, clip: Path, title: str, patch_bytes: int) -> UploadResult | None:
    """One tus upload in PATCHes of `patch_bytes`, then a HEAD that must report the whole length."""
    data, started = clip.read_bytes(), time.monotonic()
    tus = {**client.auth, "Tus-Resumable": "1.0.0"}
    created = client.call("tus_create", "POST", "/api/uploads", 201, headers={
        **tus, "Upload-Length": str(len(data)),
        "Upload-Metadata": f"title {base64.b64encode(title.encode()).decode()},visibility "
                           f"{base64.b64encode(b'tenant').decode()}"})
    if created is None:
        return None
    location = created.headers["Location"]
    for offset in range(0, len(data), patch_bytes):
        if client.call("tus_patch", "PATCH", location, 204, data=data[offset:offset + patch_bytes], headers={
                **tus, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}) is None:
            return None
    whole = str(len(data))
    head = client.call("tus_head", "HEAD", location, 200, headers=tus, check=lambda r: None if r.headers.get(
        "Upload-Offset") == whole else f"Upload-Offset {r.headers.get('Upload-Offset')}, expected {whole}")
    if head is None:
        return None
    return UploadResult(location.rstrip("/").rsplit("/", 1)[1], started, time.monotonic() - started)


def follow(client: Client, result: UploadResult, deadline: float, poll: float = 1.0) -> None:
    """Polls the video's record (as the web app would) until it is ready or failed, or the deadline passes."""
    while time.monotonic() < deadline:
        response = client.call("api", "GET", f"/api/videos/{result.video_id}", 200, headers=client.auth)
        if response is not None:
            result.status = response.json()["status"]
            if result.status in ("ready", "failed"):
                result.ready_seconds = time.monotonic() - result.started
                return
        time.sleep(poll)


def uploader(base_url: str, token: str, clips: list[Path], library: Library, recorder: Recorder,
             stop: threading.Event, results: list[UploadResult], follow_until: float, index: int,
             patch_bytes: int = 256 * 1024) -> None:
    """Upload, follow it to ready, repeat until `stop`; the last one is followed until `follow_until` at most."""
    client, count = Client(base_url, recorder, token), 0
    try:
        while not stop.is_set():
            result = tus_once(client, clips[(index + count) % len(clips)], f"load {index}.{count}", patch_bytes)
            count += 1
            if result is None:  # recorded as a failure; pause, as a client would before trying again
                stop.wait(1.0)
                continue
            results.append(result)
            follow(client, result, follow_until)
            if result.status == "ready":
                library.add(result.video_id)
    finally:
        client.close()


# --- memory -----------------------------------------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:  # gone meanwhile
        pass
    return found


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (its children's not included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its live descendants (gunicorn master + worker), seconds."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        total += _cpu_seconds(current)
        pending += _children(current)
    return round(total, 1)


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def tree_rss_mib(pid: int, children_are_jobs: bool = False) -> tuple[float, float]:
    """(RSS of the process and its descendants, RSS of its job processes), MiB.

    Job processes live only as long as a job: ffmpeg, and with `children_are_jobs` (a transcode worker) every
    child, since a child is briefly a fork of the worker (copying its RSS) before it executes ffmpeg."""
    own, transient = _rss_kib(pid), 0
    pending = [(child, children_are_jobs) for child in _children(pid)]
    while pending:
        current, job = pending.pop()
        job = job or "ffmpeg" in _name(current)
        if job:
            transient += _rss_kib(current)
        else:
            own += _rss_kib(current)
        pending += [(child, job) for child in _children(current)]
    return round(own / 1024, 1), round(transient / 1024, 1)


@dataclass
class ProcessMemory:
    """Samples the RSS of every process of a cluster (`cluster.json`'s services, moto's S3 server) over time."""

    state: Callable[[], dict]  # () -> the cluster's state dict (pids may change when the supervisor restarts one)
    series: list[dict] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def sample(self) -> dict:
        current = self.state()
        pids = {name: service["pid"] for name, service in current["services"].items() if service.get("pid")}
        if current.get("s3_pid"):
            pids["s3 (moto)"] = current["s3_pid"]
        rss, cpu, ffmpeg = {}, {}, 0.0
        for name, pid in sorted(pids.items()):
            rss[name], transient = tree_rss_mib(pid, children_are_jobs=name.startswith("worker"))
            cpu[name] = tree_cpu_seconds(pid)
            ffmpeg += transient
        cpu["load generator"] = round(sum(os.times()[:2]), 1)  # this process: the simulated users' threads
        entry = {"t": round(time.monotonic() - self.started, 1), "rss_mib": rss, "ffmpeg_mib": round(ffmpeg, 1),
                 "cpu_s": cpu, "pids": pids}
        self.series.append(entry)
        return entry

    def every(self, interval: float, stop: threading.Event) -> threading.Thread:
        """Samples every `interval` seconds in a thread until `stop` is set."""
        def loop() -> None:
            while not stop.wait(interval):
                self.sample()
        thread = threading.Thread(target=loop, name="memory-sampler", daemon=True)
        thread.start()
        return thread


def slope_mib_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) points, in MiB per minute."""
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_m = sum(m for _, m in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if not spread:
        return 0.0
    return sum((t - mean_t) * (m - mean_m) for t, m in points) / spread * 60


def trends(series: list[dict], since: float, until: float = float("inf")) -> dict[str, float]:
    """Per process, the slope (MiB/min) of its RSS over the samples taken from `since` to `until` seconds.

    A process restarted meanwhile (another pid) would show a false trend: only samples of its last pid count."""
    names = sorted({name for entry in series for name in entry["rss_mib"]})
    slopes = {}
    for name in names:
        last_pid = series[-1]["pids"].get(name)
        points = [(e["t"], e["rss_mib"][name]) for e in series
                  if since <= e["t"] <= until and name in e["rss_mib"] and e["pids"].get(name) == last_pid]
        slopes[name] = round(slope_mib_per_minute(points), 2)
    return slopes
