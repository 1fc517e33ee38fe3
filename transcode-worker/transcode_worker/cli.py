"""`reelhouse worker`: consume transcode jobs until SIGTERM, serving /healthz /readyz /metrics meanwhile."""

from __future__ import annotations

import signal
import threading
import time

import click

from services.config import Config, ConfigError
from services.logs import configure_logging


@click.command()
@click.option("--concurrency", type=click.IntRange(1, 64), help="Jobs at once (WORKER_CONCURRENCY, default 1).")
@click.option("--grace", type=click.IntRange(0, 86400),
              help="Seconds a running job may finish after SIGTERM before it is handed back (WORKER_GRACE_SECONDS).")
@click.option("--health-port", type=click.IntRange(0, 65535), default=8081, show_default=True,
              help="Port for /healthz, /readyz and /metrics (0: none).")
def worker(concurrency: int | None, grace: int | None, health_port: int) -> None:
    """Run a transcode worker against BROKER_URL (RabbitMQ in distributed mode)."""
    from werkzeug.serving import make_server

    from services.bootstrap import bootstrap
    from transcode_worker import create_app
    from transcode_worker.worker import Worker

    try:
        config = Config.from_env()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    configure_logging(config.log_level)
    deps = bootstrap(config)
    running = Worker(deps, concurrency or config.worker_concurrency or 1).start()
    done, drained = threading.Event(), threading.Event()
    grace_seconds = config.worker_grace if grace is None else grace
    server = None
    if health_port:
        app = create_app(deps=deps)
        add_drain_route(app, done, drained, grace_seconds)
        server = make_server(config.host, health_port, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def on_signal(signum, _frame):
        click.echo(f"worker: {signal.Signals(signum).name}, finishing running jobs", err=True)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    click.echo(f"worker: consuming jobs with {running.concurrency} thread(s)", err=True)
    done.wait()
    running.stop(grace_seconds)
    drained.set()
    if server is not None:
        time.sleep(0.5)  # a waiting /drain call gets its answer before the server goes
        server.shutdown()
    deps.close()


def add_drain_route(app, done: threading.Event, drained: threading.Event, grace: float) -> None:
    """`POST /drain` (Kubernetes preStop, from inside the pod only): take no new jobs, let the running one finish
    within the grace time or hand it back, then answer; the SIGTERM that follows finds nothing left to do."""
    from flask import jsonify, request

    from services.errors import ApiError

    @app.post("/drain")
    def drain():
        if request.remote_addr not in ("127.0.0.1", "::1"):
            raise ApiError(403, "forbidden", "Only the worker's own pod may drain it.")
        done.set()
        finished = drained.wait(grace + 15)
        return jsonify(status="drained" if finished else "draining"), 200 if finished else 202
