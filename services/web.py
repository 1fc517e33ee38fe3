"""What every Flask app of Reelhouse shares: request ids, access log, metrics, errors, /healthz /readyz /metrics."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request
from flask_limiter import Limiter, RateLimitExceeded
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from werkzeug.middleware.proxy_fix import ProxyFix

from services.cors import install_cors
from services.errors import ApiError, error_response, register_error_handlers
from services.logs import ensure_logging, request_id_var
from services.metrics import per_registry

access_log = logging.getLogger("reelhouse.access")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

Check = Callable[[], None]


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter("reelhouse_http_requests_total", "HTTP requests answered",
                                ["service", "method", "route", "status"], registry=registry)
        self.latency = Histogram("reelhouse_http_request_duration_seconds", "Time to answer an HTTP request",
                                 ["service", "route"], registry=registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


def http_metrics(registry: CollectorRegistry) -> HttpMetrics:
    """One metric set per registry: several apps in one process share it, told apart by `service`."""
    return per_registry(registry, "http", HttpMetrics)


def create_base_app(name: str, deps: Any, readiness: Mapping[str, Check] | None = None,
                    import_name: str = __name__) -> Flask:
    """`name` is the service's name in logs, metrics and /healthz; `import_name` locates its package."""
    ensure_logging(deps.config.log_level)
    app = Flask(import_name)
    # `//` in a path (an id that decodes to `../`) is a 404 like any unknown path, not a 308 to a merged path.
    app.url_map.merge_slashes = False
    app.config["SERVICE_NAME"] = name
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    app.extensions["reelhouse"] = deps
    app.extensions["reelhouse.readiness"] = dict(readiness or {})
    metrics = http_metrics(deps.registry)

    @app.before_request
    def _start() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        g.request_id_token = request_id_var.set(g.request_id)
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        request_id = g.get("request_id")
        if request_id:
            response.headers["X-Request-ID"] = request_id
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        route = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.requests.labels(name, request.method, route, str(response.status_code)).inc()
        metrics.latency.labels(name, route).observe(elapsed)
        principal = g.get("principal")
        access_log.info(
            "%s %s %s", request.method, request.path, response.status_code,
            extra={"service": name, "method": request.method, "path": request.path,
                   "status": response.status_code, "duration_ms": round(elapsed * 1000, 2),
                   "tenant_id": getattr(principal, "tenant_id", None), "remote_addr": request.remote_addr},
        )
        return response

    @app.teardown_request
    def _reset(_exc: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            request_id_var.reset(token)

    register_error_handlers(app)
    add_ops_routes(app)
    install_cors(app, deps.config.cors_origins)
    app.after_request(secure_headers)
    if deps.config.trusted_proxies:
        # Behind an ingress, the client's address is in X-Forwarded-For (rate limits are per address).
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=deps.config.trusted_proxies,
                                x_proto=deps.config.trusted_proxies, x_host=deps.config.trusted_proxies)
    return app


# API answers are never meant to be rendered: a JSON error echoing user input cannot become a page, be framed
# or leak its URL (playback tokens ride in query strings) to another site. Pages set their own policy first.
API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"


def secure_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype in ("application/json", "text/html", "text/plain"):
        response.headers.setdefault("Content-Security-Policy", API_POLICY)
    return response


def rate_limiter(app: Flask, key_func: Callable[[], str], config: Any, component: str) -> Limiter:
    """A flask-limiter whose 429 has the contract's error shape and a Retry-After.

    Counters live in RATE_LIMIT_STORAGE_URL under the deployment's BROKER_NAMESPACE (default "reelhouse", so the
    keys are `reelhouse-auth…` as before): two deployments sharing one Redis do not share budgets.

    Its own headers stay off: it would stamp Retry-After on every counted response (a 401, a 204), and override
    a service's own Retry-After on a 503. swallow_errors: if the counters' store (Redis) is down, requests go on
    without limits rather than all failing; /readyz reports the outage."""
    limiter = Limiter(key_func, app=app, storage_uri=config.rate_limit_storage_url, headers_enabled=False,
                      key_prefix=f"{config.broker_namespace}-{component}", swallow_errors=True)

    @app.errorhandler(RateLimitExceeded)
    def _limited(_error):
        current = limiter.current_limit
        wait = max(1, int((current.reset_at if current else time.time() + 60) - time.time()))
        return error_response(429, "rate_limited", f"Too many requests; retry in {wait} s.",
                              headers={"Retry-After": str(wait)})

    return limiter


def run_checks(checks: Mapping[str, Check]) -> tuple[bool, dict[str, str]]:
    results, ok = {}, True
    for check_name, check in checks.items():
        try:
            check()
            results[check_name] = "ok"
        except Exception as error:  # a failing dependency is reported, not raised
            ok = False
            # The caller learns which dependency and what kind of failure; paths and hosts stay in the log.
            results[check_name] = f"unavailable ({type(error).__name__})"
            logging.getLogger(__name__).warning("readiness check %s failed: %s", check_name, error)
    return ok, results


def add_ops_routes(app: Flask) -> None:
    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok", service=app.config["SERVICE_NAME"])

    @app.get("/readyz")
    def readyz():
        ok, results = run_checks(current_app.extensions["reelhouse.readiness"])
        if ok:
            return jsonify(status="ok", checks=results)
        body = {"error": {"code": "not_ready", "message": "a dependency is unreachable"}, "checks": results}
        return jsonify(body), 503

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(current_app.extensions["reelhouse"].registry),
                        mimetype=CONTENT_TYPE_LATEST.split(";")[0])


MAX_JSON_BYTES = 64 * 1024


def json_body(limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """The request body as a JSON object, whatever Content-Type the client sent (curl -d sends a form type)."""
    too_large = ApiError(413, "payload_too_large", f"JSON bodies may have at most {limit} bytes.")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise too_large
    if not raw.strip():
        raise ApiError(400, "invalid_json", "The request body must be a JSON object.")
    try:
        body = json.loads(raw)
        # Lone surrogates ("\ud800") parse but cannot be stored or hashed as UTF-8.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError, RecursionError):
        raise ApiError(400, "invalid_json", "The request body is not valid JSON (or not valid UTF-8).") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The request body must be a JSON object.")
    return body


def fields(body: Mapping[str, Any], required: Mapping[str, type], optional: Mapping[str, type] | None = None
           ) -> dict[str, Any]:
    """Pick typed fields out of a body; 422 naming every missing or mistyped one."""
    problems: dict[str, str] = {}
    out: dict[str, Any] = {}
    for name in required:
        if body.get(name) is None:
            problems[name] = "is required"
    for name, kind in {**required, **(optional or {})}.items():
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            problems[name] = f"must be a {_TYPE_NAMES.get(kind, kind.__name__)}"
        else:
            out[name] = value
    if problems:
        message = "; ".join(f"{name} {problem}" for name, problem in problems.items())
        raise ApiError(422, "validation_error", message, fields=problems)
    return out


_TYPE_NAMES = {str: "string", int: "whole number", bool: "boolean", dict: "object", list: "list"}


MAX_PAGE = 1_000_000


def page_args(max_per_page: int = 100) -> tuple[int, int]:
    def number(name: str, default: int) -> int:
        raw = request.args.get(name)
        if raw in (None, ""):
            return default
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE:
            raise ApiError(422, "validation_error", f"{name} must be a whole number from 1 to {MAX_PAGE}")
        return int(raw)

    return number("page", 1), min(number("per_page", 20), max_per_page)
