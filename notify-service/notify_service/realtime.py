"""Socket.IO endpoint (path `/socket.io`): token auth on connect, tenant/user/video rooms, event fan-out.

Async mode (`NOTIFY_ASYNC_MODE`), chosen by measurement (bench/realtime.py, BENCHMARKS.md), never eventlet
(DESIGN §6). A notify replica runs **gevent** (`gunicorn -k gevent -w 1 'notify_service:create_app()'`): with
1,000 sockets and bursts of 10 events it delivered with p99 43 ms against threading mode's ~1 s, at 72 vs 125 KiB
per socket. The embedded `reelhouse up` keeps **threading** (simple-websocket under gunicorn's gthread worker, one
thread per open websocket): gevent would need `monkey.patch_all()` of that whole process (worker threads, pika,
ffmpeg readers, boto3) for the sake of one component. Both modes decline permessage-deflate
(`WithoutWebsocketCompression`) and send through `notify_service.websocket` (frames built once per broadcast;
under gevent, what is pending for a socket leaves in one write).

Rooms: `tenant:<tid>` (every member), `tenant:<tid>:staff` (editors and admins), `user:<uid>`, `video:<id>`.
Fan-out subscribes once per app to `deps.events` ("video.#"); each event goes to `tenant:<tid>` unless the video
is private, then to the owner's `user:` room and `tenant:<tid>:staff` only. Never across tenants: every room name
used for an event is derived from the tenant of the stored video, and the video must belong to the event's tenant.
`subscribe` checks that the caller may see the video and records the follow (`video:<id>`); since every event a
socket may see already reaches it through its tenant, user or staff room, the video room adds no delivery path
that could outlive a visibility change.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from flask import Flask, request
from flask_socketio import SocketIO, join_room, leave_room
from prometheus_client import Counter, Gauge
from socketio.exceptions import ConnectionRefusedError as Refused

from notify_service import websocket
from services.bootstrap import Dependencies
from services.tokens import Principal, TokenError
from services.videos import can_see

log = logging.getLogger(__name__)

VIDEO_CACHE_SECONDS = 2.0
SWEEP_SECONDS = 1.0


class AuthFailure(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class WithoutWebsocketCompression:
    """WSGI middleware that hides the client's websocket extension offers (permessage-deflate, which browsers
    always offer) from simple-websocket, which would otherwise accept it: the socket then runs uncompressed, as
    RFC 6455 lets a server decide. Our events are ~200-byte JSON that deflate barely shrinks, while each
    compressed socket holds a zlib compressor (~256 KiB) and compresses every frame apart (bench/realtime.py:
    a quarter of the CPU of a burst)."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        return self.app(environ, start_response)


class Realtime:
    def __init__(self, app: Flask, deps: Dependencies):
        self.deps = deps
        origins = list(deps.config.cors_origins) or None  # None: same-origin only (Flask-SocketIO default)
        self.socketio = SocketIO(app, async_mode=deps.config.notify_async_mode, path="socket.io",
                                 cors_allowed_origins=origins, logger=False, engineio_logger=False,
                                 client_manager=websocket.FanOutManager())
        app.wsgi_app = WithoutWebsocketCompression(app.wsgi_app)
        websocket.install(self.socketio.server)
        self.sessions: dict[str, dict[str, Any]] = {}  # sid -> {"principal", "exp"}
        mode = deps.config.notify_async_mode
        self.connected = Gauge("reelhouse_notify_connected_sockets", "Socket.IO connections authenticated now",
                               ["async_mode"], registry=deps.registry).labels(mode)
        self.fanned_out = Counter("reelhouse_notify_events_total", "Events fanned out to sockets, by topic",
                                  ["topic"], registry=deps.registry)
        self.lock = threading.Lock()
        self._video_cache: dict[str, tuple[float, dict | None]] = {}
        self._handlers()
        self.subscription = deps.events.subscribe(self.on_event, "video.#")
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep, name="notify-expiry-sweep", daemon=True)
        self._sweeper.start()

    # -- auth -----------------------------------------------------------------------------------------------
    def authenticate(self, auth: Any) -> tuple[Principal, float]:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not token or not isinstance(token, str):
            raise AuthFailure("missing_token", "Send an access token: auth={token: ...}.")
        try:
            claimed = self.deps.verifier.principal(token.strip())
        except TokenError as error:
            raise AuthFailure(error.code, error.message) from None
        user = self.deps.metadata.users.get(claimed.user_id, tenant_id=claimed.tenant_id)
        if user is None:
            raise AuthFailure("invalid_token", "The account behind this token no longer exists.")
        exp = float(claimed.claims.get("exp") or (time.time() + 900))
        return Principal(claimed.user_id, claimed.tenant_id, user["role"], claimed.claims), exp

    def _join_identity(self, sid: str, principal: Principal) -> None:
        join_room(f"tenant:{principal.tenant_id}", sid=sid)
        join_room(f"user:{principal.user_id}", sid=sid)
        if principal.has_role("editor"):
            join_room(f"tenant:{principal.tenant_id}:staff", sid=sid)
        else:
            leave_room(f"tenant:{principal.tenant_id}:staff", sid=sid)

    def _handlers(self) -> None:
        sio = self.socketio

        @sio.on("connect")
        def connect(auth=None):
            try:
                principal, exp = self.authenticate(auth)
            except AuthFailure as failure:
                raise Refused(failure.message) from None  # the client's connect_error gets the message
            sid = request.sid
            with self.lock:
                self.sessions[sid] = {"principal": principal, "exp": exp, "videos": set()}
                self.connected.set(len(self.sessions))
            self._join_identity(sid, principal)
            return True

        @sio.on("disconnect")
        def disconnect(*_args):
            with self.lock:
                self.sessions.pop(request.sid, None)
                self.connected.set(len(self.sessions))

        @sio.on("auth")
        def reauth(data=None):
            sid = request.sid
            with self.lock:
                session = self.sessions.get(sid)
            if session is None:
                return {"error": {"code": "not_connected", "message": "Connect first."}}
            try:
                principal, exp = self.authenticate(data)
            except AuthFailure as failure:
                return {"error": {"code": failure.code, "message": failure.message}}
            old: Principal = session["principal"]
            if (principal.tenant_id, principal.user_id) != (old.tenant_id, old.user_id):
                return {"error": {"code": "identity_mismatch",
                                  "message": "Re-authenticate as the same user; reconnect to switch users."}}
            with self.lock:
                session.update(principal=principal, exp=exp)
            self._join_identity(sid, principal)
            # a role change may hide private videos this socket followed
            for video_id in list(session["videos"]):
                video = self._video(video_id, fresh=True)
                if video is None or not can_see(principal, video):
                    leave_room(f"video:{video_id}", sid=sid)
                    session["videos"].discard(video_id)
            return {"ok": True, "expires_at": int(exp), "role": principal.role}

        @sio.on("subscribe")
        def subscribe(data=None):
            session, error = self._session_and_video(data)
            if error:
                return error
            video_id = data["video_id"]
            join_room(f"video:{video_id}", sid=request.sid)
            session["videos"].add(video_id)
            return {"ok": True, "video_id": video_id}

        @sio.on("unsubscribe")
        def unsubscribe(data=None):
            with self.lock:
                session = self.sessions.get(request.sid)
            video_id = data.get("video_id") if isinstance(data, dict) else None
            if session is None or not isinstance(video_id, str):
                return {"error": {"code": "invalid_request", "message": "Send {video_id}."}}
            leave_room(f"video:{video_id}", sid=request.sid)
            session["videos"].discard(video_id)
            return {"ok": True, "video_id": video_id}

    def _session_and_video(self, data):
        with self.lock:
            session = self.sessions.get(request.sid)
        if session is None:
            return None, {"error": {"code": "not_connected", "message": "Connect first."}}
        video_id = data.get("video_id") if isinstance(data, dict) else None
        if not isinstance(video_id, str) or not video_id:
            return None, {"error": {"code": "invalid_request", "message": "Send {video_id}."}}
        principal: Principal = session["principal"]
        video = self.deps.metadata.videos.get(video_id, tenant_id=principal.tenant_id)
        if video is None or not can_see(principal, video):
            # another tenant's (or an invisible) video answers not_found: no existence leak
            return None, {"error": {"code": "not_found", "message": "No such video."}}
        return session, None

    # -- expiry ---------------------------------------------------------------------------------------------
    def _sweep(self) -> None:
        while not self._stop.wait(SWEEP_SECONDS):
            now = time.time()
            with self.lock:
                expired = [sid for sid, s in self.sessions.items() if s["exp"] <= now]
            for sid in expired:
                try:
                    self.socketio.emit("auth_expired", {"error": {
                        "code": "token_expired", "message": "The access token expired; reconnect."}}, to=sid)
                    self.socketio.server.disconnect(sid, namespace="/")
                except Exception:  # noqa: BLE001 - the socket may already be gone
                    log.debug("disconnect of %s failed", sid, exc_info=True)
                with self.lock:
                    self.sessions.pop(sid, None)
                    self.connected.set(len(self.sessions))

    def close(self) -> None:
        self._stop.set()
        self.subscription.close()

    def disconnect_everyone(self) -> None:
        """Close every socket (the server is going away): clients reconnect, through the ingress, to a replica
        that stays, instead of being cut off when the graceful timeout runs out."""
        try:
            self.socketio.server.eio.disconnect()
        except Exception:  # noqa: BLE001 - shutting down: a socket that will not close goes with the process
            log.warning("closing the sockets on shutdown failed", exc_info=True)

    # -- fan-out --------------------------------------------------------------------------------------------
    def _video(self, video_id: str, *, fresh: bool = False) -> dict | None:
        now = time.monotonic()
        cached = self._video_cache.get(video_id)
        if cached and not fresh and now - cached[0] < VIDEO_CACHE_SECONDS:
            return cached[1]
        video = self.deps.metadata.videos.get(video_id)
        if len(self._video_cache) > 10_000:
            self._video_cache.clear()
        self._video_cache[video_id] = (now, video)
        return video

    def on_event(self, topic: str, event: dict[str, Any]) -> None:
        try:
            video_id, tenant_id = event.get("video_id"), event.get("tenant_id")
            if not video_id or not tenant_id:
                return
            if topic == "video.deleted":
                # The record is gone: route by what the event carries (the publisher read it before deleting).
                self._video_cache.pop(video_id, None)
                video = {"tenant_id": tenant_id, "owner_id": event.get("owner_id"),
                         "visibility": event.get("visibility", "private")}
                event = {k: v for k, v in event.items() if k not in ("owner_id", "visibility")}
            else:
                video = self._video(video_id)
            if video is None or video.get("tenant_id") != tenant_id:
                return
            if video.get("visibility") == "private":
                rooms = [f"user:{video['owner_id']}", f"tenant:{tenant_id}:staff"]
            else:
                rooms = [f"tenant:{tenant_id}"]
            self.socketio.emit(topic, event, to=rooms)
            self.fanned_out.labels(topic).inc()
        except Exception:  # noqa: BLE001 - a bad event must not kill the bus consumer
            log.exception("notify fan-out failed for %s", topic)
