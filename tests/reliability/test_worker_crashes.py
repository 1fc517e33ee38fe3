"""Worker crashes: transcode jobs while a killer thread SIGKILLs the worker processes (and their ffmpeg) at random
moments on a `make cluster` topology; the supervisor starts them again, as a Deployment would.

Then every video is `ready` (none `failed`), and each rung's playlist is whole: VOD, every segment named once,
fetchable and non-empty, #EXTINF and the decoded media both as long as the source, and no stray segment objects
left in the store by a killed run.

The contract counts a crash as an attempt (a job that keeps killing its worker is a poison message and must end
`failed` after JOB_MAX_ATTEMPTS, 3 by default). So the killer never kills a worker while that would take a job
past its last attempt: it skips that moment (logged). It picks its victim among the workers running a job at
that moment. Everything else is random, from a seed that is printed (REELHOUSE_CRASH_SEED=<seed> replays the
same choices).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from services.testing import ClusterDeployment, check_vod, make_clip, register_account, soak, tus_upload, wait_videos

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

JOBS = soak(3, 10)
CLIP_SECONDS = soak(6, 12)
MAX_KILLS = soak(3, 12)
KILL_GAP = soak((0.5, 2.5), (2.0, 8.0))  # seconds between kills, uniform
MAX_ATTEMPTS = 3  # JOB_MAX_ATTEMPTS: the default, not raised for this test
WORKERS = ("worker-1", "worker-2")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    running = ClusterDeployment(tmp_path_factory.mktemp("crashes"))
    try:
        yield running
    finally:
        running.stop()


class Killer(threading.Thread):
    """SIGKILLs a worker's process group every KILL_GAP seconds, at most `budget` times. The victim is drawn at
    random among the workers running a job at that moment (any worker when none is): short jobs on a quiet
    machine are over within seconds, and a kill of an idle worker proves little."""

    def __init__(self, cluster: ClusterDeployment, video_ids: list[str], seed: int, budget: int):
        super().__init__(name="worker-killer", daemon=True)
        self.cluster, self.video_ids, self.budget = cluster, video_ids, budget
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.kills: list[dict] = []
        self.skipped: list[dict] = []
        self.started = time.monotonic()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while len(self.kills) < self.budget and not self.stop.wait(self.rng.uniform(*KILL_GAP)):
                self.kill_one()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def kill_one(self) -> None:
        records = self.records()
        holders = {_holder(r) for r in records.values() if r["status"] == "processing"}
        busy = [name for name in WORKERS if self.cluster.service(name)["pid"] in holders]
        victim = self.rng.choice(busy or WORKERS)
        pid = self.cluster.service(victim)["pid"]
        hit = [v for v, r in records.items() if r["status"] == "processing" and _holder(r) == pid]
        risky = [v for v, r in records.items() if self.last_attempt(r, pid)]
        moment = round(time.monotonic() - self.started, 2)
        if risky:
            self.skipped.append({"t": moment, "worker": victim, "last_attempt": risky})
            return
        try:
            os.killpg(pid, signal.SIGKILL)  # the worker and its ffmpeg, as a node failure would
        except ProcessLookupError:
            return  # already dead: the supervisor is starting it again
        self.kills.append({"t": moment, "worker": victim, "pid": pid, "hit": hit,
                           "attempts": {v: records[v].get("attempt") for v in hit}})

    def last_attempt(self, record: dict, victim_pid: int) -> bool:
        """Would killing `victim_pid` now (or once it takes this job) use up the job's last attempt?"""
        if record["status"] not in ("uploaded", "processing"):
            return False
        attempt = record.get("attempt") or 0
        holder = _holder(record)
        if record["status"] == "processing" and holder in self.live_worker_pids():
            return holder == victim_pid and attempt >= MAX_ATTEMPTS
        # Waiting for (re)delivery: the victim may take it as attempt + 1 any moment now.
        return attempt + 1 >= MAX_ATTEMPTS

    def live_worker_pids(self) -> set[int]:
        pids = {self.cluster.service(name)["pid"] for name in WORKERS}
        return {pid for pid in pids if _running(pid)}

    def records(self) -> dict[str, dict]:
        from services.adapters.sqlite_metadata import SqliteMetadataStore

        store = SqliteMetadataStore(self.cluster.dir / "data" / "reelhouse.db")
        try:
            return {v: store.videos.get(v) or {"status": "gone"} for v in self.video_ids}
        finally:
            store.close()


def _running(pid: int) -> bool:
    """Alive, not a killed process the supervisor has not reaped yet (a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _holder(record: dict) -> int | None:
    """The pid of the worker process the record says runs its job (`worker` is host:pid)."""
    worker = str(record.get("worker") or "")
    return int(worker.rsplit(":", 1)[1]) if ":" in worker else None


def _stray_hls_objects(cluster: ClusterDeployment, video: dict, rungs: dict) -> list[str]:
    """Objects under the video's HLS prefix beyond the master, each rung's playlist, init and listed segments."""
    import boto3

    from services import keys

    s3 = boto3.client("s3", endpoint_url=cluster.state["s3_endpoint"], region_name="us-east-1",
                      aws_access_key_id="cluster", aws_secret_access_key="cluster-secret")  # noqa: S106
    prefix = keys.hls_prefix(video["tenant_id"], video["id"])
    found = [item["Key"][len(prefix):] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket="reelhouse", Prefix=prefix) for item in page.get("Contents", [])]
    expected = {"master.m3u8"}
    for rung, info in rungs.items():
        expected |= {f"{rung}/index.m3u8", f"{rung}/init.mp4"}
        expected |= {f"{rung}/seg_{n:05d}.m4s" for n in range(info["segments"] + 1)}  # numbering from 0 or 1
    return sorted(name.lstrip("/") for name in found if name.lstrip("/") not in expected)


def test_jobs_survive_workers_killed_at_random_moments(cluster, tmp_path):
    seed = int(os.environ.get("REELHOUSE_CRASH_SEED") or random.SystemRandom().randrange(1 << 31))
    print(f"worker-crash seed: {seed} (REELHOUSE_CRASH_SEED={seed} replays it)")
    account = register_account(cluster.url)
    clips = [make_clip(tmp_path / f"clip-{n}.mp4", CLIP_SECONDS + n % 3, "640x360") for n in range(JOBS)]
    restarts_before = {name: cluster.service(name)["restarts"] for name in WORKERS}
    started = time.monotonic()
    video_ids = [tus_upload(cluster.url, account["token"], clip, f"Crash {n}") for n, clip in enumerate(clips)]
    killer = Killer(cluster, video_ids, seed, MAX_KILLS)
    _wait_for_processing(killer)  # the first kill must find work to interrupt
    killer.start()
    try:
        records = wait_videos(cluster.url, account["token"], video_ids, timeout=soak(240, 900))
    finally:
        killer.stop.set()
        killer.join(30)
    elapsed = time.monotonic() - started
    assert killer.error is None, killer.error
    print(f"kills: {killer.kills}\nskipped (last attempt): {killer.skipped}")
    assert {v: r["status"] for v, r in records.items()} == dict.fromkeys(video_ids, "ready"), records
    interrupted = {v for kill in killer.kills for v in kill["hit"]}
    assert interrupted, f"no kill hit a running job: {killer.kills}"
    restarts = _restarts_since(cluster, restarts_before, len(killer.kills))  # every killed worker came back

    auth = {"Authorization": f"Bearer {account['token']}"}
    internal = killer.records()  # the attempt that finished each job is not in the public record
    for video_id in video_ids:
        video = requests.get(f"{cluster.url}/api/videos/{video_id}", headers=auth, timeout=30).json()
        rungs = check_vod(cluster.url, video)
        assert {r["name"] for r in video["renditions"]} <= set(rungs), (video["renditions"], rungs)
        assert _stray_hls_objects(cluster, internal[video_id], rungs) == [], video_id
        print(f"{video_id}: attempt {internal[video_id].get('attempt')}, "
              f"{'interrupted' if video_id in interrupted else 'clean'}, rungs {rungs}")
    print(f"{JOBS} jobs, {len(killer.kills)} kills ({len(interrupted)} jobs interrupted), restarts {restarts}, "
          f"all ready in {elapsed:.1f} s")


def _restarts_since(cluster: ClusterDeployment, before: dict[str, int], kills: int, timeout: float = 30) -> dict:
    """Worker restarts by the supervisor since `before`, once they add up to `kills` (the last may be recent)."""
    deadline = time.monotonic() + timeout
    while True:
        restarts = {name: cluster.service(name)["restarts"] - before[name] for name in WORKERS}
        if sum(restarts.values()) >= kills:
            return restarts
        assert time.monotonic() < deadline, f"{kills} kills but restarts {restarts}"
        time.sleep(0.5)


def _wait_for_processing(killer: Killer, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(r["status"] == "processing" for r in killer.records().values()):
            return
        time.sleep(0.2)
    raise AssertionError(f"no job started within {timeout} s")
