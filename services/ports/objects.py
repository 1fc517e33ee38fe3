"""Object store port: blobs by key (local directory or S3), with ranged reads and multipart uploads."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum size of every multipart part but the last
MAX_PART_NUMBER = 10000


class InvalidKey(ValueError):
    pass


class ObjectNotFound(KeyError):
    pass


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str  # strong validator, already quoted
    last_modified: datetime
    content_type: str


_SEGMENT = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,254}")


def validate_key(key: str) -> str:
    """Keys are relative '/'-separated names of safe segments: never absolute, never '..', no hidden segments."""
    if not isinstance(key, str) or not key or len(key) > 1024:
        raise InvalidKey(f"invalid object key {key!r}")
    for segment in key.split("/"):
        if not _SEGMENT.fullmatch(segment) or segment in (".", ".."):
            raise InvalidKey(f"invalid object key {key!r}")
    return key


def validate_prefix(prefix: str) -> str:
    if prefix == "":
        return prefix
    return validate_key(prefix.rstrip("/")) + ("/" if prefix.endswith("/") else "")


def check_parts(parts: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The (number, etag) list of a completion, sorted by part number; ValueError if empty or repeating a number."""
    parts = sorted((int(number), etag) for number, etag in parts)
    if not parts:
        raise ValueError("a multipart upload needs at least one part")
    for (a, _), (b, _) in zip(parts, parts[1:], strict=False):
        if a == b:
            raise ValueError(f"part {a} is listed twice")
    return parts


class ObjectStore(ABC):
    @abstractmethod
    def put(self, key: str, data: bytes | BinaryIO, content_type: str | None = None) -> ObjectInfo:
        """Store atomically: readers see the old object or the whole new one, never a part."""

    @abstractmethod
    def open(self, key: str, start: int = 0, end: int | None = None) -> BinaryIO:
        """A stream of bytes start..end (inclusive; None = to the end). ObjectNotFound if absent."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; absent keys are not an error."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        with self.open(key, start, end) as stream:
            return stream.read()

    def delete_prefix(self, prefix: str) -> int:
        keys = [info.key for info in self.list(validate_prefix(prefix))]
        for key in keys:
            self.delete(key)
        return len(keys)

    def presign_get(self, key: str, expires_in: int = 3600) -> str | None:
        """A URL a browser can GET directly, or None where the store has none (local directory)."""
        return None

    def local_path(self, key: str) -> Path | None:
        """The file behind a key when it lives on local disk (lets the server use sendfile)."""
        return None

    def staging_path(self, name: str) -> Path | None:
        """A private file on the store's own disk for assembling an upload, or None (S3)."""
        return None

    def adopt(self, key: str, path: Path) -> ObjectInfo:
        """Make a finished local file the object at `key` (moved, not copied, where the store can)."""
        with open(path, "rb") as source:
            info = self.put(key, source)
        Path(path).unlink(missing_ok=True)
        return info

    def ping(self) -> None:  # noqa: B027 - optional hook
        """Raise if the store cannot be reached."""


class MultipartUploads(ABC):
    """Assemble one object from numbered parts (S3 semantics: parts ≥ 5 MiB except the last)."""

    @abstractmethod
    def create_multipart(self, key: str, content_type: str | None = None) -> str: ...

    @abstractmethod
    def upload_part(self, key: str, upload_id: str, part_number: int,
                    data: bytes | bytearray | memoryview | BinaryIO) -> str:
        """Store one part; returns its etag. A buffer is read in place: it must not change until this returns."""

    @abstractmethod
    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> ObjectInfo:
        """Join the listed (part_number, etag) parts in part-number order into the object.

        ValueError for no parts, a repeated part number, a part never uploaded, an etag that does not match,
        or a part other than the last smaller than MIN_PART_SIZE; the upload then stays open. ObjectNotFound
        for an unknown, aborted or already completed upload.
        """

    @abstractmethod
    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Discard the upload and its parts; unknown or finished uploads are not an error."""

    @abstractmethod
    def list_multipart_uploads(self, prefix: str = "") -> list[tuple[str, str, datetime]]:
        """Unfinished uploads whose key starts with `prefix`: (key, upload_id, initiated), sorted by key.

        `initiated` is timezone-aware. Where the store cannot tell when an upload started, it is the best
        available stand-in (the local store: the last time a part was added; moto: a constant in 2010), so
        decide what is abandoned from the upload's own records, not from this timestamp alone.
        """


CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".m4s": "video/iso.segment",
    ".ts": "video/mp2t",
    ".mp4": "video/mp4",
    ".m4a": "audio/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".vtt": "text/vtt",
    ".json": "application/json",
}


def guess_content_type(key: str) -> str:
    dot = key.rfind(".")
    return CONTENT_TYPES.get(key[dot:].lower(), "application/octet-stream") if dot >= 0 else "application/octet-stream"
