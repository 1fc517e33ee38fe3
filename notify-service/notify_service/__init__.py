"""notify-service: Socket.IO fan-out of video events to tenants, users and videos."""

from __future__ import annotations

import signal
import threading

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
    realtime = app.extensions["notify.realtime"] = Realtime(app, deps)
    webhooks.register(app, deps, start_threads=background)
    if background:
        _close_sockets_on_sigterm(realtime)
    return app


def _close_sockets_on_sigterm(realtime: Realtime) -> None:
    """Chain onto the server's SIGTERM handler (gunicorn's graceful stop): open websockets would otherwise hold the
    process until its graceful timeout (30 s) and then be cut off; closed at once, clients move to another replica."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return  # no graceful stop to add to (the default handler just ends the process)

    def on_sigterm(signum, frame) -> None:
        try:
            _in_background(realtime.disconnect_everyone)
        finally:
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def readiness_checks(deps: Dependencies) -> dict:
    return {"metadata": deps.metadata.ping, "events": deps.events.ping}


def _in_background(task) -> None:
    """Run `task` apart from a signal handler: a greenlet under gevent (a handler runs in the event loop, where
    starting a thread would block), a thread otherwise."""
    try:
        from gevent import monkey

        if monkey.is_module_patched("threading"):
            import gevent

            gevent.spawn(task)
            return
    except ImportError:  # gevent is optional for threading mode
        pass
    threading.Thread(target=task, name="close-sockets", daemon=True).start()
