"""Turning PATCH bodies into one stored object: a growing local file, or S3 multipart parts.

On S3, parts must be at least 5 MiB, but tus clients may send any chunk size. Bytes that do not fill a part yet
are staged as small objects in the store itself (durable, and visible to every replica), and joined into a part
once enough have arrived. Part n always covers bytes [(n-1)·P, n·P), so a part re-sent after a crash has the
same content and simply replaces the first copy. Up to PARTS_IN_FLIGHT parts of a PATCH are sent at once while
the next one is received; the record names them strictly in order, each once it (and every part before it) is
stored, so its `parts` are always a contiguous prefix. A part is sent from the buffer it was received into, and
buffers are reused (_PartBuffers): the service makes no copy of a part's bytes of its own.

The local file is made durable (fsync) in a helper thread while the next bytes arrive; the record's offset never
runs ahead of the bytes on disk.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from services import keys
from services.errors import ApiError, storage_error
from services.ports import MultipartUploads, ObjectInfo, ObjectNotFound, ObjectStore
from upload_service.body import Body, Interrupted

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024  # bytes per receive into the local file
FILE_CHECKPOINT_BYTES = 64 * 1024 * 1024  # durable bytes between two record updates
SYNC_STEP = 16 * 1024 * 1024  # written bytes that start a background fsync
MAX_STAGED_CHUNKS = 16  # tiny PATCHes are merged beyond this, so a part never needs thousands of objects
PARTS_IN_FLIGHT = 3  # per PATCH: with 8 MiB parts, the one being received and 3 being sent (32 MiB)
PART_THREADS = 8  # per process, shared by every PATCH
PART_SLOTS = 8  # parts being sent (or waiting to be) per process, whatever the number of PATCHes: 64 MiB of 8 MiB
IDLE_BUFFER_SECONDS = 5.0  # part buffers nobody took for this long are freed: an idle service gives them back

Checkpoint = Callable[[dict[str, Any]], dict[str, Any]]

__all__ = ["Assembler", "FileAssembler", "Interrupted", "MultipartAssembler", "assembler_for"]


class Assembler(ABC):
    def __init__(self, store: ObjectStore):
        self.store = store

    @abstractmethod
    def write(self, upload: dict[str, Any], body: Body, checkpoint: Checkpoint) -> dict[str, Any]:
        """Append everything `body` yields at upload['offset']; returns the record changes to commit."""

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


class _Syncer:
    """fsync()s a file in a helper thread while the request thread goes on writing it: every byte before `synced`
    is on disk. A failed fsync is kept in `error`; `close()` waits for the thread."""

    def __init__(self, fd: int, position: int):
        self.fd, self.written, self.synced = fd, position, position
        self.error: OSError | None = None
        self.closed = False
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="upload-fsync", daemon=True)
        self.thread.start()

    def wrote(self, position: int) -> None:
        with self.changed:
            self.written = position
            if position - self.synced >= SYNC_STEP:
                self.changed.notify()

    def _run(self) -> None:
        while True:
            with self.changed:
                while not self.closed and self.written - self.synced < SYNC_STEP:
                    self.changed.wait()
                if self.closed:
                    return
                target = self.written  # written before the fsync starts: on disk once it returns
            try:
                os.fsync(self.fd)
            except OSError as error:
                self.error = error
                return
            self.synced = target

    def close(self) -> OSError | None:
        with self.changed:
            self.closed = True
            self.changed.notify()
        self.thread.join()
        return self.error


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


class FileAssembler(Assembler):
    """Local store: one staging file on the store's disk, renamed into place at the end (no copy)."""

    def _path(self, upload: dict[str, Any]) -> Path:
        return self.store.staging_path(upload["id"])

    def write(self, upload, body, checkpoint):
        path, offset = self._path(upload), upload["offset"]
        if offset and (not path.exists() or path.stat().st_size < offset):
            raise ApiError(410, "upload_lost", "The bytes received so far were lost; start the upload again.")
        position = committed = offset
        buffer = memoryview(bytearray(CHUNK))
        try:
            with open(path, "r+b" if path.exists() else "w+b", buffering=0) as f:
                fd = f.fileno()
                f.truncate(offset)  # bytes a crashed request wrote past the last committed offset
                f.seek(offset)
                syncer = _Syncer(fd, offset)
                try:
                    while True:
                        try:
                            n = body.readinto(buffer)
                        except Interrupted:
                            break
                        if not n:
                            break
                        _write_all(fd, buffer[:n])
                        position += n
                        syncer.wrote(position)
                        if syncer.error:
                            raise syncer.error
                        if syncer.synced - committed >= FILE_CHECKPOINT_BYTES:
                            committed = checkpoint({"offset": syncer.synced})["offset"]
                finally:
                    failed = syncer.close()
                if failed:
                    raise failed
                os.fsync(fd)  # what the helper had not synced yet: the offset returned is durable
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


class _Progress:
    """What the record says of a multipart upload; `parts` is always a contiguous prefix."""

    def __init__(self, upload: dict[str, Any]):
        self.parts = [list(p) for p in upload.get("parts", [])]
        self.staged = [list(s) for s in upload.get("staged", [])]
        self.multipart_id = upload.get("multipart_id")
        self.offset = upload["offset"]

    def changes(self) -> dict[str, Any]:
        return {"offset": self.offset, "parts": self.parts, "staged": self.staged, "multipart_id": self.multipart_id}


class _InFlight:
    """A part being uploaded: its number, the offset just past it, and the staged chunks it consumed."""

    def __init__(self, future: Future, number: int, end: int, consumed: list):
        self.future, self.number, self.end, self.consumed = future, number, end, consumed


class _PartBuffers:
    """Part-sized buffers to receive into, reused: a new one would cost a page fault per 4 KiB (malloc maps
    buffers this large afresh each time, services/malloc.py). At most `keep` wait for reuse, and none once
    nobody has taken or returned one for IDLE_BUFFER_SECONDS."""

    def __init__(self, keep: int, idle_seconds: float = IDLE_BUFFER_SECONDS):
        self.keep, self.idle_seconds = keep, idle_seconds
        self.free: list[bytearray] = []
        self.made = 0  # buffers allocated so far
        self.used = time.monotonic()
        self.lock = threading.Lock()
        self.trimmer: threading.Thread | None = None

    def take(self, size: int) -> bytearray:
        with self.lock:
            self.used = time.monotonic()
            for index, buffer in enumerate(self.free):
                if len(buffer) == size:
                    return self.free.pop(index)
            self.made += 1
        return bytearray(size)

    def give(self, buffer: bytearray) -> None:
        with self.lock:
            self.used = time.monotonic()
            if len(self.free) >= self.keep:
                # Full: a buffer of another size goes first (the part size changed), else this one is let go.
                other = next((i for i, kept in enumerate(self.free) if len(kept) != len(buffer)), None)
                if other is None:
                    return
                del self.free[other]
            self.free.append(buffer)
            if self.trimmer is None:
                trimmer = threading.Thread(target=self._trim, name="upload-part-buffers", daemon=True)
                try:
                    trimmer.start()
                except RuntimeError:  # no thread to be had: keep nothing rather than keep it for ever
                    self.free.clear()
                    return
                self.trimmer = trimmer

    def _trim(self) -> None:
        while True:
            time.sleep(self.idle_seconds)
            with self.lock:
                if time.monotonic() - self.used >= self.idle_seconds:
                    self.free.clear()
                    self.trimmer = None
                    return


class MultipartAssembler(Assembler):
    """S3: parts of `part_size` bytes, with the remainder staged as small objects until a part is full."""

    def __init__(self, store: ObjectStore, part_size: int, in_flight: int = PARTS_IN_FLIGHT):
        super().__init__(store)
        self.part_size, self.in_flight = part_size, in_flight
        self.pool = ThreadPoolExecutor(max_workers=PART_THREADS, thread_name_prefix="upload-part")
        self.slots = threading.BoundedSemaphore(PART_SLOTS)  # bounds the part buffers the pool holds
        self.buffers = _PartBuffers(keep=PART_SLOTS)

    def write(self, upload, body, checkpoint):
        key = keys.original_key(upload["tenant_id"], upload["id"])
        part_size = upload.get("part_size") or self.part_size  # fixed per upload: config may change meanwhile
        state = _Progress(upload)
        if state.offset != len(state.parts) * part_size + sum(size for _, size in state.staged):
            raise ApiError(409, "upload_inconsistent", "The upload's parts do not add up; start it again.")
        window: deque[_InFlight] = deque()
        unclaimed = state.staged  # staged chunks no part in flight has taken yet (they lead the next part)
        received = state.offset
        buffer = self.buffers.take(part_size)
        try:
            while True:
                need = part_size - sum(size for _, size in unclaimed)
                view = memoryview(buffer)[:need]
                copied, interrupted = body.fill(view)
                if copied == 0:
                    break
                chunk_start, received = received, received + copied
                if copied == need:
                    state.multipart_id = state.multipart_id or self.store.create_multipart(key)
                    number = len(state.parts) + len(window) + 1
                    following = self.buffers.take(part_size)  # the part keeps the one it was received into
                    try:
                        future = self._send(key, state.multipart_id, number, unclaimed, buffer, view)
                    except BaseException:
                        self.buffers.give(following)
                        raise
                    buffer = following
                    window.append(_InFlight(future, number, received, unclaimed))
                    unclaimed = []
                    self._settle(window, state, part_size, checkpoint, keep=self.in_flight)
                else:
                    self._settle(window, state, part_size, checkpoint, keep=0)  # staged chunks follow the parts
                    staged_key = keys.staged_chunk_key(upload["tenant_id"], upload["id"], chunk_start)
                    tail = bytes(view[:copied])
                    if len(state.staged) >= MAX_STAGED_CHUNKS:
                        state.staged = self._merge(state.staged, tail, staged_key.replace(".chunk", ".merged"))
                    else:
                        self.store.put(staged_key, tail)
                        state.staged = [*state.staged, [staged_key, copied]]
                    state.offset = received
                    unclaimed = state.staged
                if interrupted or copied < need:
                    break
            self._settle(window, state, part_size, checkpoint, keep=0)
        except BaseException:
            self._abandon(window, state, part_size, checkpoint)
            raise
        finally:
            self.buffers.give(buffer)
        return state.changes()

    def _send(self, key: str, multipart_id: str, number: int, staged: list, buffer: bytearray,
              view: memoryview) -> Future:
        """Uploads part `number` (`view`, in `buffer`) in the pool, once one of the process's PART_SLOTS is free:
        a free slot is a part that finished, so this wait always ends. The buffer is reused once it is sent."""
        self.slots.acquire()
        try:
            future = self.pool.submit(self._upload_part, key, multipart_id, number, staged, view)
        except BaseException:
            self.slots.release()
            raise

        def done(_future: Future) -> None:
            self.slots.release()
            self.buffers.give(buffer)

        future.add_done_callback(done)
        return future

    def _settle(self, window: deque[_InFlight], state: _Progress, part_size: int, checkpoint: Checkpoint, *,
                keep: int) -> None:
        """Commits the parts at the head of `window` that are stored, in order, waiting for the oldest while more
        than `keep` are in flight. A part that failed raises its error (the parts after it stay uncommitted)."""
        while window and (len(window) > keep or window[0].future.done()):
            part = window[0]
            etag = part.future.result()
            window.popleft()
            state.parts = [*state.parts, [part.number, etag, part_size]]
            state.offset = part.end
            state.staged = []  # only the first part of a PATCH takes staged chunks, and they come before it
            checkpoint(state.changes())
            for staged_key, _ in part.consumed:  # only once the record no longer needs them
                self.store.delete(staged_key)

    def _abandon(self, window: deque[_InFlight], state: _Progress, part_size: int, checkpoint: Checkpoint) -> None:
        """After an error: no part of this PATCH may still be writing when it answers. Commits what was stored
        in order up to the first failure, if the lease still allows."""
        wait([part.future for part in window])
        try:
            self._settle(window, state, part_size, checkpoint, keep=0)
        except Exception:  # noqa: BLE001 - the error being raised already tells the client
            log.info("parts after the failure stay uncommitted", exc_info=True)

    def _merge(self, staged: list, tail: bytes, merged_key: str) -> list:
        """Join every staged chunk and `tail` into one staged object. It is named by this chunk's offset, which
        no committed record names yet; the old chunks stay (the record still names them until this PATCH
        commits) and go with the staging prefix when the upload finishes."""
        body = self._joined(staged, tail)
        self.store.put(merged_key, body)
        return [[merged_key, len(body)]]

    def _joined(self, staged: list, tail: bytes | memoryview) -> bytes | memoryview:
        """The staged chunks' bytes, then `tail` (at most a part: bounded)."""
        if not staged:
            return tail
        pieces = []
        for staged_key, _ in staged:
            with self.store.open(staged_key) as source:
                while data := source.read(CHUNK):
                    pieces.append(data)
        pieces.append(tail)
        return b"".join(pieces)

    def _upload_part(self, key: str, multipart_id: str, number: int, staged: list, tail: bytes | memoryview) -> str:
        return self.store.upload_part(key, multipart_id, number, self._joined(staged, tail))

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
                etag = self._upload_part(key, multipart_id, len(parts) + 1, staged, b"")
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
