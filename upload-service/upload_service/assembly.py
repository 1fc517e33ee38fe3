"""Turning PATCH bodies into one stored object: a growing local file, or S3 multipart parts.

On S3, parts must be at least 5 MiB, but tus clients may send any chunk size. Bytes that do not fill a part yet
are staged as small objects in the store itself (durable, and visible to every replica), and joined into a part
once enough have arrived. Part n always covers bytes [(n-1)·P, n·P), so a part re-sent after a crash has the
same content and simply replaces the first copy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services import keys
from services.errors import ApiError, storage_error
from services.ports import MultipartUploads, ObjectInfo, ObjectNotFound, ObjectStore

CHUNK = 1024 * 1024
FILE_CHECKPOINT_BYTES = 64 * 1024 * 1024
MAX_STAGED_CHUNKS = 16  # tiny PATCHes are merged beyond this, so a part never needs thousands of objects
SPOOL_IN_MEMORY = 8 * 1024 * 1024  # larger parts spill to a temporary file: memory stays bounded

Reader = Callable[[int], bytes]
Checkpoint = Callable[[dict[str, Any]], dict[str, Any]]


class Interrupted(Exception):
    """The client went away mid-body; what arrived before is kept."""


class Assembler(ABC):
    def __init__(self, store: ObjectStore):
        self.store = store

    @abstractmethod
    def write(self, upload: dict[str, Any], read: Reader, checkpoint: Checkpoint) -> dict[str, Any]:
        """Append everything `read` yields at upload['offset']; returns the record changes to commit."""

    @abstractmethod
    def finish(self, upload: dict[str, Any]) -> ObjectInfo:
        """Put the whole upload in place at its original key. Idempotent."""

    @abstractmethod
    def discard(self, upload: dict[str, Any]) -> None:
        """Forget every byte of an unfinished upload."""

    def check_space(self, length: int) -> None:
        """ApiError 507 when `length` more bytes cannot be stored now (a local disk); S3 has no such limit."""
        return None


def assembler_for(store: ObjectStore, part_size: int) -> Assembler:
    if store.staging_path("probe") is not None:
        return FileAssembler(store)
    if isinstance(store, MultipartUploads):
        return MultipartAssembler(store, part_size)
    raise TypeError(f"{type(store).__name__} can neither stage files nor take multipart uploads")


def _drain(read: Reader, sink: Callable[[bytes], None], limit: int | None = None) -> tuple[int, bool]:
    """Copy from read() to sink until the end, `limit` bytes, or an interruption: (bytes copied, interrupted)."""
    copied = 0
    while limit is None or copied < limit:
        want = CHUNK if limit is None else min(CHUNK, limit - copied)
        try:
            chunk = read(want)
        except Interrupted:
            return copied, True
        if not chunk:
            break
        sink(chunk)
        copied += len(chunk)
    return copied, False


class FileAssembler(Assembler):
    """Local store: one staging file on the store's disk, renamed into place at the end (no copy)."""

    def _path(self, upload: dict[str, Any]) -> Path:
        return self.store.staging_path(upload["id"])

    def write(self, upload, read, checkpoint):
        path, offset = self._path(upload), upload["offset"]
        if offset and (not path.exists() or path.stat().st_size < offset):
            raise ApiError(410, "upload_lost", "The bytes received so far were lost; start the upload again.")
        position = committed = offset
        try:
            with open(path, "r+b" if path.exists() else "w+b") as f:
                f.truncate(offset)  # bytes a crashed request wrote past the last committed offset
                f.seek(offset)
                while True:
                    copied, interrupted = _drain(read, f.write, FILE_CHECKPOINT_BYTES)
                    position += copied
                    if copied < FILE_CHECKPOINT_BYTES or interrupted:
                        break
                    f.flush()
                    os.fsync(f.fileno())
                    committed = checkpoint({"offset": position})["offset"]
                f.flush()
                os.fsync(f.fileno())
        except OSError as error:
            full = storage_error(error)
            if full is None:
                raise
            # The disk is full: give back what this request wrote, so other uploads and the services on this disk
            # keep working; the client resumes from the committed offset once there is room.
            if committed:
                os.truncate(path, committed)
            else:
                path.unlink(missing_ok=True)
            raise full from None
        return {"offset": position}

    def check_space(self, length):
        free = shutil.disk_usage(self.store.staging_path("probe").parent).free
        if length > free:
            raise ApiError(507, "insufficient_storage", "There is not enough storage space for this upload right "
                           "now; retry later.", headers={"Retry-After": "60"})

    def finish(self, upload):
        key = keys.original_key(upload["tenant_id"], upload["id"])
        path = self._path(upload)
        if not path.exists():
            if upload["length"]:
                return self.store.stat(key)  # moved into place by an earlier attempt
            path.write_bytes(b"")  # an empty upload never wrote a byte
        return self.store.adopt(key, path)

    def discard(self, upload):
        self._path(upload).unlink(missing_ok=True)


class MultipartAssembler(Assembler):
    """S3: parts of `part_size` bytes, with the remainder staged as small objects until a part is full."""

    def __init__(self, store: ObjectStore, part_size: int):
        super().__init__(store)
        self.part_size = part_size

    def write(self, upload, read, checkpoint):
        key = keys.original_key(upload["tenant_id"], upload["id"])
        part_size = upload.get("part_size") or self.part_size  # fixed per upload: config may change meanwhile
        parts = [list(p) for p in upload.get("parts", [])]
        staged = [list(s) for s in upload.get("staged", [])]
        multipart_id = upload.get("multipart_id")
        offset = upload["offset"]
        if offset != len(parts) * part_size + sum(size for _, size in staged):
            raise ApiError(409, "upload_inconsistent", "The upload's parts do not add up; start it again.")
        while True:
            need = part_size - sum(size for _, size in staged)
            with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as buffer:
                copied, interrupted = _drain(read, buffer.write, need)
                if copied == 0:
                    break
                chunk_start = offset
                offset += copied
                if copied == need:
                    multipart_id = multipart_id or self.store.create_multipart(key)
                    number = len(parts) + 1
                    etag = self._upload_part(key, multipart_id, number, staged, buffer)
                    parts.append([number, etag, part_size])
                    consumed, staged = staged, []
                    checkpoint({"offset": offset, "parts": parts, "staged": staged, "multipart_id": multipart_id})
                    for staged_key, _ in consumed:  # only once the record no longer needs them
                        self.store.delete(staged_key)
                else:
                    staged_key = keys.staged_chunk_key(upload["tenant_id"], upload["id"], chunk_start)
                    if len(staged) >= MAX_STAGED_CHUNKS:
                        staged = self._merge(staged, buffer, staged_key.replace(".chunk", ".merged"))
                    else:
                        buffer.seek(0)
                        self.store.put(staged_key, buffer)
                        staged.append([staged_key, copied])
                if interrupted or copied < need:
                    break
        return {"offset": offset, "parts": parts, "staged": staged, "multipart_id": multipart_id}

    def _merge(self, staged: list, tail, merged_key: str) -> list:
        """Join every staged chunk and `tail` into one staged object. It is named by this chunk's offset, which
        no committed record names yet; the old chunks stay (the record still names them until this PATCH
        commits) and go with the staging prefix when the upload finishes."""
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as body:
            self._concatenate(staged, tail, body)
            size = body.tell()
            body.seek(0)
            self.store.put(merged_key, body)
        return [[merged_key, size]]

    def _concatenate(self, staged: list, tail, body) -> None:
        for staged_key, _ in staged:
            with self.store.open(staged_key) as source:
                while data := source.read(CHUNK):
                    body.write(data)
        tail.seek(0)
        while data := tail.read(CHUNK):
            body.write(data)

    def _upload_part(self, key: str, multipart_id: str, number: int, staged: list, tail) -> str:
        if not staged:
            tail.seek(0)
            return self.store.upload_part(key, multipart_id, number, tail)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as body:
            self._concatenate(staged, tail, body)
            body.seek(0)
            return self.store.upload_part(key, multipart_id, number, body)

    def finish(self, upload):
        key = keys.original_key(upload["tenant_id"], upload["id"])
        parts = [list(p) for p in upload.get("parts", [])]
        staged = upload.get("staged", [])
        multipart_id = upload.get("multipart_id")
        if not parts and not staged:
            try:
                return self.store.stat(key)  # completed by an earlier attempt
            except ObjectNotFound:
                pass
            if multipart_id:
                self.store.abort_multipart(key, multipart_id)
            return self.store.put(key, b"")
        if multipart_id is None:
            multipart_id = self.store.create_multipart(key)
        try:
            if staged:
                with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as empty:
                    etag = self._upload_part(key, multipart_id, len(parts) + 1, staged, empty)
                parts.append([len(parts) + 1, etag, sum(size for _, size in staged)])
            info = self.store.complete_multipart(key, multipart_id, [(n, etag) for n, etag, _ in parts])
        except (ObjectNotFound, ValueError) as error:
            # Completed by an earlier attempt whose record update was lost: the object is there already.
            try:
                info = self.store.stat(key)
            except ObjectNotFound:
                raise error from None
        self.store.delete_prefix(keys.upload_staging_prefix(upload["tenant_id"], upload["id"]))
        return info

    def discard(self, upload):
        key = keys.original_key(upload["tenant_id"], upload["id"])
        if upload.get("multipart_id"):
            self.store.abort_multipart(key, upload["multipart_id"])
        self.store.delete_prefix(keys.upload_staging_prefix(upload["tenant_id"], upload["id"]))
