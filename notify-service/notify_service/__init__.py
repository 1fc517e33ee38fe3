"""notify-service: Socket.IO fan-out of video events to tenants, users and videos."""

from __future__ import annotations

from flask import Flask

from notify_service import webhooks
from notify_service.realtime import Realtime
from services.bootstrap import Dependencies, bootstrap
from services.config import Config
from services.web import create_base_app


def create_app(config: Config | None = None, deps: Dependencies | None = None, *, background: bool = False) -> Flask:
    """`background=True` (long-running servers, not tests) also starts the webhook dispatcher."""
    deps = deps or bootstrap(config)
    app = create_base_app("notify-service", deps, readiness=readiness_checks(deps), import_name=__name__)
    app.extensions["notify.realtime"] = Realtime(app, deps)
    webhooks.register(app, deps, start_threads=background)
    return app


def readiness_checks(deps: Dependencies) -> dict:
    return {"metadata": deps.metadata.ping, "events": deps.events.ping}
