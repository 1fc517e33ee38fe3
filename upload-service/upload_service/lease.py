"""A per-upload lock that works across processes and replicas: a lease kept in the upload record itself.

The lease is short, so a crashed holder blocks an upload only briefly, and a timer renews it while the holder
works, however slowly its client sends. Every write of the record goes through here, serialised, because
each one is a compare-and-set on the record's version."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any

from services.errors import ApiError
from services.ports import RecordNotFound, Repository, VersionConflict

log = logging.getLogger(__name__)

LEASE_SECONDS = 10.0
RENEW_EVERY = 3.0


def busy_error(message: str = "Another request is writing to this upload; retry shortly.") -> ApiError:
    return ApiError(409, "upload_busy", message, headers={"Retry-After": str(int(LEASE_SECONDS))})


class UploadLease:
    def __init__(self, uploads: Repository, upload: dict[str, Any], seconds: float = LEASE_SECONDS,
                 renew_every: float = RENEW_EVERY):
        self.uploads, self.upload, self.seconds, self.renew_every = uploads, upload, seconds, renew_every
        self.owner = secrets.token_hex(8)
        self.held = False
        self.lost = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _lease(self) -> dict[str, Any]:
        return {"owner": self.owner, "until": time.time() + self.seconds}

    def acquire(self) -> dict[str, Any]:
        lease = self.upload.get("lease")
        if lease and lease["until"] > time.time():
            raise busy_error()
        try:
            self.upload = self.uploads.update(self.upload["id"], {"lease": self._lease()},
                                              expected_version=self.upload["version"])
        except (VersionConflict, RecordNotFound):
            raise busy_error() from None
        self.held = True
        self._renewer = threading.Thread(target=self._renew_loop, name="upload-lease", daemon=True)
        self._renewer.start()
        return self.upload

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.renew_every):
            try:
                self._write({"lease": self._lease()})
            except ApiError:
                log.warning("upload lease lost", extra={"upload_id": self.upload["id"]})
                return

    def checkpoint(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Commit progress made so far (and renew the lease)."""
        return self._write({**changes, "lease": self._lease()})

    def release(self, changes: dict[str, Any] | None = None) -> dict[str, Any]:
        self._stop.set()
        upload = self._write({**(changes or {}), "lease": None})
        self.held = False
        return upload

    def check(self) -> None:
        """Raise if the lease was lost: the writer must stop before touching bytes it no longer owns."""
        if self.lost:
            raise busy_error("This upload was taken over while writing; check Upload-Offset and resume.")

    def _write(self, changes: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self.lost:
                raise busy_error("This upload was taken over while writing; check Upload-Offset and resume.")
            try:
                self.upload = self.uploads.update(self.upload["id"], changes, expected_version=self.upload["version"])
            except (VersionConflict, RecordNotFound):
                self.lost, self.held = True, False
                raise busy_error("This upload was taken over or removed while writing.") from None
            return self.upload

    def __enter__(self) -> UploadLease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(5)
        if self.held:
            try:
                self.release()
            except ApiError:
                pass  # lost it already: the other holder owns the record now
