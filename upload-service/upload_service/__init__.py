"""upload-service: resumable tus uploads into the object store, then a transcode job; the video library API."""

from __future__ import annotations

from flask import Flask

from services.bootstrap import Dependencies, bootstrap
from services.config import Config
from services.malloc import return_large_buffers_to_os
from services.web import create_base_app
from upload_service import tus, videos
from upload_service.assembly import assembler_for
from upload_service.sweeper import start_sweeper


class MethodOverride:
    """tus clients behind proxies that only pass GET/POST send `X-HTTP-Method-Override`."""

    ALLOWED = {"PATCH", "DELETE", "HEAD"}

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        override = environ.get("HTTP_X_HTTP_METHOD_OVERRIDE", "").upper()
        if environ.get("REQUEST_METHOD") == "POST" and override in self.ALLOWED:
            environ["REQUEST_METHOD"] = override
        return self.app(environ, start_response)


def create_app(config: Config | None = None, deps: Dependencies | None = None, *, background: bool = False) -> Flask:
    """`background=True` (long-running servers, not tests) also starts the upload sweeper."""
    deps = deps or bootstrap(config)
    return_large_buffers_to_os()  # S3 parts are large buffers freed by other threads (services/malloc.py)
    app = create_base_app("upload-service", deps, readiness=readiness_checks(deps), import_name=__name__)
    app.extensions["assembler"] = assembler_for(deps.objects, deps.config.upload_part_size)
    app.register_blueprint(tus.bp)
    app.register_blueprint(videos.bp)
    app.wsgi_app = MethodOverride(app.wsgi_app)
    if background:
        app.extensions["upload.sweeper"] = start_sweeper(deps, app.extensions["assembler"])
    return app


def readiness_checks(deps: Dependencies) -> dict:
    return {"metadata": deps.metadata.ping, "objects": deps.objects.ping, "jobs": deps.jobs.ping}
