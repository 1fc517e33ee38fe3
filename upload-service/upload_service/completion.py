"""What happens once the last byte arrives: verify, sniff, probe, then `uploaded` + a transcode job — or `failed`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from services import keys
from services.bootstrap import Dependencies
from services.errors import ApiError
from services.local_files import available_locally
from services.media import SNIFF_BYTES, MediaError, probe, sniff
from services.videos import record_and_publish
from upload_service import first_bytes
from upload_service.assembly import Assembler

log = logging.getLogger(__name__)


Save = Callable[[dict[str, Any]], dict[str, Any]]


def complete_upload(deps: Dependencies, assembler: Assembler, upload: dict[str, Any], save: Save) -> dict | None:
    """Idempotent: a retry after a crash or a queue outage picks up where the last attempt stopped.

    `save` commits changes to the upload record under the caller's lease."""
    video_id, tenant_id = upload["id"], upload["tenant_id"]
    key = keys.original_key(tenant_id, video_id)
    upload = save({"state": "completing"})
    try:
        info = assembler.finish(upload)
        if info.size != upload["length"]:
            raise MediaError(f"Received {info.size} bytes but {upload['length']} were announced.")
        first = first_bytes.stored(upload, info.size)
        if first is None:  # the record lost them in a crash: read them back
            first = deps.objects.read(key, 0, SNIFF_BYTES - 1) if info.size else b""
        sniff(first)
        with available_locally(deps.objects, key) as source:
            media = probe(source)
    except MediaError as error:
        return _fail(deps, upload, key, str(error), save)
    except ApiError:
        raise
    except Exception:
        # Storage trouble, not the user's file: the upload stays `completing` and the sweeper tries again.
        log.exception("could not complete the upload", extra={"video_id": video_id})
        raise ApiError(503, "storage_unavailable", "The upload is complete but could not be stored yet; it will "
                       "be retried.", headers={"Retry-After": "30"}) from None

    # Outbox: `uploaded` and "its job is owed" are one atomic write; the job is published after it. If the queue
    # is down, the sweeper publishes owed jobs later, so nothing said `uploaded` is ever left without a job.
    video = record_and_publish(
        deps.metadata.videos, deps.events, video_id,
        {"status": "uploaded", "progress": 0, "duration": media.duration, "width": media.width,
         "height": media.height, "source": media.as_dict(), "size": info.size, "error": None, "job_pending": True},
        [("video.status", {"status": "uploaded"})],
        when=lambda current: current["status"] == "uploading",
    )
    save({"state": "done"})
    if video is not None:
        enqueue_transcode(deps, video)
    log.info("upload complete", extra={"video_id": video_id, "bytes": info.size})
    return video


def enqueue_transcode(deps: Dependencies, video: dict[str, Any]) -> bool:
    """Publish the video's transcode job and settle the outbox flag; False (logged) when the queue is down."""
    lane = "express" if (video.get("duration") or 0) <= deps.config.express_max_duration else "bulk"
    job = {"type": "transcode", "video_id": video["id"], "tenant_id": video["tenant_id"],
           "duration": video.get("duration")}
    try:
        deps.jobs.publish(job, lane=lane)
    except Exception:
        log.warning("transcode job not queued yet; the sweeper will retry", exc_info=True,
                    extra={"video_id": video["id"]})
        _mark_publish_failed(deps, video["id"])
        return False
    deps.metadata.videos.update(video["id"], {"job_pending": False, "job_publish_failed": False})
    return True


def _mark_publish_failed(deps: Dependencies, video_id: str) -> None:
    """Tell the sweeper nobody is publishing this job any more, so its next outbox pass may do it at once
    (without the mark it waits STUCK_SECONDS, in case a request is still publishing)."""
    try:
        deps.metadata.videos.update(video_id, {"job_publish_failed": True})
    except Exception:
        log.warning("could not mark the job as owed; the sweeper finds it later", exc_info=True,
                    extra={"video_id": video_id})


def _fail(deps: Dependencies, upload: dict[str, Any], key: str, error: str, save: Save) -> dict | None:
    deps.objects.delete(key)  # nothing we cannot use is kept
    video = record_and_publish(
        deps.metadata.videos, deps.events, upload["id"],
        {"status": "failed", "error": error, "progress": 0, "size": 0},
        [("video.status", {"status": "failed"}), ("video.failed", {"error": error})],
        when=lambda current: current["status"] == "uploading",
    )
    save({"state": "done"})
    log.info("upload rejected", extra={"video_id": upload["id"], "reason": error})
    return video
