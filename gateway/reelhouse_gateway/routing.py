"""Which service owns which path prefix: the single source for the embedded dispatcher (and the README table)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

ROUTES: tuple[tuple[str, str], ...] = (
    ("/api/auth", "auth"),
    ("/api/uploads", "upload"),
    ("/api/videos", "upload"),
    ("/api/stream", "stream"),
    ("/socket.io", "notify"),
    ("/api/webhooks", "notify"),
)
"""(path prefix, service). Everything else — /api/openapi.json, /api/docs, /healthz, /readyz, /metrics and
the web app at / — is the gateway's own."""

WSGIApp = Callable


class PrefixDispatcher:
    """Hands a request to the app that owns its path prefix; the path is passed on unchanged, exactly as the
    distributed gateway proxies it, so each service answers the same URLs in both modes."""

    def __init__(self, default: WSGIApp, apps: Mapping[str, WSGIApp]):
        self.default = default
        self.apps = sorted(apps.items(), key=lambda item: len(item[0]), reverse=True)

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        for prefix, app in self.apps:
            if path == prefix or path.startswith(prefix + "/"):
                return app(environ, start_response)
        return self.default(environ, start_response)
