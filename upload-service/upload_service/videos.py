"""The tenant's video library: list, get, edit and delete (visibility rules from services.videos)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from services import keys
from services.authz import current_principal, require_role
from services.errors import ApiError
from services.videos import STATUSES, VISIBILITIES, can_edit, can_see, public_video
from services.web import fields, json_body, page_args
from upload_service.lease import UploadLease

bp = Blueprint("videos", __name__, url_prefix="/api/videos")


def _deps():
    return current_app.extensions["reelhouse"]


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
    return jsonify(items=[public_video(v) for v in result.items], total=result.total, page=page, per_page=per_page)


@bp.get("/<video_id>")
@require_role("viewer")
def get_video(video_id: str):
    return jsonify(public_video(_video_or_404(video_id)))


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
    return jsonify(public_video(updated))


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
