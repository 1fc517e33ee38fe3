"""Housekeeping for uploads: expire abandoned ones, retry completions a queue outage interrupted."""

from __future__ import annotations

import logging
import threading
import time

from services.bootstrap import Dependencies
from services.errors import ApiError
from upload_service.assembly import Assembler
from upload_service.completion import complete_upload
from upload_service.lease import UploadLease
from upload_service.tus import expire

log = logging.getLogger(__name__)

TOMBSTONE_SECONDS = 7 * 24 * 3600
STUCK_SECONDS = 60


def sweep(deps: Dependencies, assembler: Assembler, now: float | None = None) -> dict[str, int]:
    now = time.time() if now is None else now
    uploads, done = deps.metadata.uploads, {"expired": 0, "completed": 0, "forgotten": 0}
    for upload in uploads.find({"state": "receiving", "expires_at": {"$lt": now}}, per_page=500).items:
        try:
            with UploadLease(uploads, upload):
                expire(deps, assembler, upload)
            done["expired"] += 1
        except ApiError:
            continue  # being written to right now: not abandoned after all
    for upload in uploads.find({"state": "completing"}, per_page=100).items:
        lease = upload.get("lease")
        if lease is not None and lease["until"] > now:
            continue
        stamp = upload["updated_at"]
        if time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone > now - STUCK_SECONDS:
            continue
        try:
            with UploadLease(uploads, upload) as held:
                complete_upload(deps, assembler, held.upload, held.checkpoint)
            done["completed"] += 1
        except ApiError as error:
            log.warning("completion retry failed: %s", error.message, extra={"video_id": upload["id"]})
    for state in ("expired", "done"):
        old = {"state": state, "expires_at": {"$lt": now - TOMBSTONE_SECONDS}}
        done["forgotten"] += uploads.delete_where(old)
    return done


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
