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
OUTBOX_INTERVAL = 5.0


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
    done["enqueued"] = publish_owed(deps, now)
    try:
        done["aborted"] = _abort_orphans(deps, now)
    except Exception:
        log.exception("could not list multipart uploads")
    for state in ("expired", "done"):
        old = {"state": state, "expires_at": {"$lt": now - TOMBSTONE_SECONDS}}
        done["forgotten"] += uploads.delete_where(old)
    return done


def publish_owed(deps: Dependencies, now: float | None = None) -> int:
    """The outbox: publish the jobs a queue outage kept from going out; stops at the first failure (still down).

    A job whose request gave up (marked `job_publish_failed`) goes at once; an unmarked one only after
    STUCK_SECONDS, as its request may still be publishing (or died before it could mark it)."""
    now = time.time() if now is None else now
    enqueued = 0
    for video in deps.metadata.videos.find({"job_pending": True, "status": "uploaded"}, per_page=200).items:
        if not video.get("job_publish_failed") and _epoch(video["updated_at"]) > now - STUCK_SECONDS:
            continue
        if not enqueue_transcode(deps, video):
            break
        enqueued += 1
    return enqueued


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


def start_sweeper(deps: Dependencies, assembler: Assembler, interval: float = 300,
                  outbox_interval: float = OUTBOX_INTERVAL) -> threading.Event:
    """A daemon thread sweeping every `interval` seconds, and passing over the outbox every `outbox_interval`
    (so jobs owed after a queue outage go out seconds after it ends); set the returned event to stop it."""
    stop = threading.Event()

    def loop() -> None:
        last_sweep = time.monotonic()
        while not stop.wait(outbox_interval):
            try:
                if time.monotonic() - last_sweep >= interval:
                    last_sweep = time.monotonic()
                    result = sweep(deps, assembler)
                    if any(result.values()):
                        log.info("upload sweep", extra=result)
                elif enqueued := publish_owed(deps):
                    log.info("published owed transcode jobs", extra={"enqueued": enqueued})
            except Exception:
                log.exception("upload sweep failed")

    threading.Thread(target=loop, name="upload-sweeper", daemon=True).start()
    return stop
