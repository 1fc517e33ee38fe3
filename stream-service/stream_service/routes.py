"""/api/stream: the original by range requests, HLS playlists and segments, images and the storyboard."""

from __future__ import annotations

import hashlib
import re

from flask import Blueprint, current_app, request

from services import keys
from services.authz import current_principal
from services.errors import ApiError
from services.playback import claims_or_error
from services.ports import ObjectNotFound
from services.tokens import Principal
from services.videos import ORIGINAL_SOURCES, can_see, original_key_to_serve
from stream_service.delivery import EVENT_PLAYLIST, IMMUTABLE, VOD_PLAYLIST, serve_bytes, serve_object
from stream_service.playlists import is_vod, playlist_with_token, storyboard_with_token

bp = Blueprint("stream", __name__, url_prefix="/api/stream")

_RENDITION = re.compile(r"[0-9]{2,4}p")
_HLS_FILE = re.compile(r"index\.m3u8|init\.mp4|seg_[0-9]{5,9}\.m4s")
ORIGINAL_CACHE = "private, max-age=3600"


def _deps():
    return current_app.extensions["reelhouse"]


def authorize(video_id: str) -> tuple[dict, str]:
    """The video the caller may watch, and the token its URLs carry on. Bearer callers get a fresh token."""
    deps = _deps()
    token = request.args.get("token")
    if token:
        claims = claims_or_error(deps.playback, token, video_id)
        video = deps.metadata.videos.get(video_id, tenant_id=claims["tid"])
        if video is None:
            raise ApiError(404, "not_found", "No such video.")
        # Access is checked again on every use: a token never outlives a visibility change, a removed user or
        # a rotated share link.
        if "sv" in claims and (video["visibility"] != "unlisted" or claims["sv"] != video.get("share_version", 0)):
            raise ApiError(401, "share_revoked", "This share link no longer works; ask for a new one.")
        if "sub" in claims:
            user = deps.metadata.users.get(claims["sub"], tenant_id=claims["tid"])
            if user is None or not can_see(Principal(user["id"], claims["tid"], user["role"]), video):
                raise ApiError(404, "not_found", "No such video.")
        elif "sv" not in claims:
            raise ApiError(401, "invalid_token", "This playback token is not valid.")
        return video, token
    principal = current_principal()
    video = deps.metadata.videos.get(video_id, tenant_id=principal.tenant_id)
    if video is None or not can_see(principal, video):
        raise ApiError(404, "not_found", "No such video.")
    return video, deps.playback.issue(video, user_id=principal.user_id)[0]


def _mode() -> str:
    return _deps().config.stream_delivery


def _object(key: str, cache_control: str, content_type: str | None = None):
    return serve_object(_deps().objects, key, mode=_mode(), cache_control=cache_control, content_type=content_type)


def _rewritten(key: str, token: str, rewrite, content_type: str, cache_control: str | None = None):
    store = _deps().objects
    try:
        info = store.stat(key)
        text = store.read(key).decode("utf-8")
    except ObjectNotFound:
        raise ApiError(404, "not_found", "Not available (yet).") from None
    body = rewrite(text, token).encode("utf-8")
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    cache = cache_control or (VOD_PLAYLIST if is_vod(text) else EVENT_PLAYLIST)
    if "token" not in request.args:
        # Built for a bearer caller, with a token minted for them inside: the same URL must not be replayed
        # from a cache to somebody else, nor after that token expired.
        cache = "private, no-store"
    return serve_bytes(body, etag=etag, last_modified=info.last_modified, content_type=content_type,
                       cache_control=cache)


@bp.route("/<video_id>/original", methods=["GET", "HEAD"])
def original(video_id: str):
    video, _ = authorize(video_id)
    source = request.args.get("src")
    if source is not None and source not in ORIGINAL_SOURCES:
        raise ApiError(400, "invalid_source", f"src must be one of {', '.join(ORIGINAL_SOURCES)}.")
    key = original_key_to_serve(video, source)
    if key is None:
        raise ApiError(404, "not_playable", "This video's original is not playable in browsers; use HLS.")
    return _object(key, ORIGINAL_CACHE, "video/mp4")


@bp.route("/<video_id>/hls/master.m3u8", methods=["GET", "HEAD"])
def master(video_id: str):
    video, token = authorize(video_id)
    cache = VOD_PLAYLIST if video["status"] == "ready" else EVENT_PLAYLIST
    return _rewritten(keys.hls_master_key(video["tenant_id"], video_id), token, playlist_with_token,
                      "application/vnd.apple.mpegurl", cache)


@bp.route("/<video_id>/hls/<rendition>/<filename>", methods=["GET", "HEAD"])
def hls_file(video_id: str, rendition: str, filename: str):
    if not _RENDITION.fullmatch(rendition) or not _HLS_FILE.fullmatch(filename):
        raise ApiError(404, "not_found", "No such file.")
    video, token = authorize(video_id)
    key = keys.hls_rendition_key(video["tenant_id"], video_id, rendition, filename)
    if filename == "index.m3u8":
        return _rewritten(key, token, playlist_with_token, "application/vnd.apple.mpegurl")
    return _object(key, IMMUTABLE, "video/mp4" if filename == "init.mp4" else "video/iso.segment")


def _image(video_id: str, key_of) -> object:
    video, _ = authorize(video_id)
    return _object(key_of(video["tenant_id"], video_id), IMMUTABLE, "image/jpeg")


@bp.route("/<video_id>/thumbnail.jpg", methods=["GET", "HEAD"])
def thumbnail(video_id: str):
    return _image(video_id, keys.thumbnail_key)


@bp.route("/<video_id>/poster.jpg", methods=["GET", "HEAD"])
def poster(video_id: str):
    return _image(video_id, keys.poster_key)


@bp.route("/<video_id>/storyboard.jpg", methods=["GET", "HEAD"])
def storyboard_image(video_id: str):
    return _image(video_id, keys.storyboard_image_key)


@bp.route("/<video_id>/storyboard.vtt", methods=["GET", "HEAD"])
def storyboard(video_id: str):
    video, token = authorize(video_id)
    # Never immutable: the index names the sprite with a token that expires.
    return _rewritten(keys.storyboard_index_key(video["tenant_id"], video_id), token, storyboard_with_token,
                      "text/vtt", VOD_PLAYLIST if video["status"] == "ready" else EVENT_PLAYLIST)
