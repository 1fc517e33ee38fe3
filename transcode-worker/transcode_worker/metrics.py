"""Prometheus metrics of a worker: jobs by outcome and duration, renditions by rung, the queue depth it sees."""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.metrics import per_registry

# Outcomes of handling one delivery (job.handle): the worker's view, not the video's final status.
OUTCOMES = ("ready", "failed", "invalid_media", "retry", "handed_back", "superseded", "deleted", "skipped")
_DURATIONS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600, 7200)


class JobMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.jobs = Counter("reelhouse_jobs_total", "Transcode deliveries handled, by outcome", ["outcome"],
                            registry=registry)
        self.duration = Histogram("reelhouse_job_duration_seconds", "Time from taking a job to settling it",
                                  ["outcome"], buckets=_DURATIONS, registry=registry)
        self.renditions = Counter("reelhouse_renditions_total", "Renditions completed, by rung", ["rung"],
                                  registry=registry)
        self.rendition_seconds = Histogram("reelhouse_rendition_seconds",
                                           "Time from the job's start until a rung was complete", ["rung"],
                                           buckets=_DURATIONS, registry=registry)
        self.busy = Gauge("reelhouse_worker_busy_jobs", "Jobs this worker is running now", registry=registry)

    def finished(self, outcome: str, started: float) -> None:
        self.jobs.labels(outcome).inc()
        self.duration.labels(outcome).observe(time.monotonic() - started)

    def rendition(self, rung: str, started: float) -> None:
        self.renditions.labels(rung).inc()
        self.rendition_seconds.labels(rung).observe(time.monotonic() - started)


def queue_depth_gauge(registry: CollectorRegistry, jobs) -> Gauge:
    """`reelhouse_queue_depth`: jobs waiting (both lanes), read from the queue at scrape time (cached 5 s so a
    busy scraper does not hammer the broker; -1 when the broker does not answer)."""
    gauge = Gauge("reelhouse_queue_depth", "Transcode jobs waiting in the queue, as this worker sees it",
                  registry=registry)
    lock, cache = threading.Lock(), {"at": 0.0, "value": 0.0}

    def read() -> float:
        with lock:
            if time.monotonic() - cache["at"] > 5.0:
                try:
                    cache["value"] = float(jobs.pending())
                except Exception:  # noqa: BLE001 - a metric must not fail the scrape
                    cache["value"] = -1.0
                cache["at"] = time.monotonic()
            return cache["value"]

    gauge.set_function(read)
    return gauge


def job_metrics(registry: CollectorRegistry) -> JobMetrics:
    """One set per registry: every worker thread (and the embedded worker beside the web apps) shares it."""
    return per_registry(registry, "jobs", JobMetrics)
