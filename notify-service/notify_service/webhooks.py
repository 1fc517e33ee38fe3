"""Signed webhooks: `/api/webhooks` (admin only, tenant-scoped) and a background dispatcher.

- An admin registers `{url, events?}`; the secret is returned once, in the 201 answer, never again.
- `video.ready` / `video.failed` events from the bus become one `webhook_deliveries` record per matching active
  webhook of the video's tenant (no HTTP in the publisher's thread); a dispatcher thread POSTs due deliveries.
- Each POST carries `Reelhouse-Signature: t=<unix ts>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>`,
  `Reelhouse-Event` and `Reelhouse-Delivery`. 2xx → delivered; anything else (or a timeout) → retried with
  exponential backoff (`webhook_retry_base` seconds, doubling, capped at 1 h) until 24 h after the event,
  then `failed`.
- Replicas share the records: a due delivery is claimed with compare-and-set (`expected_version`), which also
  pushes its `next_attempt_at` forward by a lease, so two replicas never send the same attempt.

SSRF policy: http/https only; every address the host resolves to is checked, at registration and again right
before each delivery (DNS rebinding). Refused: link-local (169.254.0.0/16, fe80::/10, which covers the cloud
metadata address 169.254.169.254), known metadata addresses, unspecified, multicast, reserved, and loopback unless
WEBHOOK_ALLOW_LOOPBACK=1. Private ranges (10/8, 172.16/12, 192.168/16, fc00::/7) ARE allowed on purpose: a
self-hosted install commonly delivers to services on its own network. Operators who need to forbid them should do
so with egress firewall rules. The connection goes to the very address that was checked (`PinnedAdapter`; TLS
still verifies the certificate against the URL's host name), so a rebinding DNS answer after the check is never
used.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import Blueprint, Flask, current_app, jsonify
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import connection as urllib3_connection

from services.authz import current_principal, require_role
from services.errors import ApiError
from services.ports.metadata import VersionConflict, new_id
from services.web import fields, json_body, page_args

log = logging.getLogger(__name__)

EVENTS = ("video.ready", "video.failed")
MAX_BACKOFF = 3600.0
GIVE_UP_AFTER = 24 * 3600.0
CLAIM_LEASE = 60.0
TIMEOUT = 5.0
MAX_URL_LENGTH = 2048
MAX_WEBHOOKS_PER_TENANT = 50

_METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, ...
    ipaddress.ip_address("fd00:ec2::254"),    # AWS IPv6 metadata
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud metadata
}


# --- URL safety -----------------------------------------------------------------------------------------


def address_problem(address: str, *, allow_loopback: bool) -> str | None:
    """Why this IP may not be a webhook target, or None if it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    if ip.is_reserved:
        return "a reserved address"
    return None


def check_url(url: Any, *, allow_loopback: bool) -> str:
    """The URL if it is a safe webhook target; ApiError 422 (`validation_error` or `unsafe_url`) if not."""
    checked_address(url, allow_loopback=allow_loopback)
    return url


def checked_address(url: Any, *, allow_loopback: bool) -> str:
    """Resolve the URL's host, refuse it if any address is unsafe, and return the address to connect to."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise ApiError(422, "validation_error", f"url must be a string of 1 to {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ApiError(422, "validation_error", "url is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ApiError(422, "unsafe_url", "Webhook URLs must use http or https.")
    host = parts.hostname
    if not host:
        raise ApiError(422, "validation_error", "url has no host")
    if parts.username or parts.password:
        raise ApiError(422, "validation_error", "url must not carry credentials")
    try:
        infos = socket.getaddrinfo(host, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise ApiError(422, "unsafe_url", f"The host {host!r} does not resolve.") from None
    if not infos:
        raise ApiError(422, "unsafe_url", f"The host {host!r} does not resolve.")
    for info in infos:
        address = info[4][0]
        try:
            problem = address_problem(address, allow_loopback=allow_loopback)
        except ValueError:
            problem = "not an IP address"
        if problem:
            raise ApiError(422, "unsafe_url", f"The host {host!r} resolves to {problem}; webhooks may not target it.")
    return infos[0][4][0]


class PinnedAdapter(HTTPAdapter):
    """Connects every request to one checked IP address, whatever the host name resolves to by then."""

    def __init__(self, address: str):
        self.address = address
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        pools = {}
        for scheme, pool_class, connection_class in (("http", HTTPConnectionPool, HTTPConnection),
                                                     ("https", HTTPSConnectionPool, HTTPSConnection)):
            pinned = type(f"Pinned{connection_class.__name__}", (_PinnedConnection, connection_class),
                          {"pinned_address": self.address})
            pools[scheme] = type(f"Pinned{pool_class.__name__}", (pool_class,), {"ConnectionCls": pinned})
        self.poolmanager.pool_classes_by_scheme = pools


class _PinnedConnection:
    """Mixed into urllib3's connections: the TCP connection goes to `pinned_address`; the Host header, SNI and
    certificate check keep the URL's host name."""

    pinned_address: str

    def _new_conn(self):
        try:
            return urllib3_connection.create_connection(
                (self.pinned_address, self.port), self.timeout, source_address=self.source_address,
                socket_options=self.socket_options)
        except TimeoutError as error:
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out.") from error
        except OSError as error:
            raise NewConnectionError(self, f"Failed to establish a new connection: {error}") from error


# --- HTTP API -------------------------------------------------------------------------------------------

bp = Blueprint("webhooks", __name__, url_prefix="/api/webhooks")


def _deps():
    return current_app.extensions["reelhouse"]


def public_webhook(record: dict) -> dict:
    return {k: record.get(k) for k in ("id", "url", "events", "active", "created_at")}


def public_delivery(record: dict) -> dict:
    return {k: record.get(k) for k in ("id", "webhook_id", "event", "video_id", "status", "attempts",
                                       "next_attempt_at", "last_status_code", "last_error", "created_at",
                                       "updated_at")}


def _own_webhook(webhook_id: str) -> dict:
    record = _deps().metadata.webhooks.get(webhook_id, tenant_id=current_principal().tenant_id)
    if record is None:
        raise ApiError(404, "not_found", "No such webhook.")
    return record


@bp.post("")
@require_role("admin")
def create_webhook():
    body = fields(json_body(), {"url": str}, {"events": list})
    events = body.get("events", list(EVENTS))
    if not events or any(not isinstance(e, str) or e not in EVENTS for e in events):
        raise ApiError(422, "validation_error", f"events must be a non-empty subset of {list(EVENTS)}",
                       fields={"events": "invalid"})
    url = check_url(body["url"], allow_loopback=_deps().config.webhook_allow_loopback)
    tenant_id = current_principal().tenant_id
    repo = _deps().metadata.webhooks
    if repo.find({"tenant_id": tenant_id}, per_page=1).total >= MAX_WEBHOOKS_PER_TENANT:
        raise ApiError(409, "too_many_webhooks", f"A tenant may have at most {MAX_WEBHOOKS_PER_TENANT} webhooks.")
    secret = "whsec_" + secrets.token_urlsafe(32)
    record = repo.add({"tenant_id": tenant_id, "url": url, "events": list(dict.fromkeys(events)),
                       "secret": secret, "active": True})
    return jsonify({**public_webhook(record), "secret": secret}), 201


@bp.get("")
@require_role("admin")
def list_webhooks():
    page, per_page = page_args()
    result = _deps().metadata.webhooks.find({"tenant_id": current_principal().tenant_id}, newest_first=True,
                                            page=page, per_page=per_page)
    return jsonify(items=[public_webhook(r) for r in result.items], total=result.total, page=page,
                   per_page=per_page)


@bp.get("/<webhook_id>")
@require_role("admin")
def get_webhook(webhook_id: str):
    return jsonify(public_webhook(_own_webhook(webhook_id)))


@bp.delete("/<webhook_id>")
@require_role("admin")
def delete_webhook(webhook_id: str):
    record = _own_webhook(webhook_id)
    metadata = _deps().metadata
    metadata.webhooks.delete(record["id"], tenant_id=record["tenant_id"])
    metadata.webhook_deliveries.delete_where({"webhook_id": record["id"], "tenant_id": record["tenant_id"]})
    return "", 204


@bp.get("/<webhook_id>/deliveries")
@require_role("admin")
def list_deliveries(webhook_id: str):
    record = _own_webhook(webhook_id)
    page, per_page = page_args()
    result = _deps().metadata.webhook_deliveries.find(
        {"webhook_id": record["id"], "tenant_id": record["tenant_id"]}, newest_first=True, page=page,
        per_page=per_page)
    return jsonify(items=[public_delivery(r) for r in result.items], total=result.total, page=page,
                   per_page=per_page)


# --- delivery -------------------------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: str) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def backoff(attempts: int, base: float) -> float:
    """Delay after the `attempts`-th failed attempt: base, 2·base, 4·base, … capped at one hour."""
    return min(base * (2 ** max(attempts - 1, 0)), MAX_BACKOFF)


class WebhookDispatcher:
    def __init__(self, deps: Any, *, poll_interval: float | None = None, retry_base: float | None = None):
        self.deps = deps
        self.metadata = deps.metadata
        self.poll_interval = poll_interval if poll_interval is not None else deps.config.webhook_poll_interval
        self.retry_base = retry_base if retry_base is not None else deps.config.webhook_retry_base
        self.allow_loopback = deps.config.webhook_allow_loopback
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._subscription = None

    # events → delivery records (publisher's thread: metadata writes only, no HTTP)
    def on_event(self, topic: str, event: dict[str, Any]) -> None:
        if topic not in EVENTS:
            return
        tenant_id, video_id = event.get("tenant_id"), event.get("video_id")
        if not tenant_id or not video_id:
            return
        hooks = self.metadata.webhooks.find({"tenant_id": tenant_id, "active": True}, per_page=1000).items
        now = time.time()
        created = False
        for hook in hooks:
            if topic not in hook.get("events", EVENTS):
                continue
            delivery_id = new_id()
            data = {"video_id": video_id, "status": "ready" if topic == "video.ready" else "failed"}
            if topic == "video.failed":
                data["error"] = event.get("error")
            body = json.dumps({"id": delivery_id, "type": topic,
                               "created_at": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                               "data": data}, separators=(",", ":"))
            self.metadata.webhook_deliveries.add({
                "id": delivery_id, "tenant_id": tenant_id, "webhook_id": hook["id"], "event": topic,
                "video_id": video_id, "status": "pending", "attempts": 0, "next_attempt_at": now,
                "first_at": now, "last_status_code": None, "last_error": None, "body": body})
            created = True
        if created:
            self._wake.set()

    # the dispatcher loop
    def start(self) -> WebhookDispatcher:
        self._subscription = self.deps.events.subscribe(self.on_event, "video.#")
        self._thread = threading.Thread(target=self._run, name="webhook-dispatcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._subscription is not None:
            self._subscription.close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_due()
            except Exception:
                log.exception("webhook dispatcher pass failed")
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def run_due(self, now: float | None = None) -> int:
        """Claim and attempt every due delivery; returns how many attempts were made."""
        now = time.time() if now is None else now
        due = self.metadata.webhook_deliveries.find(
            {"status": "pending", "next_attempt_at": {"$lte": now}}, per_page=100).items
        made = 0
        for delivery in due:
            if self._stop.is_set():
                break
            claimed = self._claim(delivery, now)
            if claimed is not None:
                self._attempt(claimed)
                made += 1
        return made

    def _claim(self, delivery: dict, now: float) -> dict | None:
        try:
            return self.metadata.webhook_deliveries.update(
                delivery["id"],
                {"attempts": int(delivery.get("attempts", 0)) + 1, "next_attempt_at": now + CLAIM_LEASE},
                expected_version=delivery["version"])
        except VersionConflict:
            return None  # another replica took it
        except Exception:
            log.exception("could not claim webhook delivery %s", delivery["id"])
            return None

    def _attempt(self, delivery: dict) -> None:
        repo = self.metadata.webhook_deliveries
        hook = self.metadata.webhooks.get(delivery["webhook_id"], tenant_id=delivery["tenant_id"])
        if hook is None or not hook.get("active", True):
            repo.update(delivery["id"], {"status": "failed", "last_error": "webhook removed or disabled"})
            return
        code, error = None, None
        try:
            # checked again (DNS may have changed since registration) and connected to exactly that address
            address = checked_address(hook["url"], allow_loopback=self.allow_loopback)
            timestamp = int(time.time())
            with requests.Session() as session:
                session.trust_env = False  # never send tenant callbacks through an environment proxy
                session.mount("http://", PinnedAdapter(address))
                session.mount("https://", PinnedAdapter(address))
                response = session.post(
                    hook["url"], data=delivery["body"].encode(), timeout=TIMEOUT, allow_redirects=False,
                    headers={"Content-Type": "application/json", "User-Agent": "Reelhouse-Webhooks/1",
                             "Reelhouse-Event": delivery["event"], "Reelhouse-Delivery": delivery["id"],
                             "Reelhouse-Signature": sign(hook["secret"], timestamp, delivery["body"])})
                code = response.status_code
                response.close()
            if 200 <= code < 300:
                repo.update(delivery["id"], {"status": "delivered", "last_status_code": code, "last_error": None})
                return
            error = f"HTTP {code}"
        except ApiError as refused:
            error = refused.message
        except requests.RequestException as failure:
            error = f"{type(failure).__name__}"
        now = time.time()
        next_at = now + backoff(int(delivery["attempts"]), self.retry_base)
        gave_up = next_at - float(delivery.get("first_at", now)) > GIVE_UP_AFTER
        repo.update(delivery["id"], {"status": "failed" if gave_up else "pending", "next_attempt_at": next_at,
                                     "last_status_code": code, "last_error": error})


def register(app: Flask, deps: Any, *, start_threads: bool = True) -> WebhookDispatcher | None:
    """Mount `/api/webhooks` and (unless told not to) start consuming events and delivering."""
    app.register_blueprint(bp)
    if not start_threads:
        return None
    dispatcher = WebhookDispatcher(deps).start()
    app.extensions["reelhouse.webhooks"] = dispatcher
    return dispatcher
