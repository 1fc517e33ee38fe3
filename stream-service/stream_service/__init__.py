"""stream-service: range requests, HLS playlists and segments, thumbnails, playback tokens."""

from __future__ import annotations

from flask import Flask

from services.bootstrap import Dependencies, bootstrap
from services.config import Config
from services.web import create_base_app
from stream_service import routes


def create_app(config: Config | None = None, deps: Dependencies | None = None) -> Flask:
    deps = deps or bootstrap(config)
    app = create_base_app("stream-service", deps, readiness=readiness_checks(deps), import_name=__name__)
    app.register_blueprint(routes.bp)
    return app


def readiness_checks(deps: Dependencies) -> dict:
    return {"metadata": deps.metadata.ping, "objects": deps.objects.ping}
