"""The worker runtime on fakes: job outcomes, retries, dead letters, deletion, shutdown and lanes.

The media pipeline is replaced by a scripted fake here; the real one is exercised in the media and end-to-end
tests."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest

from services import keys
from services.adapters.memory_jobs import MemoryJobQueue
from services.bootstrap import bootstrap
from services.media import MediaError
from services.videos import new_video
from transcode_worker import job as job_module
from transcode_worker.job import handle
from transcode_worker.worker import Worker, recover_unfinished


@dataclass
class FakeRung:
    name: str
    width: int
    height: int
    video_bitrate: int

    def as_rendition(self) -> dict:
        return {"name": self.name, "width": self.width, "height": self.height, "bitrate": self.video_bitrate}


@dataclass
class FakeResult:
    renditions: list = field(default_factory=lambda: [{"name": "360p", "width": 640, "height": 360,
                                                       "bitrate": 800_000}])
    duration: float = 2.0
    width: int = 640
    height: int = 360
    outputs: dict = field(default_factory=lambda: {"master": "hls/master.m3u8"})
    original_playable: bool = True


class Script:
    """What the fake pipeline does on each call: succeed, raise, or run until cancelled."""

    def __init__(self, deps, *steps):
        self.deps, self.steps, self.calls = deps, list(steps), 0

    def __call__(self, deps, source_key, tenant_id, video_id, report, cancel):
        self.calls += 1
        step = self.steps.pop(0) if self.steps else "ok"
        deps.objects.put(keys.hls_master_key(tenant_id, video_id), b"#EXTM3U\n")
        report.progress("transcode", 10)
        if isinstance(step, Exception):
            raise step
        if step == "block":
            while not cancel.wait(0.05):
                report.progress("transcode", 50)
                time.sleep(0.6)
            raise RuntimeError("ffmpeg was killed")
        if step == "slow":
            time.sleep(1.0)
        report.original_ready()
        report.rendition_ready(FakeRung("360p", 640, 360, 800_000))
        report.progress("transcode", 100)
        return FakeResult()


@pytest.fixture
def deps(make_config):
    deps = bootstrap(make_config(JOB_MAX_ATTEMPTS="3"), jobs=MemoryJobQueue())
    yield deps
    deps.close()


@pytest.fixture
def events(deps):
    received = []
    deps.events.subscribe(lambda topic, event: received.append((topic, event)))
    return received


def queued_video(deps, lane="express", status="uploaded"):
    video = deps.metadata.videos.add({**new_video("t1", "u1", "clip"), "status": status, "duration": 2.0})
    deps.objects.put(keys.original_key("t1", video["id"]), b"source")
    deps.jobs.publish({"type": "transcode", "video_id": video["id"], "tenant_id": "t1",
                       "source_key": keys.original_key("t1", video["id"])}, lane=lane)
    return video


def take(deps, timeout=2.0):
    """The next delivery, unsettled (taken by a consumer that hands it straight back to the test)."""
    box, stop = [], threading.Event()

    def grab(delivery):
        box.append(delivery)
        stop.set()
        done.wait(timeout=30)

    done = threading.Event()
    thread = threading.Thread(target=deps.jobs.consume, args=(grab, stop), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not box and time.monotonic() < deadline:
        time.sleep(0.01)
    return box[0] if box else None, done


def run_one(deps, script, cancel=None):
    delivery, done = take(deps)
    assert delivery is not None, "no job was queued"
    original = job_module._transcode
    job_module._transcode = script
    try:
        handle(deps, delivery, cancel or threading.Event())
    finally:
        job_module._transcode = original
        done.set()
    return delivery


def test_a_job_ends_ready_with_events_in_order(deps, events):
    video = queued_video(deps)
    delivery = run_one(deps, Script(deps))
    assert delivery.settled
    stored = deps.metadata.videos.get(video["id"])
    assert stored["status"] == "ready" and stored["progress"] == 100
    assert stored["renditions"] == [{"name": "360p", "width": 640, "height": 360, "bitrate": 800_000}]
    names = [topic for topic, _ in events]
    assert names[0] == "video.status" and events[0][1]["status"] == "processing"
    assert "video.progress" in names and "video.rendition_ready" in names
    assert names[-2:] == ["video.status", "video.ready"] and events[-2][1]["status"] == "ready"
    seqs = [event["seq"] for _, event in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(event["tenant_id"] == "t1" and event["video_id"] == video["id"] for _, event in events)
    assert deps.jobs.pending() == 0


def test_bad_media_fails_at_once_without_retries(deps, events):
    video = queued_video(deps)
    script = Script(deps, MediaError("The file has no video stream."))
    run_one(deps, script)
    stored = deps.metadata.videos.get(video["id"])
    assert stored["status"] == "failed" and stored["error"] == "The file has no video stream."
    assert script.calls == 1 and deps.jobs.pending() == 0 and deps.jobs.dead_letters == []
    assert list(deps.objects.list(keys.video_prefix("t1", video["id"]))) == []
    assert ("video.failed", "The file has no video stream.") in [(t, e.get("error")) for t, e in events]


def test_transient_failures_retry_then_dead_letter(deps, monkeypatch):
    video = queued_video(deps)
    script = Script(deps, RuntimeError("S3 said 503"), RuntimeError("S3 said 503"), RuntimeError("disk on fire"))
    retries = []
    monkeypatch.setattr(job_module, "RETRY_BASE_SECONDS", 0.02)
    for attempt in (1, 2, 3):
        delivery = run_one(deps, script)
        assert delivery.attempt == attempt
        retries.append(deps.metadata.videos.get(video["id"])["status"])
        time.sleep(0.1)
    assert retries == ["processing", "processing", "failed"]
    stored = deps.metadata.videos.get(video["id"])
    assert stored["error"] == "Processing failed after 3 attempts: disk on fire"
    assert deps.jobs.dead_letters and deps.jobs.dead_letters[0]["video_id"] == video["id"]


def test_a_video_deleted_while_processing_is_dropped_and_cleaned(deps, events):
    video = queued_video(deps)
    cancel = threading.Event()

    def delete_soon():
        time.sleep(0.3)
        deps.metadata.videos.delete(video["id"])

    threading.Thread(target=delete_soon).start()
    monkeypatch_interval = job_module.DELETED_CHECK_INTERVAL
    job_module.DELETED_CHECK_INTERVAL = 0.1
    try:
        delivery = run_one(deps, Script(deps, "block"), cancel)
    finally:
        job_module.DELETED_CHECK_INTERVAL = monkeypatch_interval
    assert delivery.settled and deps.jobs.pending() == 0 and deps.jobs.dead_letters == []
    assert list(deps.objects.list(keys.video_prefix("t1", video["id"]))) == []
    assert not [e for t, e in events if t in ("video.failed", "video.ready")]


def test_duplicate_delivery_of_a_finished_job_changes_nothing(deps):
    video = queued_video(deps)
    deps.metadata.videos.update(video["id"], {"status": "ready"})
    script = Script(deps)
    run_one(deps, script)
    assert script.calls == 0 and deps.metadata.videos.get(video["id"])["status"] == "ready"


def test_jobs_for_missing_videos_are_dropped(deps):
    deps.jobs.publish({"type": "transcode", "video_id": "gone", "tenant_id": "t1"})
    script = Script(deps)
    delivery = run_one(deps, script)
    assert delivery.settled and script.calls == 0 and deps.jobs.pending() == 0


def test_shutdown_hands_running_jobs_back_and_restart_recovers(deps):
    video = queued_video(deps)
    original = job_module._transcode
    script = Script(deps, "block")
    job_module._transcode = script
    try:
        worker = Worker(deps, 1).start()
        deadline = time.monotonic() + 5
        while deps.metadata.videos.get(video["id"])["status"] != "processing" and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        worker.stop(grace=0.5)
        assert time.monotonic() - started < 5
    finally:
        job_module._transcode = original
    assert deps.metadata.videos.get(video["id"])["status"] == "processing"
    assert deps.jobs.pending() == 1  # handed back, not lost
    again, done = take(deps)
    assert again.attempt == 1 and again.redelivered  # a shutdown did not spend one of the job's attempts
    again.release()
    done.set()
    # A restarted embedded process starts with an empty queue and refills it from the records.
    fresh = MemoryJobQueue()
    deps.jobs = fresh
    assert recover_unfinished(deps) == 1 and fresh.pending() == 1


def test_shutdown_lets_a_job_finish_within_the_grace_time(deps):
    video = queued_video(deps)
    original = job_module._transcode
    job_module._transcode = Script(deps, "slow")
    try:
        worker = Worker(deps, 1).start()
        time.sleep(0.3)
        worker.stop(grace=5)
    finally:
        job_module._transcode = original
    assert deps.metadata.videos.get(video["id"])["status"] == "ready"


def test_express_jobs_do_not_wait_behind_bulk_ones(deps):
    finished: dict[str, float] = {}
    original = job_module._transcode

    def timed(deps_, source_key, tenant_id, video_id, report, cancel):
        time.sleep(1.0 if deps_.metadata.videos.get(video_id)["title"] == "long" else 0.05)
        finished[deps_.metadata.videos.get(video_id)["title"]] = time.monotonic()
        return FakeResult()

    for _ in range(3):
        long = deps.metadata.videos.add({**new_video("t1", "u1", "long"), "status": "uploaded"})
        deps.jobs.publish({"video_id": long["id"], "tenant_id": "t1"}, lane="bulk")
    job_module._transcode = timed
    try:
        worker = Worker(deps, 1).start()  # the default concurrency
        time.sleep(0.2)  # the general thread is busy with a long job now
        short = deps.metadata.videos.add({**new_video("t1", "u1", "short"), "status": "uploaded"})
        published = time.monotonic()
        deps.jobs.publish({"video_id": short["id"], "tenant_id": "t1"}, lane="express")
        deadline = time.monotonic() + 10
        while "short" not in finished and time.monotonic() < deadline:
            time.sleep(0.02)
        worker.stop(grace=10)
    finally:
        job_module._transcode = original
    assert finished["short"] - published < 0.5
    assert deps.metadata.videos.get(short["id"])["status"] == "ready"


def test_a_job_past_its_attempts_fails_the_video_before_running(deps, events):
    video = queued_video(deps)
    delivery, done = take(deps)
    delivery.attempt = 4  # three workers died on it before (JOB_MAX_ATTEMPTS=3)
    script = Script(deps)
    job_module._transcode, original = script, job_module._transcode
    try:
        handle(deps, delivery, threading.Event())
    finally:
        job_module._transcode = original
        done.set()
    assert script.calls == 0 and deps.jobs.dead_letters
    stored = deps.metadata.videos.get(video["id"])
    assert stored["status"] == "failed" and "3 attempts" in stored["error"]


def test_jobs_never_start_from_uploading(deps, events):
    video = queued_video(deps, status="uploading")
    script = Script(deps)
    delivery = run_one(deps, script)
    assert script.calls == 0 and delivery.settled
    assert deps.metadata.videos.get(video["id"])["status"] == "uploading"
    assert not [t for t, _ in events]  # no `processing` before `uploaded`
    time.sleep(2.3)
    assert deps.jobs.pending() == 1  # it comes back once the upload had time to finish


def test_a_superseded_run_stops_and_leaves_the_files_alone(deps):
    video = queued_video(deps)

    def takeover():
        time.sleep(0.3)  # a redelivered copy started elsewhere
        deps.metadata.videos.update(video["id"], {"run": "someone-else"})

    threading.Thread(target=takeover).start()
    job_module.DELETED_CHECK_INTERVAL, interval = 0.1, job_module.DELETED_CHECK_INTERVAL
    try:
        delivery = run_one(deps, Script(deps, "block"))
    finally:
        job_module.DELETED_CHECK_INTERVAL = interval
    assert delivery.settled and deps.jobs.pending() == 0
    stored = deps.metadata.videos.get(video["id"])
    assert stored["status"] == "processing" and stored["run"] == "someone-else"
    assert deps.objects.read(keys.hls_master_key("t1", video["id"])) == b"#EXTM3U\n"  # not cleaned away


def test_repeated_failures_keep_the_upload(deps, monkeypatch):
    video = queued_video(deps)
    monkeypatch.setattr(job_module, "RETRY_BASE_SECONDS", 0.01)
    script = Script(deps, RuntimeError("x"), RuntimeError("x"), RuntimeError("x"))
    for _ in range(3):
        run_one(deps, script)
        time.sleep(0.05)
    assert deps.metadata.videos.get(video["id"])["status"] == "failed"
    assert [i.key for i in deps.objects.list(keys.video_prefix("t1", video["id"]))] == [
        keys.original_key("t1", video["id"])]


def test_outcomes_renditions_and_queue_depth_are_metrics(deps, monkeypatch):
    from prometheus_client import generate_latest

    from transcode_worker import create_app

    client = create_app(deps=deps).test_client()
    queued_video(deps)
    queued_video(deps, lane="bulk")
    queued_video(deps)
    time.sleep(5.1)  # past the queue-depth cache of a scrape that may have happened at start-up
    assert "reelhouse_queue_depth 3.0" in client.get("/metrics").get_data(as_text=True)
    run_one(deps, Script(deps))
    run_one(deps, Script(deps, MediaError("not a video")))
    monkeypatch.setattr(job_module, "RETRY_BASE_SECONDS", 0.02)
    run_one(deps, Script(deps, RuntimeError("S3 said 503")))
    text = generate_latest(deps.registry).decode()
    for line in ('reelhouse_jobs_total{outcome="ready"} 1.0', 'reelhouse_jobs_total{outcome="invalid_media"} 1.0',
                 'reelhouse_jobs_total{outcome="retry"} 1.0', 'reelhouse_renditions_total{rung="360p"} 1.0',
                 'reelhouse_job_duration_seconds_count{outcome="ready"} 1.0',
                 'reelhouse_rendition_seconds_count{rung="360p"} 1.0', "reelhouse_worker_busy_jobs 0.0"):
        assert line in text, line


def test_job_dirs_of_dead_workers_are_swept_and_live_ones_kept(tmp_path):
    import fcntl
    import os

    from transcode_worker.job import sweep_stale_job_dirs

    dead, live, fresh = (tmp_path / f"reelhouse-job-{name}" for name in ("dead", "live", "fresh"))
    for job_dir in (dead, live, fresh):
        (job_dir / "hls").mkdir(parents=True)
        (job_dir / "hls" / "seg_00001.m4s").write_bytes(b"x" * 1000)
        (job_dir / ".lock").touch()
    old = time.time() - 3600
    for job_dir in (dead, live):
        os.utime(job_dir, (old, old))
    with open(live / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a running job elsewhere on this disk
        assert sweep_stale_job_dirs(tmp_path) == 1
    assert not dead.exists() and live.exists() and fresh.exists()
