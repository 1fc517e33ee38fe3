"""A per-upload lock that works across processes and replicas: a lease kept in the upload record itself."""

from __future__ import annotations

import secrets
import time
from typing import Any

from services.errors import ApiError
from services.ports import RecordNotFound, Repository, VersionConflict

LEASE_SECONDS = 60.0


def _busy() -> ApiError:
    return ApiError(409, "upload_busy", "Another request is writing to this upload; retry after it ends.")


class UploadLease:
    """Acquired with compare-and-set; every checkpoint renews it and fails if somebody else took over."""

    def __init__(self, uploads: Repository, upload: dict[str, Any], seconds: float = LEASE_SECONDS):
        self.uploads, self.upload, self.seconds = uploads, upload, seconds
        self.owner = secrets.token_hex(8)
        self.held = False

    def _lease(self) -> dict[str, Any]:
        return {"owner": self.owner, "until": time.time() + self.seconds}

    def acquire(self) -> dict[str, Any]:
        lease = self.upload.get("lease")
        if lease and lease["until"] > time.time():
            raise _busy()
        try:
            self.upload = self.uploads.update(self.upload["id"], {"lease": self._lease()},
                                              expected_version=self.upload["version"])
        except (VersionConflict, RecordNotFound):
            raise _busy() from None
        self.held = True
        return self.upload

    def checkpoint(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Commit progress made so far and renew the lease."""
        return self._write({**changes, "lease": self._lease()})

    def release(self, changes: dict[str, Any] | None = None) -> dict[str, Any]:
        self.upload = self._write({**(changes or {}), "lease": None})
        self.held = False
        return self.upload

    def _write(self, changes: dict[str, Any]) -> dict[str, Any]:
        try:
            self.upload = self.uploads.update(self.upload["id"], changes, expected_version=self.upload["version"])
        except (VersionConflict, RecordNotFound):
            self.held = False
            raise ApiError(409, "upload_busy", "This upload was taken over or removed while writing.") from None
        return self.upload

    def __enter__(self) -> UploadLease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        if self.held:
            try:
                self.release()
            except ApiError:
                pass  # lost it already: the other holder owns the record now
