"""ObjectStore + MultipartUploads contract: every object store adapter (local directory, later S3) must pass."""

from __future__ import annotations

import hashlib
import io
from datetime import datetime

import pytest

from services.ports.objects import MIN_PART_SIZE, InvalidKey, ObjectInfo, ObjectNotFound, validate_key

DATA = bytes(range(256)) * 40  # 10 240 bytes, every byte value, position-dependent


class OneByteAtATime(io.RawIOBase):
    """A non-seekable stream that returns short reads, like a socket."""

    def __init__(self, data: bytes):
        self._data = data
        self._pos = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self._pos >= len(self._data):
            return b""
        n = 7 if n is None or n < 0 else min(n, 7)
        chunk = self._data[self._pos:self._pos + n]
        self._pos += len(chunk)
        return chunk


class FailsMidway(io.RawIOBase):
    """Yields some bytes, then raises as a dropped client connection would."""

    def __init__(self, good: bytes):
        self._good = good
        self._sent = False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if not self._sent:
            self._sent = True
            return self._good
        raise ConnectionResetError("client went away")


def keys(store, prefix: str = "") -> list[str]:
    return [info.key for info in store.list(prefix)]


# --- put / get ----------------------------------------------------------------------------------------


def test_put_bytes_and_read_back(object_store):
    info = object_store.put("videos/v1/source.mp4", DATA)
    assert isinstance(info, ObjectInfo)
    assert info.key == "videos/v1/source.mp4"
    assert info.size == len(DATA)
    assert object_store.read("videos/v1/source.mp4") == DATA
    with object_store.open("videos/v1/source.mp4") as stream:
        assert stream.read(3) == DATA[:3]
        assert stream.read() == DATA[3:]


@pytest.mark.parametrize("make_stream", [io.BytesIO, OneByteAtATime], ids=["bytesio", "short-reads"])
def test_put_file_like(object_store, make_stream):
    info = object_store.put("a/b.bin", make_stream(DATA))
    assert info.size == len(DATA)
    assert object_store.read("a/b.bin") == DATA


def test_put_real_file(object_store, tmp_path):
    source = tmp_path / "upload.bin"
    source.write_bytes(DATA)
    with source.open("rb") as f:
        object_store.put("from-file.bin", f)
    assert object_store.read("from-file.bin") == DATA


def test_put_larger_than_one_chunk(object_store):
    big = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32 + 5)  # a bit over 3 MiB
    object_store.put("big.bin", io.BytesIO(big))
    assert object_store.stat("big.bin").size == len(big)
    assert object_store.read("big.bin") == big
    boundary = 1024 * 1024
    assert object_store.read("big.bin", boundary - 10, boundary + 9) == big[boundary - 10:boundary + 10]


def test_put_empty_object(object_store):
    info = object_store.put("empty.txt", b"")
    assert info.size == 0
    assert object_store.read("empty.txt") == b""


def test_put_replaces(object_store):
    object_store.put("k.bin", b"first version")
    object_store.put("k.bin", b"2nd")
    assert object_store.read("k.bin") == b"2nd"
    assert object_store.stat("k.bin").size == 3


# --- ranged reads -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, 0, DATA[:1]),  # first byte
        (10, 19, DATA[10:20]),  # inclusive end
        (1000, None, DATA[1000:]),  # open-ended
        (255, 255, DATA[255:256]),  # single byte
        (len(DATA) - 1, len(DATA) - 1, DATA[-1:]),  # last byte
        (len(DATA) - 1, None, DATA[-1:]),  # last byte, open-ended
        (0, len(DATA) - 1, DATA),  # whole object as a range
        (len(DATA) - 5, len(DATA) + 100, DATA[-5:]),  # end past the object is clamped
    ],
)
def test_ranged_reads(object_store, start, end, expected):
    object_store.put("r.bin", DATA)
    assert object_store.read("r.bin", start, end) == expected
    with object_store.open("r.bin", start, end) as stream:
        chunks = []
        while chunk := stream.read(100):
            chunks.append(chunk)
    assert b"".join(chunks) == expected


def test_negative_range_start_is_rejected(object_store):
    object_store.put("r.bin", DATA)
    with pytest.raises(ValueError):
        object_store.read("r.bin", -1)


# --- stat ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "content_type"),
    [
        ("v/hls/master.m3u8", "application/vnd.apple.mpegurl"),
        ("v/hls/720p/seg_00001.m4s", "video/iso.segment"),
        ("v/hls/seg.ts", "video/mp2t"),
        ("v/source.mp4", "video/mp4"),
        ("v/thumbs/poster.jpg", "image/jpeg"),
        ("v/thumbs/sheet.webp", "image/webp"),
        ("v/captions.vtt", "text/vtt"),
        ("v/UPPER.M3U8", "application/vnd.apple.mpegurl"),
        ("v/blob.bin", "application/octet-stream"),
        ("v/noextension", "application/octet-stream"),
    ],
)
def test_stat_content_type_from_extension(object_store, key, content_type):
    object_store.put(key, b"#EXTM3U\n")
    info = object_store.stat(key)
    assert info.content_type == content_type
    assert info.key == key
    assert info.size == 8


def test_stat_etag_is_quoted_stable_and_tracks_content(object_store):
    put_info = object_store.put("e.txt", b"aaaa")
    first = object_store.stat("e.txt")
    assert first.etag == put_info.etag
    assert first.etag.startswith('"') and first.etag.endswith('"') and len(first.etag) > 2
    assert object_store.stat("e.txt").etag == first.etag  # stable while unchanged
    object_store.put("e.txt", b"bbbb")  # same size, different content
    second = object_store.stat("e.txt")
    assert second.etag != first.etag
    assert second.last_modified >= first.last_modified
    assert second.last_modified.tzinfo is not None


def test_list_reports_the_same_info_as_stat(object_store):
    object_store.put("l/one.m3u8", b"12345")
    (listed,) = list(object_store.list("l/"))
    assert listed.key == "l/one.m3u8"
    assert listed.size == 5
    assert listed.etag == object_store.stat("l/one.m3u8").etag
    assert listed.content_type == "application/vnd.apple.mpegurl"


# --- missing objects and delete -----------------------------------------------------------------------


def test_missing_objects_raise_object_not_found(object_store):
    with pytest.raises(ObjectNotFound):
        object_store.open("nope/missing.bin")
    with pytest.raises(ObjectNotFound):
        object_store.read("missing.bin", 0, 10)
    with pytest.raises(ObjectNotFound):
        object_store.stat("nope/missing.bin")


def test_a_prefix_is_not_an_object(object_store):
    object_store.put("dir/child.bin", b"x")
    with pytest.raises(ObjectNotFound):
        object_store.stat("dir")
    with pytest.raises(ObjectNotFound):
        object_store.open("dir")


def test_a_key_below_an_object_is_missing(object_store):
    object_store.put("file.bin", b"x")
    with pytest.raises(ObjectNotFound):
        object_store.stat("file.bin/child")
    with pytest.raises(ObjectNotFound):
        object_store.open("file.bin/child")
    object_store.delete("file.bin/child")  # nothing there: no error, and the object stays
    assert object_store.read("file.bin") == b"x"


def test_delete_is_idempotent(object_store):
    object_store.put("d/x.bin", b"x")
    object_store.put("d/y.bin", b"y")
    object_store.delete("d/x.bin")
    with pytest.raises(ObjectNotFound):
        object_store.stat("d/x.bin")
    object_store.delete("d/x.bin")  # again: no error
    object_store.delete("never/existed.bin")
    assert keys(object_store) == ["d/y.bin"]
    assert object_store.read("d/y.bin") == b"y"


def test_delete_of_a_prefix_name_deletes_nothing(object_store):
    object_store.put("p/child.bin", b"x")
    object_store.delete("p")  # "p" is no object: nothing to do, and no error
    assert keys(object_store) == ["p/child.bin"]


# --- list and delete_prefix ---------------------------------------------------------------------------

TREE = [
    "videos/a/master.m3u8",
    "videos/a/720p/seg_1.m4s",
    "videos/a/720p/seg_2.m4s",
    "videos/a_b/z.jpg",
    "videos/ab/x.jpg",
    "videos/b/y.jpg",
    "videos/zz.txt",
    "videosx",
    "other/z",
]


@pytest.fixture
def tree(object_store):
    for key in TREE:
        object_store.put(key, key.encode())
    return object_store


def test_list_everything_sorted(tree):
    assert keys(tree) == sorted(TREE)


@pytest.mark.parametrize(
    "prefix",
    ["videos/a/", "videos/a", "videos/", "videos", "videos/a/720p/", "videos/a/720p/seg_1", "o", "other/z",
     "nothing/", "videos/none/"],
)
def test_list_prefix_returns_exactly_the_keys_under_it_sorted(tree, prefix):
    assert keys(tree, prefix) == sorted(k for k in TREE if k.startswith(prefix))


def test_list_with_invalid_prefix_raises(object_store):
    with pytest.raises(InvalidKey):
        list(object_store.list("../"))


def test_delete_prefix(tree):
    assert tree.delete_prefix("videos/a/") == 3
    assert keys(tree) == sorted(k for k in TREE if not k.startswith("videos/a/"))
    assert tree.read("videos/ab/x.jpg") == b"videos/ab/x.jpg"
    assert tree.delete_prefix("videos/a/") == 0
    assert tree.delete_prefix("videos/") == 4
    assert keys(tree) == ["other/z", "videosx"]


# --- key validation -----------------------------------------------------------------------------------

BAD_KEYS = ["../x", "/etc/passwd", "a/../../b", "a//b", ".hidden", "a/.hidden", "", "a\\b", "a/./b", ".", "..",
            "a/", "/", "a b", "x\x00y", "a/" + "x" * 300, "é"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys_are_rejected_everywhere(object_store, key):
    with pytest.raises(InvalidKey):
        validate_key(key)
    with pytest.raises(InvalidKey):
        object_store.put(key, b"evil")
    with pytest.raises(InvalidKey):
        object_store.open(key)
    with pytest.raises(InvalidKey):
        object_store.stat(key)
    with pytest.raises(InvalidKey):
        object_store.delete(key)
    with pytest.raises(InvalidKey):
        object_store.create_multipart(key)
    assert keys(object_store) == []


@pytest.mark.parametrize("key", ["a", "a/b/c.m3u8", "A-Z_0.9", "v/1080p/seg_00001.m4s", "x" * 255])
def test_valid_keys_are_accepted(object_store, key):
    assert validate_key(key) == key
    object_store.put(key, b"ok")
    assert object_store.read(key) == b"ok"


# --- atomic put ---------------------------------------------------------------------------------------


def test_failed_put_keeps_the_old_object_and_leaves_nothing_visible(object_store):
    object_store.put("atomic/obj.bin", b"old content")
    old_etag = object_store.stat("atomic/obj.bin").etag
    with pytest.raises(ConnectionResetError):
        object_store.put("atomic/obj.bin", FailsMidway(b"new partial content"))
    assert object_store.read("atomic/obj.bin") == b"old content"
    assert object_store.stat("atomic/obj.bin").etag == old_etag
    assert keys(object_store) == ["atomic/obj.bin"]


def test_failed_put_of_a_new_key_creates_nothing(object_store):
    with pytest.raises(ConnectionResetError):
        object_store.put("atomic/new.bin", FailsMidway(b"partial"))
    with pytest.raises(ObjectNotFound):
        object_store.stat("atomic/new.bin")
    assert keys(object_store) == []


# --- multipart ----------------------------------------------------------------------------------------

# Every part but the last must be at least 5 MiB (S3's rule, which the local store enforces as well).
BIG = MIN_PART_SIZE
PARTS = {1: b"A" * (BIG - 5) + b"first", 2: b"B" * (BIG + 7) + b"second", 3: b"C" * 10 + b"third"}
ONE = b"1" * BIG  # a full-size first part


def md5_etag(data: bytes) -> str:
    return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'


@pytest.mark.parametrize("order", [[1, 2, 3], [3, 1, 2]], ids=["in-order", "out-of-order"])
def test_multipart_concatenates_parts_by_number(object_store, order):
    upload_id = object_store.create_multipart("mp/video.mp4", content_type="video/mp4")
    etags = {}
    for number in order:
        etags[number] = object_store.upload_part("mp/video.mp4", upload_id, number, PARTS[number])
        assert etags[number] == md5_etag(PARTS[number])
    info = object_store.complete_multipart("mp/video.mp4", upload_id, [(n, etags[n]) for n in order])
    expected = PARTS[1] + PARTS[2] + PARTS[3]
    assert info.size == len(expected)
    assert object_store.read("mp/video.mp4") == expected
    assert object_store.stat("mp/video.mp4").content_type == "video/mp4"
    assert keys(object_store) == ["mp/video.mp4"]  # no part files are listed


def test_multipart_part_from_a_stream_and_reuploaded_part(object_store):
    upload_id = object_store.create_multipart("mp/s.bin")
    object_store.upload_part("mp/s.bin", upload_id, 1, b"stale")
    fresh = b"fresh-" * (BIG // 6 + 1)
    e1 = object_store.upload_part("mp/s.bin", upload_id, 1, io.BytesIO(fresh))  # last upload wins
    e2 = object_store.upload_part("mp/s.bin", upload_id, 2, OneByteAtATime(b"tail"))
    assert e1 == md5_etag(fresh) and e2 == md5_etag(b"tail")
    object_store.complete_multipart("mp/s.bin", upload_id, [(1, e1), (2, e2)])
    assert object_store.read("mp/s.bin") == fresh + b"tail"


def test_multipart_parts_from_buffers_and_views(object_store):
    """Parts given as a bytearray or a slice of one (how the upload service hands over the buffer it received
    into) store exactly the bytes in view."""
    upload_id = object_store.create_multipart("mp/v.bin")
    buffer = bytearray(b"0123456789" * (BIG // 10 + 1))
    view = memoryview(bytearray(b"ab-tail-cd"))[3:7]
    e1 = object_store.upload_part("mp/v.bin", upload_id, 1, buffer)
    e2 = object_store.upload_part("mp/v.bin", upload_id, 2, view)
    assert e1 == md5_etag(bytes(buffer)) and e2 == md5_etag(b"tail")
    object_store.complete_multipart("mp/v.bin", upload_id, [(1, e1), (2, e2)])
    assert object_store.read("mp/v.bin") == bytes(buffer) + b"tail"


def test_multipart_wrong_etag_raises_and_upload_survives(object_store):
    upload_id = object_store.create_multipart("mp/e.bin")
    e1 = object_store.upload_part("mp/e.bin", upload_id, 1, ONE)
    e2 = object_store.upload_part("mp/e.bin", upload_id, 2, b"two")
    with pytest.raises(ValueError):
        object_store.complete_multipart("mp/e.bin", upload_id, [(1, e1), (2, md5_etag(b"other"))])
    with pytest.raises(ObjectNotFound):
        object_store.stat("mp/e.bin")
    # The upload is still there and can be completed correctly.
    object_store.complete_multipart("mp/e.bin", upload_id, [(1, e1), (2, e2)])
    assert object_store.read("mp/e.bin") == ONE + b"two"


def test_multipart_small_part_before_the_last_raises_and_upload_survives(object_store):
    upload_id = object_store.create_multipart("mp/small.bin")
    e1 = object_store.upload_part("mp/small.bin", upload_id, 1, b"x" * (BIG - 1))  # one byte short
    e2 = object_store.upload_part("mp/small.bin", upload_id, 2, b"tail")
    with pytest.raises(ValueError, match="5 MiB"):
        object_store.complete_multipart("mp/small.bin", upload_id, [(1, e1), (2, e2)])
    with pytest.raises(ObjectNotFound):
        object_store.stat("mp/small.bin")
    e1 = object_store.upload_part("mp/small.bin", upload_id, 1, b"x" * BIG)  # exactly 5 MiB is enough
    info = object_store.complete_multipart("mp/small.bin", upload_id, [(1, e1), (2, e2)])
    assert info.size == BIG + 4


def test_multipart_a_single_small_part_is_fine(object_store):
    upload_id = object_store.create_multipart("mp/one-part.bin")
    e1 = object_store.upload_part("mp/one-part.bin", upload_id, 1, b"short and last")
    assert object_store.complete_multipart("mp/one-part.bin", upload_id, [(1, e1)]).size == 14
    assert object_store.read("mp/one-part.bin") == b"short and last"


@pytest.mark.parametrize("parts", [[], [(1, "E1"), (1, "E1")]], ids=["no-parts", "repeated-part"])
def test_multipart_malformed_part_list_raises(object_store, parts):
    upload_id = object_store.create_multipart("mp/bad.bin")
    e1 = object_store.upload_part("mp/bad.bin", upload_id, 1, b"data")
    with pytest.raises(ValueError):
        object_store.complete_multipart("mp/bad.bin", upload_id, [(n, e1 if e == "E1" else e) for n, e in parts])
    assert keys(object_store) == []
    object_store.complete_multipart("mp/bad.bin", upload_id, [(1, e1)])  # still open
    assert object_store.read("mp/bad.bin") == b"data"


def test_multipart_missing_part_raises(object_store):
    upload_id = object_store.create_multipart("mp/m.bin")
    e1 = object_store.upload_part("mp/m.bin", upload_id, 1, ONE)
    with pytest.raises(ValueError):
        object_store.complete_multipart("mp/m.bin", upload_id, [(1, e1), (2, md5_etag(b"two"))])
    with pytest.raises(ObjectNotFound):
        object_store.stat("mp/m.bin")


def test_multipart_part_numbers_are_bounded(object_store):
    upload_id = object_store.create_multipart("mp/n.bin")
    for number in (0, 10001):
        with pytest.raises(ValueError):
            object_store.upload_part("mp/n.bin", upload_id, number, b"x")


def test_multipart_upload_id_is_bound_to_its_key(object_store):
    upload_id = object_store.create_multipart("mp/one.bin")
    with pytest.raises(ObjectNotFound):
        object_store.upload_part("mp/two.bin", upload_id, 1, b"x")
    with pytest.raises(ObjectNotFound):
        object_store.upload_part("mp/one.bin", "unknownuploadid", 1, b"x")


def test_multipart_abort_removes_the_upload(object_store):
    object_store.put("mp/a.bin", b"previous")
    upload_id = object_store.create_multipart("mp/a.bin")
    e1 = object_store.upload_part("mp/a.bin", upload_id, 1, b"new")
    object_store.abort_multipart("mp/a.bin", upload_id)
    with pytest.raises(ObjectNotFound):
        object_store.upload_part("mp/a.bin", upload_id, 2, b"more")
    with pytest.raises(ObjectNotFound):
        object_store.complete_multipart("mp/a.bin", upload_id, [(1, e1)])
    assert object_store.read("mp/a.bin") == b"previous"
    object_store.abort_multipart("mp/a.bin", upload_id)  # idempotent
    assert keys(object_store) == ["mp/a.bin"]


def test_completed_upload_cannot_be_completed_twice(object_store):
    upload_id = object_store.create_multipart("mp/c.bin")
    e1 = object_store.upload_part("mp/c.bin", upload_id, 1, b"data")
    object_store.complete_multipart("mp/c.bin", upload_id, [(1, e1)])
    with pytest.raises(ObjectNotFound):
        object_store.complete_multipart("mp/c.bin", upload_id, [(1, e1)])
    assert object_store.read("mp/c.bin") == b"data"


# --- listing unfinished uploads -----------------------------------------------------------------------


def test_list_multipart_uploads_shows_open_uploads_only(object_store):
    assert object_store.list_multipart_uploads() == []
    a = object_store.create_multipart("up/a.mp4")
    b = object_store.create_multipart("up/b.mp4")
    other = object_store.create_multipart("elsewhere/c.mp4")
    object_store.upload_part("up/a.mp4", a, 1, b"x")
    listed = object_store.list_multipart_uploads()
    assert [(key, upload_id) for key, upload_id, _ in listed] == [
        ("elsewhere/c.mp4", other), ("up/a.mp4", a), ("up/b.mp4", b)]
    for _, _, initiated in listed:
        assert isinstance(initiated, datetime) and initiated.tzinfo is not None
    assert [upload_id for _, upload_id, _ in object_store.list_multipart_uploads("up/")] == [a, b]
    assert object_store.list_multipart_uploads("nothing/") == []
    e1 = object_store.upload_part("up/b.mp4", b, 1, b"y")
    object_store.complete_multipart("up/b.mp4", b, [(1, e1)])
    object_store.abort_multipart("elsewhere/c.mp4", other)
    assert [(key, upload_id) for key, upload_id, _ in object_store.list_multipart_uploads()] == [("up/a.mp4", a)]
    assert keys(object_store) == ["up/b.mp4"]  # open uploads are not objects


def test_list_multipart_uploads_with_invalid_prefix_raises(object_store):
    with pytest.raises(InvalidKey):
        object_store.list_multipart_uploads("../")


def test_abort_with_another_keys_upload_id_aborts_nothing(object_store):
    upload_id = object_store.create_multipart("mp/mine.bin")
    e1 = object_store.upload_part("mp/mine.bin", upload_id, 1, b"mine")
    object_store.abort_multipart("mp/theirs.bin", upload_id)
    object_store.complete_multipart("mp/mine.bin", upload_id, [(1, e1)])
    assert object_store.read("mp/mine.bin") == b"mine"
