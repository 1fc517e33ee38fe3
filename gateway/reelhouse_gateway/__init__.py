"""gateway: in embedded mode, one WSGI app with every service mounted by path, plus docs and the web app."""

from __future__ import annotations

from flask import Flask

import auth_service
import notify_service
import stream_service
import upload_service
from reelhouse_gateway import docs, frontend, proxy
from reelhouse_gateway.routing import ROUTES, PrefixDispatcher
from services.bootstrap import Dependencies, bootstrap
from services.config import Config, ConfigError
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


def create_proxy_app(config: Config | None = None, deps: Dependencies | None = None) -> Flask:
    """Distributed mode: the same URLs, each service's routes forwarded to its own URL (AUTH_URL, UPLOAD_URL,
    STREAM_URL, NOTIFY_URL); the gateway itself serves the web app, the API docs and its ops endpoints."""
    deps = deps or bootstrap(config)
    urls = check_service_urls(deps.config)
    upstreams = {name: proxy.Upstream(name, url, connect_timeout=deps.config.upstream_connect_timeout,
                                      read_timeout=deps.config.upstream_read_timeout,
                                      maxsize=deps.config.server_threads)
                 for name, url in urls.items()}
    readiness = {name: upstream.ready for name, upstream in upstreams.items()}
    app = create_base_app("gateway", deps, readiness=readiness, import_name=__name__)
    app.register_blueprint(docs.bp)
    proxy.install(app, upstreams)
    app.register_blueprint(frontend.bp)  # last: its catch-all route must not shadow the service prefixes
    app.wsgi_app = proxy.WebSocketTunnel(app.wsgi_app, upstreams["notify"],
                                         trusted_proxies=deps.config.trusted_proxies,
                                         max_tunnels=max(4, deps.config.server_threads // 2))
    app.extensions["reelhouse.upstreams"] = upstreams
    return app


def check_service_urls(config: Config) -> dict[str, str]:
    urls = config.service_urls()
    missing = [f"{name.upper()}_URL" for name, url in urls.items() if not url]
    if missing:
        raise ConfigError(f"{', '.join(missing)}: the distributed gateway needs every service's URL")
    return urls  # type: ignore[return-value]


def start_embedded_worker(deps: Dependencies):
    """Worker threads in the embedded process; its in-memory queue is refilled from unfinished videos first."""
    from transcode_worker.worker import Worker, recover_unfinished

    if deps.config.broker_url.startswith("memory:"):
        recover_unfinished(deps)
    return Worker(deps, deps.config.worker_concurrency).start()
