"""The tus 1.0.0 server: creation, creation-with-upload, termination, checksum and expiration."""

from __future__ import annotations

import tempfile
import time
from typing import Any

from flask import Blueprint, Response, current_app, request
from prometheus_client import Counter
from werkzeug.exceptions import ClientDisconnected

from services.authz import current_principal, require_role
from services.bootstrap import Dependencies
from services.errors import ApiError
from services.metrics import per_registry
from services.videos import DEFAULT_VISIBILITY, VISIBILITIES, new_video, publish_deleted, record_and_publish
from upload_service import first_bytes
from upload_service.assembly import CHUNK, Assembler
from upload_service.body import Body, Interrupted, source_for
from upload_service.completion import complete_upload
from upload_service.lease import UploadLease
from upload_service.protocol import (
    CHECKSUM_ALGORITHMS,
    EXTENSIONS,
    OFFSET_CONTENT_TYPE,
    TUS_VERSION,
    clean_text,
    http_date,
    parse_checksum,
    parse_metadata,
    parse_uint,
)

bp = Blueprint("tus", __name__, url_prefix="/api/uploads")


def deps() -> Dependencies:
    return current_app.extensions["reelhouse"]


def assembler() -> Assembler:
    return current_app.extensions["assembler"]


@bp.before_request
def _check_version():
    if request.method != "OPTIONS" and request.headers.get("Tus-Resumable") != TUS_VERSION:
        raise ApiError(412, "unsupported_tus_version", f"This server speaks tus {TUS_VERSION}; send Tus-Resumable.",
                       headers={"Tus-Version": TUS_VERSION})


@bp.after_request
def _tus_headers(response: Response) -> Response:
    response.headers["Tus-Resumable"] = TUS_VERSION
    return response


@bp.route("", methods=["OPTIONS"])
@bp.route("/<upload_id>", methods=["OPTIONS"])
def options(upload_id: str | None = None):
    return "", 204, {
        "Tus-Version": TUS_VERSION, "Tus-Extension": EXTENSIONS,
        "Tus-Max-Size": str(deps().config.tus_max_size),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
    }


def tenant_usage(tenant_id: str) -> int:
    """Bytes a tenant stores or has announced (a video whose bytes were removed counts 0)."""
    total, page = 0, 1
    videos = deps().metadata.videos
    while True:
        batch = videos.find({"tenant_id": tenant_id}, page=page, per_page=500)  # size is 0 once bytes are gone
        total += sum(v.get("size") or 0 for v in batch.items)
        if page * 500 >= batch.total:
            return total
        page += 1


@bp.post("")
@require_role("editor")
def create():
    principal, config = current_principal(), deps().config
    if "Upload-Defer-Length" in request.headers:
        raise ApiError(400, "defer_length_unsupported", "Send Upload-Length: deferred lengths are not supported.")
    length = parse_uint("Upload-Length", request.headers.get("Upload-Length"))
    if length > config.tus_max_size:
        raise ApiError(413, "file_too_large", f"Uploads may have at most {config.tus_max_size} bytes.",
                       max_size=config.tus_max_size)
    header = request.headers.get("Upload-Metadata")
    metadata = parse_metadata(header)
    visibility = metadata.get("visibility") or DEFAULT_VISIBILITY
    if visibility not in VISIBILITIES:
        raise ApiError(400, "invalid_metadata", f"visibility must be one of {', '.join(VISIBILITIES)}.")
    has_body = (request.content_length or 0) > 0 or "chunked" in request.headers.get("Transfer-Encoding", "")
    if has_body and request.mimetype != OFFSET_CONTENT_TYPE:
        raise ApiError(415, "unsupported_media_type", f"Upload data must be sent as {OFFSET_CONTENT_TYPE}.")
    quota = config.tenant_quota_bytes
    if quota and tenant_usage(principal.tenant_id) + length > quota:
        raise ApiError(413, "quota_exceeded", "This organisation's storage quota would be exceeded.", quota=quota)
    assembler().check_space(length)

    filename = clean_text(metadata.get("filename") or metadata.get("name"))
    title = clean_text(metadata.get("title")) or filename or "Untitled"
    store = deps().metadata
    video = store.videos.add(new_video(principal.tenant_id, principal.user_id, title, visibility=visibility,
                                       filename=filename or None, size=length))
    upload = store.uploads.add({
        "id": video["id"], "tenant_id": principal.tenant_id, "owner_id": principal.user_id, "length": length,
        "offset": 0, "metadata_header": header, "state": "receiving", "parts": [], "staged": [],
        "multipart_id": None, "lease": None, "expires_at": time.time() + config.upload_expiry,
        "part_size": config.upload_part_size,
    })
    headers = {"Location": f"/api/uploads/{upload['id']}"}
    # Other tabs and members see the new upload appear (seq 1), before its first byte lands.
    video = record_and_publish(store.videos, deps().events, video["id"], {},
                               [("video.status", {"status": "uploading"})]) or video
    if has_body or length == 0:
        try:
            upload = _append(upload, 0, parse_checksum(request.headers.get("Upload-Checksum")))
        except ApiError:
            # The client got no Location: nothing may be left behind to count against its quota.
            assembler().discard(upload)
            store.videos.delete(upload["id"])
            store.uploads.delete(upload["id"])
            publish_deleted(deps().events, video)
            raise
        headers["Upload-Offset"] = str(upload["offset"])
    headers["Upload-Expires"] = http_date(upload["expires_at"])
    return "", 201, headers


def _load(upload_id: str) -> dict[str, Any]:
    principal = current_principal()
    if not principal.has_role("editor"):
        raise ApiError(403, "forbidden", "Uploading needs the editor role or above.")
    upload = deps().metadata.uploads.get(upload_id, tenant_id=principal.tenant_id)
    if upload is None:
        raise ApiError(404, "upload_not_found", "No such upload (it may have been terminated).")
    if upload["state"] == "expired":
        raise ApiError(410, "upload_expired", "This upload expired; start it again.")
    if upload["state"] == "receiving" and upload["expires_at"] < time.time():
        try:
            with UploadLease(deps().metadata.uploads, upload) as lease:
                expire(deps(), assembler(), lease.upload, lease)
        except ApiError:
            return upload  # being written to right now, so not abandoned after all
        raise ApiError(410, "upload_expired", "This upload expired; start it again.")
    return upload


def expire(deps: Dependencies, assembler: Assembler, upload: dict[str, Any], lease: UploadLease) -> None:
    """Free an abandoned upload's bytes and its video; keep a tombstone so the client hears 410, not 404."""
    assembler.discard(upload)
    video = deps.metadata.videos.get(upload["id"], tenant_id=upload["tenant_id"])
    deps.metadata.videos.delete(upload["id"], tenant_id=upload["tenant_id"])
    lease.checkpoint({"state": "expired", "parts": [], "staged": []})
    if video is not None:
        publish_deleted(deps.events, video)


@bp.route("/<upload_id>", methods=["HEAD"])
def head(upload_id: str):
    upload = _load(upload_id)
    headers = {"Upload-Offset": str(upload["offset"]), "Upload-Length": str(upload["length"]),
               "Cache-Control": "no-store"}
    if upload.get("metadata_header"):
        headers["Upload-Metadata"] = upload["metadata_header"]
    if upload["state"] == "receiving":
        headers["Upload-Expires"] = http_date(upload["expires_at"])
    return "", 200, headers


@bp.patch("/<upload_id>")
def patch(upload_id: str):
    upload = _load(upload_id)
    if request.mimetype != OFFSET_CONTENT_TYPE:
        raise ApiError(415, "unsupported_media_type", f"PATCH bodies must be sent as {OFFSET_CONTENT_TYPE}.")
    offset = parse_uint("Upload-Offset", request.headers.get("Upload-Offset"))
    upload = _append(upload, offset, parse_checksum(request.headers.get("Upload-Checksum")))
    headers = {"Upload-Offset": str(upload["offset"])}
    if upload["state"] == "receiving":
        headers["Upload-Expires"] = http_date(upload["expires_at"])
    return "", 204, headers


def _body(limit: int, lease: UploadLease) -> Body:
    counter = _received_bytes(deps().registry)
    source = source_for(request.environ, request.stream, deps().config.client_body_timeout)
    return Body(source, limit, lease.check, counter.inc)


def _received_bytes(registry) -> Counter:
    """`reelhouse_upload_bytes_total`: PATCH body bytes read, whether or not the PATCH then succeeded."""
    return per_registry(registry, "upload_bytes", lambda r: Counter(
        "reelhouse_upload_bytes_total", "Upload bytes received (tus PATCH)", registry=r))


def _verified(body: Body, checksum, spool) -> Body:
    """Spool the whole body, check its digest, and only then hand it on: a mismatching chunk is never written."""
    digest, expected = checksum
    buffer = memoryview(bytearray(CHUNK))
    size = 0
    while True:
        try:
            n = body.readinto(buffer)
        except Interrupted:
            raise ApiError(400, "incomplete_body", "The body ended early; nothing of it was kept.") from None
        if not n:
            break
        digest.update(buffer[:n])
        spool.write(buffer[:n])
        size += n
    if digest.digest() != expected:
        raise ApiError(460, "checksum_mismatch", "The chunk does not match Upload-Checksum; it was discarded.")
    spool.seek(0)
    return Body(spool, size, body.check, lambda _n: None)


def _append(upload: dict[str, Any], offset: int, checksum) -> dict[str, Any]:
    if offset != upload["offset"]:
        raise ApiError(409, "offset_mismatch", f"Upload-Offset is {offset} but the upload is at {upload['offset']}.",
                       headers={"Upload-Offset": str(upload["offset"])}, offset=upload["offset"])
    remaining = upload["length"] - offset
    declared = request.content_length
    if declared is not None and declared > remaining:
        raise ApiError(413, "chunk_too_large", f"Only {remaining} more bytes fit in this upload.")
    config = deps().config
    with UploadLease(deps().metadata.uploads, upload) as lease, tempfile.TemporaryFile() as spool:
        body = _body(remaining, lease)
        if checksum is not None:
            body = _verified(body, checksum, spool)
        if upload["state"] == "receiving" and remaining > 0:
            body.keep_head(first_bytes.wanted(offset))
            changes = assembler().write(lease.upload, body, lease.checkpoint)
            if first_bytes.wanted(offset):
                changes["head"] = first_bytes.extended(lease.upload, offset, bytes(body.head), changes["offset"])
        else:
            changes = {}
        overlong = declared is None and _more_body()
        lease.checkpoint({**changes, "expires_at": time.time() + config.upload_expiry})
        if lease.upload["offset"] == lease.upload["length"] and lease.upload["state"] != "done":
            complete_upload(deps(), assembler(), lease.upload, lease.checkpoint)
        upload = lease.upload
    if overlong:
        raise ApiError(413, "chunk_too_large", "The body is longer than the rest of the upload.")
    return upload


def _more_body() -> bool:
    """A chunked body that goes on past Upload-Length (its first part was kept; the rest is refused)."""
    try:
        return request.stream.read(1) != b""
    except (ClientDisconnected, OSError):
        return False


@bp.delete("/<upload_id>")
def terminate(upload_id: str):
    upload = _load(upload_id)
    if upload["state"] == "done":
        raise ApiError(409, "upload_complete", "This upload is complete; delete the video instead.")
    video = deps().metadata.videos.get(upload_id, tenant_id=upload["tenant_id"])
    with UploadLease(deps().metadata.uploads, upload) as lease:
        assembler().discard(lease.upload)
        deps().metadata.videos.delete(upload_id, tenant_id=upload["tenant_id"])
        deps().metadata.uploads.delete(upload_id)
        lease.held = False
    if video is not None:
        publish_deleted(deps().events, video)
    return "", 204
