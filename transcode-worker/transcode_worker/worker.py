"""The worker runtime: K consumer threads plus one for express jobs only, and a graceful stop."""

from __future__ import annotations

import logging
import threading
import time

from services.bootstrap import Dependencies
from services.ports import Delivery
from services.ports.jobs import LANES
from transcode_worker.job import handle

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, deps: Dependencies, concurrency: int = 1):
        self.deps, self.concurrency = deps, max(1, concurrency)
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._running: set[threading.Event] = set()
        self._lock = threading.Lock()

    def lanes_for(self, index: int) -> tuple[str, ...]:
        """Thread 0 takes express jobs only, beside the K threads that take both: short videos never wait behind
        long ones, whatever the concurrency."""
        return ("express",) if index == 0 else LANES

    def start(self) -> Worker:
        from transcode_worker.job import sweep_stale_job_dirs

        sweep_stale_job_dirs(self.deps.config.work_dir)
        for index in range(self.concurrency + 1):
            thread = threading.Thread(target=self._consume, args=(self.lanes_for(index),),
                                      name=f"transcode-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("worker started", extra={"concurrency": self.concurrency})
        return self

    def _consume(self, lanes: tuple[str, ...]) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                self.deps.jobs.consume(self._handle, self.stopping, lanes=lanes)
                backoff = 0.5
            except Exception:
                log.exception("job consumer stopped; starting again in %.1f s", backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _handle(self, delivery: Delivery) -> None:
        cancel = threading.Event()
        with self._lock:
            self._running.add(cancel)
        try:
            handle(self.deps, delivery, cancel)
        finally:
            with self._lock:
                self._running.discard(cancel)

    @property
    def busy(self) -> int:
        with self._lock:
            return len(self._running)

    def stop(self, grace: float) -> None:
        """Take no new jobs; let running ones finish for `grace` seconds, then cancel them (they are handed back)."""
        self.stopping.set()
        deadline = time.monotonic() + grace
        while self.busy and time.monotonic() < deadline:
            time.sleep(0.1)
        with self._lock:
            for cancel in self._running:
                cancel.set()
        for thread in self._threads:
            thread.join(max(1.0, deadline - time.monotonic()) + 10)
        log.info("worker stopped")


def recover_unfinished(deps: Dependencies) -> int:
    """Embedded mode's queue lives in memory: at start, re-enqueue videos a previous run left unfinished."""
    from services import keys

    count, page = 0, 1
    while True:
        batch = deps.metadata.videos.find({"status": {"$in": ["uploaded", "processing"]}}, page=page, per_page=200)
        for video in batch.items:
            lane = "express" if (video.get("duration") or 0) <= deps.config.express_max_duration else "bulk"
            deps.jobs.publish({"type": "transcode", "video_id": video["id"], "tenant_id": video["tenant_id"],
                               "source_key": keys.original_key(video["tenant_id"], video["id"]),
                               "duration": video.get("duration")}, lane=lane)
            count += 1
        if page * 200 >= batch.total:
            break
        page += 1
    if count:
        log.info("re-enqueued unfinished videos", extra={"count": count})
    return count
