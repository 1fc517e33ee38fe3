"""Object store port: blobs by key (local directory or S3), with ranged reads and multipart uploads."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO


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

    def ping(self) -> None:  # noqa: B027 - optional hook
        """Raise if the store cannot be reached."""


class MultipartUploads(ABC):
    """Assemble one object from numbered parts (S3 semantics: parts ≥ 5 MiB except the last)."""

    @abstractmethod
    def create_multipart(self, key: str, content_type: str | None = None) -> str: ...

    @abstractmethod
    def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes | BinaryIO) -> str:
        """Store one part; returns its etag."""

    @abstractmethod
    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> ObjectInfo: ...

    @abstractmethod
    def abort_multipart(self, key: str, upload_id: str) -> None: ...


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
