"""The video record: statuses, visibility rules, its API shape, and events with a per-video sequence number."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from services.ports import EventBus, Repository, VersionConflict
from services.tokens import Principal

log = logging.getLogger(__name__)

STATUSES = ("uploading", "uploaded", "processing", "ready", "failed")
VISIBILITIES = ("private", "tenant", "unlisted")
DEFAULT_VISIBILITY = "tenant"
EVENTS = ("video.status", "video.progress", "video.playable", "video.rendition_ready", "video.ready", "video.failed")


def new_video(tenant_id: str, owner_id: str, title: str, *, video_id: str | None = None,
              visibility: str = DEFAULT_VISIBILITY, filename: str | None = None, size: int = 0) -> dict[str, Any]:
    video = {
        "tenant_id": tenant_id, "owner_id": owner_id, "title": title, "description": "", "status": "uploading",
        "progress": 0, "duration": None, "width": None, "height": None, "renditions": [], "error": None,
        "visibility": visibility, "filename": filename, "size": size, "seq": 0,
    }
    if video_id:
        video["id"] = video_id
    return video


def can_see(principal: Principal, video: dict[str, Any]) -> bool:
    """Members see their tenant's `tenant` and `unlisted` videos; `private` ones only the owner, editors, admins."""
    if principal.tenant_id != video["tenant_id"]:
        return False
    if video["visibility"] == "private":
        return principal.user_id == video["owner_id"] or principal.has_role("editor")
    return True


def can_edit(principal: Principal, video: dict[str, Any]) -> bool:
    return can_see(principal, video) and principal.has_role("editor")


def public_video(video: dict[str, Any]) -> dict[str, Any]:
    """The contract's video shape (DESIGN §3)."""
    return {
        "id": video["id"], "title": video["title"], "description": video.get("description", ""),
        "status": video["status"], "progress": video.get("progress", 0), "duration": video.get("duration"),
        "width": video.get("width"), "height": video.get("height"), "renditions": video.get("renditions", []),
        "thumbnail_url": video.get("thumbnail_url"), "poster_url": video.get("poster_url"),
        "storyboard_url": video.get("storyboard_url"),
        "playback": video.get("playback") or {"hls_url": None, "original_url": None, "token_expires_at": None},
        "error": video.get("error"), "created_at": video["created_at"], "owner_id": video["owner_id"],
        "visibility": video["visibility"], "size": video.get("size"), "filename": video.get("filename"),
    }


def source_playable(video: dict[str, Any]) -> bool:
    """Whether the uploaded file itself plays in browsers by range requests: H.264 (8-bit 4:2:0) with AAC or no
    audio, in an MP4/MOV container."""
    source = video.get("source") or {}
    return (source.get("video_codec") == "h264" and source.get("audio_codec") in (None, "aac")
            and "mp4" in (source.get("container") or "")
            and source.get("pixel_format") in (None, "yuv420p", "yuvj420p"))


ORIGINAL_SOURCES = ("upload", "faststart")


def original_source(video: dict[str, Any]) -> str | None:
    """Which file `/original` serves now: the faststart remux once it exists, else a playable upload as it came."""
    if video.get("original_playable"):
        return "faststart"
    if video["status"] in ("uploaded", "processing", "ready") and source_playable(video):
        return "upload"
    return None


def original_key_to_serve(video: dict[str, Any], source: str | None = None) -> str | None:
    """The object `/original` serves. `source` (the `src` an original_url was issued with) pins one file, so a
    player in the middle of range requests never gets bytes of the other one when the remux appears."""
    from services import keys

    current = original_source(video)
    if source is None:
        source = current
    if source == "faststart" and video.get("original_playable"):
        return keys.playable_original_key(video["tenant_id"], video["id"])
    if source == "upload" and video["status"] in ("uploaded", "processing", "ready") and source_playable(video):
        return keys.original_key(video["tenant_id"], video["id"])
    return None


def api_video(video: dict[str, Any], playback: Any, *, viewer: str | None = None, share_token: str | None = None
              ) -> dict[str, Any]:
    """The contract's video with URLs that carry a playback token for `viewer` (a user id; None: the share link),
    so players need no headers."""
    data = public_video(video)
    token, expires = playback.issue(video, user_id=viewer, shared=viewer is None)
    base, query = f"/api/stream/{video['id']}", f"?token={token}"
    ready = video["status"] == "ready"
    data["playback"] = {
        "hls_url": f"{base}/hls/master.m3u8{query}" if video.get("hls_available") else None,
        "original_url": f"{base}/original{query}&src={original_source(video)}" if original_source(video) else None,
        "token_expires_at": expires,
    }
    data["thumbnail_url"] = f"{base}/thumbnail.jpg{query}" if ready else None
    data["poster_url"] = f"{base}/poster.jpg{query}" if ready else None
    data["storyboard_url"] = f"{base}/storyboard.vtt{query}" if ready else None
    if share_token is not None:
        data["share_url"] = f"/watch?v={video['id']}&share={share_token}"
    return data


def update_video(videos: Repository, video_id: str, change: Callable[[dict], dict | None], *,
                 tenant_id: str | None = None, attempts: int = 20) -> dict | None:
    """Compare-and-set loop: `change(current)` returns the fields to set (or None to leave it); None if gone."""
    for _ in range(attempts):
        current = videos.get(video_id, tenant_id=tenant_id)
        if current is None:
            return None
        changes = change(current)
        if changes is None:
            return current
        try:
            return videos.update(video_id, changes, expected_version=current["version"])
        except VersionConflict:
            continue
    raise VersionConflict(f"videos/{video_id} kept changing")


def publish_deleted(events: EventBus, video: dict[str, Any]) -> None:
    """`video.deleted`, once the record is gone. It carries what fan-out needs to route it (owner, visibility),
    since nobody can look the video up any more."""
    event = {"video_id": video["id"], "tenant_id": video["tenant_id"], "owner_id": video.get("owner_id"),
             "visibility": video.get("visibility", DEFAULT_VISIBILITY), "seq": video.get("seq", 0) + 1,
             "ts": time.time()}
    try:
        events.publish("video.deleted", event)
    except Exception:
        log.exception("could not publish video.deleted", extra={"video_id": video["id"]})


def record_and_publish(videos: Repository, events: EventBus, video_id: str, changes: dict[str, Any],
                       emitted: list[tuple[str, dict[str, Any]]], *, when: Callable[[dict], bool] = lambda v: True
                       ) -> dict | None:
    """Apply `changes` and take one `seq` per event in the same atomic update, then publish the events.

    `when(current)` guards the transition (e.g. only from `uploading`): if it refuses, nothing changes, nothing
    is published and None is returned (None too when the video is gone). Every event carries video_id,
    tenant_id, seq (increasing per video) and ts."""
    first: int | None = None

    def change(current: dict) -> dict | None:
        nonlocal first
        if not when(current):
            first = None
            return None
        first = current.get("seq", 0) + 1
        return {**changes, "seq": current.get("seq", 0) + len(emitted)}

    video = update_video(videos, video_id, change)
    if video is None or first is None:
        return None
    for i, (name, payload) in enumerate(emitted):
        event = {"video_id": video_id, "tenant_id": video["tenant_id"], **payload, "seq": first + i, "ts": time.time()}
        try:
            events.publish(name, event)
        except Exception:
            # The record is the truth; a lost event is superseded by the next one or a page reload.
            log.exception("could not publish %s", name, extra={"video_id": video_id})
    return video
