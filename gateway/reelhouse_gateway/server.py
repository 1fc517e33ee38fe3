"""Runs the embedded gateway under gunicorn (one worker process, threads), logging JSON lines."""

from __future__ import annotations

import json
import sys

from gunicorn import util as gunicorn_util
from gunicorn.app.base import BaseApplication

from services.config import Config, ConfigError
from services.logs import configure_logging

LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "services.logs.JsonFormatter"}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
    "root": {"handlers": [], "level": "INFO"},  # configure_logging() installs the root handler
    "loggers": {
        "gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
    },
}


ERROR_CODES = {400: "bad_request", 403: "forbidden", 414: "uri_too_long", 417: "expectation_failed",
               431: "request_header_fields_too_large", 500: "internal_error", 501: "not_implemented"}


def write_json_error(sock, status: int, reason: str, message: str) -> None:
    """gunicorn's answer to a request it refuses before the app sees it (a request line or headers too large or
    malformed), in the contract's error shape instead of gunicorn's HTML page."""
    body = json.dumps({"error": {"code": ERROR_CODES.get(status, "bad_request"),
                                 "message": f"{reason}: {message}" if message else reason}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"X-Content-Type-Options: nosniff\r\nContent-Length: {len(body)}\r\n\r\n")
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


class EmbeddedServer(BaseApplication):
    distributed = False

    def __init__(self, config: Config, threads: int | None = None):
        # Flask-SocketIO runs in threading mode (see notify_service.realtime): every open websocket (and every
        # pending long-poll) holds one of these threads for its lifetime, so the pool (REELHOUSE_THREADS, 512)
        # must be far larger than the HTTP load; with 32 threads the 32nd websocket starved every HTTP request.
        threads = threads or config.server_threads
        self.config = config
        self.options = {
            "bind": f"{config.host}:{config.port}",
            "workers": 1,  # one process: the embedded queue, event bus and Socket.IO rooms live in it
            "worker_class": "gthread",
            "threads": threads,
            "timeout": 120,
            "graceful_timeout": 30,
            "keepalive": 5,
            "worker_connections": threads + 256,  # gunicorn's default 1000 would also cap gthread
            "accesslog": None,  # services.web writes the access log, with request ids
            "control_socket_disable": True,  # a shared ~/.gunicorn socket would clash between instances
            "logconfig_dict": LOG_CONFIG,
            "post_worker_init": self._announce,  # after the app loaded: the URL is printed only once it works
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        # The worker calls `util.write_error` for the requests it refuses itself; set before it is forked.
        gunicorn_util.write_error = write_json_error

    def load(self):
        from reelhouse_gateway import create_app, create_proxy_app

        configure_logging(self.config.log_level)
        if self.distributed:
            return create_proxy_app(self.config)
        return create_app(self.config, background=True)

    def _announce(self, _worker) -> None:
        host = "localhost" if self.config.host in ("0.0.0.0", "::", "127.0.0.1") else self.config.host
        print(f"Reelhouse is running at http://{host}:{self.config.port}/  "
              f"(API docs: http://{host}:{self.config.port}/api/docs; data in {self.config.data_dir})",
              file=sys.stderr, flush=True)


class GatewayServer(EmbeddedServer):
    """`reelhouse gateway`: the distributed gateway, forwarding to the services' URLs."""

    distributed = True


def serve(config: Config) -> None:
    if config.notify_async_mode != "threading":
        # gevent needs the whole process monkey-patched before anything is imported (gunicorn -k gevent does it
        # for a notify replica); the embedded process also runs worker threads, pika and ffmpeg readers.
        raise ConfigError("NOTIFY_ASYNC_MODE: `reelhouse up` runs Socket.IO in threading mode; gevent is for a "
                          "separate notify replica under `gunicorn -k gevent -w 1 'notify_service:create_app()'`")
    EmbeddedServer(config).run()


def serve_gateway(config: Config) -> None:
    from reelhouse_gateway import check_service_urls

    check_service_urls(config)  # fail here, naming the missing variable, rather than in gunicorn's worker
    GatewayServer(config).run()
