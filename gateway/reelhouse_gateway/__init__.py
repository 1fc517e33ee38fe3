"""gateway: in embedded mode, one WSGI app with every service mounted by path, plus docs and the web app."""

from __future__ import annotations

from flask import Flask

import auth_service
import notify_service
import stream_service
import upload_service
from reelhouse_gateway import docs, frontend
from reelhouse_gateway.routing import ROUTES, PrefixDispatcher
from services.bootstrap import Dependencies, bootstrap
from services.config import Config
from services.web import create_base_app


def create_app(config: Config | None = None, deps: Dependencies | None = None, *, background: bool = False) -> Flask:
    """`background=True` starts what a long-running server runs beside requests (sweeper, workers)."""
    deps = deps or bootstrap(config)
    services = {
        "auth": auth_service.create_app(deps=deps),
        "upload": upload_service.create_app(deps=deps, background=background),
        "stream": stream_service.create_app(deps=deps),
        "notify": notify_service.create_app(deps=deps, background=background),
    }
    readiness = {"metadata": deps.metadata.ping, "objects": deps.objects.ping, "jobs": deps.jobs.ping,
                 "events": deps.events.ping}
    app = create_base_app("gateway", deps, readiness=readiness, import_name=__name__)
    app.register_blueprint(docs.bp)
    app.register_blueprint(frontend.bp)
    app.extensions["reelhouse.services"] = services
    app.wsgi_app = PrefixDispatcher(app.wsgi_app, {prefix: services[name] for prefix, name in ROUTES})
    if background and deps.config.worker_concurrency:
        app.extensions["worker"] = start_embedded_worker(deps)
    return app


def start_embedded_worker(deps: Dependencies):
    """Worker threads in the embedded process; its in-memory queue is refilled from unfinished videos first."""
    from transcode_worker.worker import Worker, recover_unfinished

    if deps.config.broker_url.startswith("memory:"):
        recover_unfinished(deps)
    return Worker(deps, deps.config.worker_concurrency).start()
