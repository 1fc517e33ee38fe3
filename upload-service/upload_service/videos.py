"""The tenant's video library: list, get, edit and delete (visibility rules from services.videos)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from services import keys
from services.authz import current_principal, require_role
from services.errors import ApiError
from services.playback import claims_or_error
from services.videos import STATUSES, VISIBILITIES, api_video, can_edit, can_see, publish_deleted
from services.web import fields, json_body, page_args
from upload_service.lease import UploadLease

bp = Blueprint("videos", __name__, url_prefix="/api/videos")


def _deps():
    return current_app.extensions["reelhouse"]


def _view(video: dict) -> dict:
    """The API shape with fresh playback URLs; editors of an unlisted video also get its share link."""
    deps, principal = _deps(), current_principal()
    share = deps.playback.share(video) if video["visibility"] == "unlisted" and can_edit(principal, video) else None
    return api_video(video, deps.playback, viewer=principal.user_id, share_token=share)


def _video_or_404(video_id: str) -> dict:
    principal = current_principal()
    video = _deps().metadata.videos.get(video_id, tenant_id=principal.tenant_id)
    if video is None or not can_see(principal, video):
        raise ApiError(404, "not_found", "No such video.")
    return video


@bp.get("")
@require_role("viewer")
def list_videos():
    principal = current_principal()
    page, per_page = page_args()
    where: dict = {"tenant_id": principal.tenant_id}
    status = request.args.get("status")
    if status:
        if status not in STATUSES:
            raise ApiError(422, "validation_error", f"status must be one of {', '.join(STATUSES)}")
        where["status"] = status
    if not principal.has_role("editor"):
        where["$or"] = [{"visibility": {"$ne": "private"}}, {"owner_id": principal.user_id}]
    query = (request.args.get("q") or "").strip()[:200] or None
    result = _deps().metadata.videos.find(where, search=query, newest_first=True, page=page, per_page=per_page)
    return jsonify(items=[_view(v) for v in result.items], total=result.total, page=page, per_page=per_page)


@bp.get("/<video_id>")
def get_video(video_id: str):
    share = request.args.get("share")
    if share and "Authorization" not in request.headers:
        return jsonify(_shared(video_id, share))
    current_principal()
    return jsonify(_view(_video_or_404(video_id)))


def _shared(video_id: str, token: str) -> dict:
    """An unlisted video for anyone holding its share link, logged in or not."""
    deps = _deps()
    claims = claims_or_error(deps.playback, token, video_id)
    video = deps.metadata.videos.get(video_id, tenant_id=claims["tid"])
    if video is None:
        raise ApiError(404, "not_found", "No such video.")
    if claims["typ"] != "share" or video["visibility"] != "unlisted" or claims.get("sv") != video.get(
            "share_version", 0):
        raise ApiError(401, "share_revoked", "This share link no longer works; ask for a new one.")
    return api_video(video, deps.playback)


@bp.post("/<video_id>/share")
@require_role("editor")
def rotate_share_link(video_id: str):
    """A new share link for an unlisted video; every earlier link stops working."""
    video = _video_or_404(video_id)
    if video["visibility"] != "unlisted":
        raise ApiError(409, "not_unlisted", "Only unlisted videos have share links; set visibility to unlisted.")
    updated = _deps().metadata.videos.update(video_id, {"share_version": video.get("share_version", 0) + 1},
                                             tenant_id=video["tenant_id"])
    return jsonify(_view(updated))


@bp.patch("/<video_id>")
@require_role("viewer")
def update_video(video_id: str):
    video = _video_or_404(video_id)
    if not can_edit(current_principal(), video):
        raise ApiError(403, "forbidden", "Editing videos needs the editor role or above.")
    body = fields(json_body(), {}, {"title": str, "description": str, "visibility": str})
    changes = {}
    if "title" in body:
        title = " ".join(body["title"].split())
        if not 1 <= len(title) <= 200:
            raise ApiError(422, "validation_error", "title must have 1 to 200 characters", fields={"title": "length"})
        changes["title"] = title
    if "description" in body:
        if len(body["description"]) > 5000:
            raise ApiError(422, "validation_error", "description may have at most 5000 characters")
        changes["description"] = body["description"]
    if "visibility" in body:
        if body["visibility"] not in VISIBILITIES:
            raise ApiError(422, "validation_error", f"visibility must be one of {', '.join(VISIBILITIES)}")
        changes["visibility"] = body["visibility"]
    if not changes:
        raise ApiError(422, "validation_error", "Send title, description and/or visibility.")
    updated = _deps().metadata.videos.update(video_id, changes, tenant_id=video["tenant_id"])
    return jsonify(_view(updated))


@bp.delete("/<video_id>")
@require_role("viewer")
def delete_video(video_id: str):
    video = _video_or_404(video_id)
    if not can_edit(current_principal(), video):
        raise ApiError(403, "forbidden", "Deleting videos needs the editor role or above.")
    remove_video(video)
    return "", 204


def remove_video(video: dict) -> None:
    """Every object and record of a video, an unfinished upload's parts included."""
    deps = _deps()
    upload = deps.metadata.uploads.get(video["id"], tenant_id=video["tenant_id"])
    if upload is not None:
        # Under the upload's lease: a PATCH still writing would otherwise put bytes back after the delete.
        with UploadLease(deps.metadata.uploads, upload) as lease:
            current_app.extensions["assembler"].discard(lease.upload)
            deps.metadata.videos.delete(video["id"], tenant_id=video["tenant_id"])
            deps.metadata.uploads.delete(video["id"])
            lease.held = False
    deps.objects.delete_prefix(keys.video_prefix(video["tenant_id"], video["id"]))
    deps.metadata.videos.delete(video["id"], tenant_id=video["tenant_id"])
    publish_deleted(deps.events, video)
