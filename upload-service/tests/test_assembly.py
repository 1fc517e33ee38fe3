"""MultipartAssembler's buffers: a part goes to the store from the buffer it was received into, and that buffer
is reused only once the part is stored. On the local store's multipart uploads, with a store that is slow to read
its parts, so a buffer reused too early would put the next part's bytes into this one."""

from __future__ import annotations

import io
import os
import threading
import time
import uuid

from services import keys
from services.adapters.local_objects import LocalObjectStore
from upload_service.assembly import MultipartAssembler, _PartBuffers
from upload_service.body import Body, StreamSource

PART = 5 * 1024 * 1024


class SlowPartsStore(LocalObjectStore):
    """Reads each part's bytes only after a pause, as a store busy with other parts would."""

    def __init__(self, root, pause: float):
        super().__init__(root)
        self.pause = pause
        self.concurrent = self.most_concurrent = 0
        self.lock = threading.Lock()

    def upload_part(self, key, upload_id, part_number, data):
        with self.lock:
            self.concurrent += 1
            self.most_concurrent = max(self.most_concurrent, self.concurrent)
        try:
            time.sleep(self.pause)
            return super().upload_part(key, upload_id, part_number, data)
        finally:
            with self.lock:
                self.concurrent -= 1


def record() -> dict:
    return {"id": uuid.uuid4().hex, "tenant_id": uuid.uuid4().hex, "offset": 0, "parts": [], "staged": []}


def body_of(data: bytes) -> Body:
    return Body(StreamSource(io.BytesIO(data)), len(data), lambda: None, lambda _n: None)


def test_parts_in_flight_keep_their_own_bytes(tmp_path):
    store = SlowPartsStore(tmp_path / "objects", pause=0.1)
    assembler = MultipartAssembler(store, PART)
    upload = record()
    data = os.urandom(PART * 6 + 1000)  # six parts from one PATCH, the tail staged
    changes = assembler.write(upload, body_of(data), lambda change: {**upload, **change})
    assert store.most_concurrent > 1  # parts were received while others were still being stored
    upload.update(changes)
    assert upload["offset"] == len(data) and len(upload["parts"]) == 6
    assembler.finish(upload)
    assert store.read(keys.original_key(upload["tenant_id"], upload["id"])) == data


def test_a_second_patch_reuses_the_buffers_of_the_first(tmp_path):
    store = SlowPartsStore(tmp_path / "objects", pause=0.01)
    assembler = MultipartAssembler(store, PART)
    upload = record()
    data = os.urandom(PART * 8)
    first = assembler.write(upload, body_of(data[:PART * 4]), lambda change: {**upload, **change})
    made = assembler.buffers.made
    assert 1 < made <= 5 and len(assembler.buffers.free) == made  # all back once the PATCH is answered
    upload.update(first)
    upload.update(assembler.write(upload, body_of(data[PART * 4:]), lambda change: {**upload, **change}))
    assert assembler.buffers.made == made  # the same buffers again, not new ones
    assembler.finish(upload)
    assert store.read(keys.original_key(upload["tenant_id"], upload["id"])) == data


def test_part_buffers_are_reused_by_size_up_to_a_bound():
    buffers = _PartBuffers(keep=2, idle_seconds=60)
    a, b, c = buffers.take(10), buffers.take(10), buffers.take(10)
    assert len(a) == len(b) == len(c) == 10 and a is not b and buffers.made == 3
    for buffer in (a, b, c):
        buffers.give(buffer)
    assert [id(kept) for kept in buffers.free] == [id(a), id(b)]  # the third is let go
    other = buffers.take(20)
    assert len(other) == 20 and all(other is not kept for kept in (a, b)) and buffers.made == 4  # another size
    again = buffers.take(10)
    assert (again is a or again is b) and buffers.made == 4


def test_buffers_of_a_new_part_size_take_the_place_of_old_ones():
    buffers = _PartBuffers(keep=2, idle_seconds=60)
    old = [buffers.take(10), buffers.take(10)]
    for buffer in old:
        buffers.give(buffer)
    new = [buffers.take(20), buffers.take(20)]
    for buffer in new:
        buffers.give(buffer)
    assert [id(kept) for kept in buffers.free] == [id(buffer) for buffer in new]
    buffers.give(bytearray(20))  # full of the current size: let go
    assert [id(kept) for kept in buffers.free] == [id(buffer) for buffer in new]


def test_idle_part_buffers_are_freed():
    buffers = _PartBuffers(keep=4, idle_seconds=0.05)
    buffers.give(buffers.take(10))
    assert len(buffers.free) == 1
    deadline = time.monotonic() + 5
    while buffers.free and time.monotonic() < deadline:
        time.sleep(0.01)
    assert buffers.free == [] and buffers.trimmer is None  # and the trimming thread has stopped
    buffers.give(bytearray(10))  # a later buffer starts it again
    assert len(buffers.free) == 1 and buffers.trimmer is not None
