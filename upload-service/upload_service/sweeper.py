"""Housekeeping for uploads: expire abandoned ones, retry completions a queue outage interrupted, abort
multipart uploads no record knows, forget old tombstones."""

from __future__ import annotations

import calendar
import logging
import threading
import time
from datetime import UTC, datetime

from services.bootstrap import Dependencies
from services.errors import ApiError
from services.ports import MultipartUploads
from upload_service.assembly import Assembler
from upload_service.completion import complete_upload, enqueue_transcode
from upload_service.lease import UploadLease
from upload_service.tus import expire

log = logging.getLogger(__name__)

TOMBSTONE_SECONDS = 7 * 24 * 3600
STUCK_SECONDS = 60
ORPHAN_SECONDS = 3600


def _epoch(stamp: str) -> float:
    return calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))


def sweep(deps: Dependencies, assembler: Assembler, now: float | None = None) -> dict[str, int]:
    """One pass; a failure on one upload is logged and does not stop the others."""
    now = time.time() if now is None else now
    uploads, done = deps.metadata.uploads, {"expired": 0, "completed": 0, "aborted": 0, "forgotten": 0}
    for upload in uploads.find({"state": "receiving", "expires_at": {"$lt": now}}, per_page=500).items:
        try:
            with UploadLease(uploads, upload) as lease:
                expire(deps, assembler, lease.upload, lease)
            done["expired"] += 1
        except ApiError:
            continue  # being written to right now: not abandoned after all
        except Exception:
            log.exception("could not expire an upload", extra={"video_id": upload["id"]})
    for upload in uploads.find({"state": "completing"}, per_page=100).items:
        lease = upload.get("lease")
        if (lease is not None and lease["until"] > now) or _epoch(upload["updated_at"]) > now - STUCK_SECONDS:
            continue
        try:
            with UploadLease(uploads, upload) as held:
                complete_upload(deps, assembler, held.upload, held.checkpoint)
            done["completed"] += 1
        except ApiError as error:
            log.warning("completion retry failed: %s", error.message, extra={"video_id": upload["id"]})
        except Exception:
            log.exception("completion retry failed", extra={"video_id": upload["id"]})
    done["enqueued"] = 0
    owed = deps.metadata.videos.find({"job_pending": True, "status": "uploaded"}, per_page=200).items
    for video in owed:  # the outbox: jobs a queue outage kept from being published
        if _epoch(video["updated_at"]) <= now - STUCK_SECONDS and enqueue_transcode(deps, video):
            done["enqueued"] += 1
    try:
        done["aborted"] = _abort_orphans(deps, now)
    except Exception:
        log.exception("could not list multipart uploads")
    for state in ("expired", "done"):
        old = {"state": state, "expires_at": {"$lt": now - TOMBSTONE_SECONDS}}
        done["forgotten"] += uploads.delete_where(old)
    return done


def _abort_orphans(deps: Dependencies, now: float) -> int:
    """Multipart uploads no live upload record points at (a crash between creating one and saving its id)."""
    store = deps.objects
    if not isinstance(store, MultipartUploads) or store.staging_path("probe") is not None:
        return 0
    aborted = 0
    for key, multipart_id, initiated in store.list_multipart_uploads("tenants/"):
        parts = key.split("/")
        if len(parts) != 5 or parts[2] != "videos":
            continue
        upload = deps.metadata.uploads.get(parts[3])
        live = upload is not None and upload["state"] in ("receiving", "completing")
        if live and (upload.get("multipart_id") == multipart_id or (upload.get("lease") or {}).get("until", 0) > now):
            continue
        if not live and upload is None and _age(initiated, now) < ORPHAN_SECONDS and deps.metadata.videos.get(
                parts[3]) is not None:
            continue  # a brand-new upload whose record is being written
        store.abort_multipart(key, multipart_id)
        aborted += 1
    return aborted


def _age(initiated: datetime, now: float) -> float:
    stamp = initiated if initiated.tzinfo else initiated.replace(tzinfo=UTC)
    return now - stamp.timestamp()


def start_sweeper(deps: Dependencies, assembler: Assembler, interval: float = 300) -> threading.Event:
    """A daemon thread sweeping every `interval` seconds; set the returned event to stop it."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                result = sweep(deps, assembler)
                if any(result.values()):
                    log.info("upload sweep", extra=result)
            except Exception:
                log.exception("upload sweep failed")

    threading.Thread(target=loop, name="upload-sweeper", daemon=True).start()
    return stop
