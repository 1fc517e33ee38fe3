"""One transcode job, from a queued video to `ready` or `failed`, with the record and events kept current.

Media work happens in `transcode_worker.media` (no broker, no metadata); this module binds it to them."""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from services import keys
from services.bootstrap import Dependencies
from services.errors import storage_error
from services.local_files import available_locally
from services.media import MediaError, probe
from services.ports import Delivery
from services.videos import record_and_publish
from transcode_worker.metrics import job_metrics

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.5  # at most two progress events a second
DELETED_CHECK_INTERVAL = 2.0
RETRY_BASE_SECONDS = 5.0  # doubled per attempt, at most 5 minutes
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"  # recorded on the video: which worker did it


class JobReport:
    """Callbacks for the pipeline: progress (throttled), renditions, early playback. Every write is fenced by
    this run's token: a run that was superseded (a redelivery after a lost connection) or whose video was deleted
    stops at its next write instead of fighting the current run."""

    def __init__(self, deps: Dependencies, video_id: str, tenant_id: str, cancel: threading.Event, run: str,
                 started: float | None = None):
        self.deps, self.video_id, self.tenant_id, self.cancel, self.run = deps, video_id, tenant_id, cancel, run
        self.started = time.monotonic() if started is None else started
        self.renditions: list[dict[str, Any]] = []
        self.deleted = False
        self.superseded = False
        self._last_progress = 0.0
        self._last_check = time.monotonic()

    def current(self, video: dict) -> bool:
        return video["status"] == "processing" and video.get("run") == self.run

    def _publish(self, changes: dict, events: list[tuple[str, dict]]) -> None:
        video = record_and_publish(self.deps.metadata.videos, self.deps.events, self.video_id, changes, events,
                                   when=self.current)
        if video is None:
            self._gone()

    def _gone(self) -> None:
        video = self.deps.metadata.videos.get(self.video_id)
        if video is None:
            self.deleted = True
            self.cancel.set()  # stops ffmpeg; the job then removes what was written
        elif not self.current(video):
            self.superseded = True
            self.cancel.set()  # another run owns the video now: stop, and leave its files alone

    def progress(self, stage: str, percent: float) -> None:
        now = time.monotonic()
        if now - self._last_check >= DELETED_CHECK_INTERVAL:
            self._last_check = now
            self._gone()
        if now - self._last_progress < PROGRESS_INTERVAL and percent < 100:
            return
        self._last_progress = now
        percent = max(0, min(100, round(percent, 1)))
        self._publish({"progress": percent, "stage": stage},
                      [("video.progress", {"stage": stage, "percent": percent})])

    def rendition_ready(self, rung: Any) -> None:
        rendition = rung.as_rendition()
        job_metrics(self.deps.registry).rendition(rendition["name"], self.started)
        self.renditions = [r for r in self.renditions if r["name"] != rendition["name"]] + [rendition]
        self._publish({"renditions": list(self.renditions)},
                      [("video.rendition_ready", {"rendition": rendition["name"]})])

    # video.playable tells open pages and API clients to fetch the video now: a URL they can play has appeared.
    def original_ready(self) -> None:
        self._publish({"original_playable": True}, [("video.playable", {"playback": "original"})])

    def hls_started(self) -> None:
        self._publish({"hls_available": True}, [("video.playable", {"playback": "hls"})])


def remove_outputs(deps: Dependencies, tenant_id: str, video_id: str) -> None:
    deps.objects.delete_prefix(keys.video_prefix(tenant_id, video_id))


def handle(deps: Dependencies, delivery: Delivery, cancel: threading.Event) -> None:
    """Process one delivery and settle it: ack when done (or pointless), retry/dead-letter on failure,
    nack(requeue) when the worker is shutting down. Counted in the worker's metrics by outcome."""
    metrics = job_metrics(deps.registry)
    started, outcome = time.monotonic(), "error"
    metrics.busy.inc()
    try:
        outcome = _handle(deps, delivery, cancel, started)
    finally:
        metrics.busy.dec()
        metrics.finished(outcome, started)


def _handle(deps: Dependencies, delivery: Delivery, cancel: threading.Event, started: float) -> str:
    body = delivery.body
    video_id, tenant_id = body.get("video_id"), body.get("tenant_id")
    videos = deps.metadata.videos
    video = videos.get(video_id, tenant_id=tenant_id) if video_id and tenant_id else None
    if video is None:
        if video_id and tenant_id:
            remove_outputs(deps, tenant_id, video_id)  # deleted before we got to it
        delivery.ack()
        return "deleted"
    if video["status"] in ("ready", "failed"):
        delivery.ack()  # a duplicate of a job that already finished
        return "skipped"
    if video["status"] == "uploading":
        delivery.retry(2.0)  # its upload is still completing: `uploaded` comes first, always
        return "retry"
    if delivery.attempt > deps.config.job_max_attempts:
        # Crashed workers do not get to say "failed": the attempt count does it for them.
        _fail(deps, tenant_id, video_id, f"Processing failed after {delivery.attempt - 1} attempts.")
        delivery.nack(requeue=False)
        return "failed"
    run = secrets.token_hex(8)
    began = record_and_publish(videos, deps.events, video_id,
                                 {"status": "processing", "progress": 0, "stage": "probe", "error": None,
                                  "worker": WORKER_ID, "attempt": delivery.attempt, "run": run,
                                  "hls_available": False, "original_playable": False, "renditions": []},
                                 [("video.status", {"status": "processing"})],
                                 when=lambda v: v["status"] in ("uploaded", "processing"))
    if began is None:
        delivery.ack()
        return "skipped"
    report = JobReport(deps, video_id, tenant_id, cancel, run, started)
    log.info("transcode started", extra={"video_id": video_id, "attempt": delivery.attempt})
    try:
        result = _transcode(deps, keys.original_key(tenant_id, video_id), tenant_id, video_id, report, cancel)
    except MediaError as error:
        _fail(deps, tenant_id, video_id, str(error))
        delivery.ack()  # permanent: retrying cannot help
        return "invalid_media"
    except Exception as error:
        if report.superseded:
            delivery.ack()  # a newer run has this video; its files are its own
            return "superseded"
        if report.deleted:
            remove_outputs(deps, tenant_id, video_id)
            delivery.ack()
            return "deleted"
        if cancel.is_set():
            log.info("transcode handed back", extra={"video_id": video_id})
            delivery.release()  # a shutdown is not the job's fault: it keeps its attempts
            return "handed_back"
        reason = _reason(error)
        if delivery.attempt < deps.config.job_max_attempts:
            delay = min(300.0, RETRY_BASE_SECONDS * 2 ** (delivery.attempt - 1))
            # The pipeline removed its outputs: the record must not promise them meanwhile.
            record_and_publish(videos, deps.events, video_id, {"hls_available": False, "original_playable": False,
                                                              "progress": 0, "renditions": []}, [],
                               when=report.current)
            log.warning("transcode failed, retrying in %.0f s: %s", delay, reason,
                        extra={"video_id": video_id, "attempt": delivery.attempt})
            delivery.retry(delay)
            return "retry"
        _fail(deps, tenant_id, video_id, f"Processing failed after {delivery.attempt} attempts: {reason}",
              keep_original=True)
        delivery.nack(requeue=False)  # to the dead-letter queue, for an operator to look at
        return "failed"
    finished = record_and_publish(
        videos, deps.events, video_id,
        {"status": "ready", "progress": 100, "stage": "done", "renditions": result.renditions,
         "duration": result.duration, "width": result.width, "height": result.height, "outputs": result.outputs,
         "original_playable": result.original_playable, "hls_available": True, "error": None},
        [("video.status", {"status": "ready"}), ("video.ready", {})],
        when=report.current,
    )
    if finished is None and videos.get(video_id) is None:
        remove_outputs(deps, tenant_id, video_id)  # deleted in the last moment
    log.info("transcode finished", extra={"video_id": video_id, "renditions": len(result.renditions)})
    delivery.ack()
    return "ready"


JOB_DIR_PREFIX = "reelhouse-job-"


def sweep_stale_job_dirs(work_dir: str | Path | None) -> int:
    """Remove job directories left by workers that died mid-job (their lock is free); live ones are skipped."""
    removed = 0
    for job_dir in Path(work_dir or tempfile.gettempdir()).glob(JOB_DIR_PREFIX + "*"):
        lock_path = job_dir / ".lock"
        try:
            if time.time() - job_dir.stat().st_mtime < 60:
                continue  # just created: its job may not hold the lock yet
        except OSError:
            continue
        try:
            with open(lock_path, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a running job's
        except OSError:
            continue
        shutil.rmtree(job_dir, ignore_errors=True)
        removed += 1
    if removed:
        log.info("removed job directories of workers that died", extra={"count": removed})
    return removed


def _transcode(deps: Dependencies, source_key: str, tenant_id: str, video_id: str, report: JobReport,
               cancel: threading.Event):
    from transcode_worker.media.pipeline import transcode

    if deps.config.work_dir:
        deps.config.work_dir.mkdir(parents=True, exist_ok=True)  # e.g. a fresh emptyDir subfolder
    # Presigned for as long as a job may take (the source is read more than once).
    with available_locally(deps.objects, source_key, expires_in=12 * 3600) as source, \
            tempfile.TemporaryDirectory(prefix=JOB_DIR_PREFIX, dir=deps.config.work_dir) as work_dir, \
            open(Path(work_dir) / ".lock", "w") as lock:
        # Held while the job runs; a worker that dies (SIGKILL, OOM) releases it, so the next one starting on
        # this disk knows the directory is garbage (sweep_stale_job_dirs).
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            media = probe(source)
        except MediaError:
            # Read over a presigned URL, an unreachable store looks like an unreadable file: only a store that
            # answers may condemn it (and delete the upload); otherwise the job is retried.
            deps.objects.stat(source_key)
            raise
        return transcode(deps.objects, source, media, tenant_id, video_id, work_dir=work_dir,
                         on_progress=report.progress, on_rendition_ready=report.rendition_ready,
                         on_original_ready=report.original_ready, on_hls_ready=report.hls_started, cancel=cancel)


def _fail(deps: Dependencies, tenant_id: str, video_id: str, error: str, keep_original: bool = False) -> None:
    """Bad media: everything goes. Repeated failures of a good file: the upload stays, to be processed again."""
    original = keys.original_key(tenant_id, video_id)
    try:
        for info in list(deps.objects.list(keys.video_prefix(tenant_id, video_id))):
            if not (keep_original and info.key == original):
                deps.objects.delete(info.key)
    except Exception as trouble:  # the store is down: the video fails all the same; its files go when it is deleted
        log.warning("could not remove the files of failed video %s: %s", video_id, _reason(trouble))
    changes = {"status": "failed", "error": error, "progress": 0, "hls_available": False,
               "original_playable": False}
    if not keep_original:
        changes["size"] = 0  # nothing of it is stored any more: it no longer counts against the quota
    record_and_publish(deps.metadata.videos, deps.events, video_id, changes,
                       [("video.status", {"status": "failed"}), ("video.failed", {"error": error})],
                       when=lambda v: v["status"] not in ("ready", "failed"))
    log.info("transcode failed", extra={"video_id": video_id, "reason": error})


def _reason(error: Exception) -> str:
    storage = storage_error(error)
    if storage is not None:  # not the store's URL or a botocore message: what happened, for the user
        return f"{storage.code.replace('_', ' ')} ({type(error).__name__})"
    text = str(error).strip().splitlines()
    return (text[-1] if text else type(error).__name__)[:300]
