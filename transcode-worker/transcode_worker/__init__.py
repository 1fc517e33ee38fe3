"""transcode-worker: job consumer that probes, transcodes to an HLS ladder and publishes progress."""

from __future__ import annotations

from flask import Flask

from services.bootstrap import Dependencies, bootstrap
from services.config import Config
from services.web import create_base_app
from transcode_worker.metrics import job_metrics, queue_depth_gauge


def create_app(config: Config | None = None, deps: Dependencies | None = None) -> Flask:
    deps = deps or bootstrap(config)
    app = create_base_app("transcode-worker", deps, readiness=readiness_checks(deps), import_name=__name__)
    job_metrics(deps.registry)  # the series exist (at zero) before the first job
    queue_depth_gauge(deps.registry, deps.jobs)
    return app


def readiness_checks(deps: Dependencies) -> dict:
    return {"metadata": deps.metadata.ping, "objects": deps.objects.ping, "jobs": deps.jobs.ping,
            "events": deps.events.ping}
