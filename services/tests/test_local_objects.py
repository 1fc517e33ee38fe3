"""LocalObjectStore specifics: confinement to the root directory, temp files, multipart part files."""

from __future__ import annotations

import os

import pytest

from services.adapters.local_objects import LocalObjectStore
from services.ports.objects import InvalidKey, ObjectNotFound


@pytest.fixture
def sandbox(tmp_path):
    """(store, outside): the store's root and a sibling directory that must stay untouched."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"top secret")
    return LocalObjectStore(tmp_path / "root"), outside


def _files_under(path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a/../../b", "a//b", ".hidden", "", "a\\b",
                                 "../outside/secret.txt", "../../x"])
def test_invalid_keys_create_nothing_outside_the_root(sandbox, tmp_path, key):
    store, outside = sandbox
    before = _files_under(tmp_path)
    with pytest.raises(InvalidKey):
        store.put(key, b"evil")
    with pytest.raises(InvalidKey):
        store.delete(key)
    assert _files_under(tmp_path) == before
    assert (outside / "secret.txt").read_bytes() == b"top secret"


def test_symlinked_file_pointing_outside_is_not_readable(sandbox):
    store, outside = sandbox
    (store.root / "videos").mkdir()
    os.symlink(outside / "secret.txt", store.root / "videos" / "leak.txt")
    for call in (lambda: store.read("videos/leak.txt"), lambda: store.stat("videos/leak.txt"),
                 lambda: store.open("videos/leak.txt", 0, 3)):
        with pytest.raises((InvalidKey, ObjectNotFound)):
            call()
    with pytest.raises((InvalidKey, ObjectNotFound)):
        store.put("videos/leak.txt", b"overwrite")  # must not write through the link
    assert [i.key for i in store.list()] == []  # not listed (its name and size are not the store's)
    assert store.delete_prefix("videos/") == 0
    assert (outside / "secret.txt").read_bytes() == b"top secret"


def test_symlinked_directory_pointing_outside_is_not_usable(sandbox):
    store, outside = sandbox
    os.symlink(outside, store.root / "evil", target_is_directory=True)
    with pytest.raises((InvalidKey, ObjectNotFound)):
        store.read("evil/secret.txt")
    with pytest.raises((InvalidKey, ObjectNotFound)):
        store.put("evil/planted.txt", b"x")
    with pytest.raises((InvalidKey, ObjectNotFound)):
        store.delete("evil/secret.txt")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_bytes() == b"top secret"
    assert [i.key for i in store.list("evil/")] == []


def test_failed_put_leaves_no_temp_file(tmp_path):
    store = LocalObjectStore(tmp_path / "root")

    class Boom:
        def read(self, n=-1):
            raise OSError("disk on fire")

    store.put("k.bin", b"old")
    with pytest.raises(OSError, match="disk on fire"):
        store.put("k.bin", Boom())
    leftovers = [p for p in store.root.rglob("*") if p.is_file() and p != store.root / "k.bin"]
    assert leftovers == []
    assert (store.root / "k.bin").read_bytes() == b"old"


def test_abort_and_complete_remove_part_files(tmp_path):
    store = LocalObjectStore(tmp_path / "root")
    aborted = store.create_multipart("a.bin")
    store.upload_part("a.bin", aborted, 1, b"x" * 100)
    completed = store.create_multipart("b.bin")
    etag = store.upload_part("b.bin", completed, 1, b"y" * 100)
    store.abort_multipart("a.bin", aborted)
    store.complete_multipart("b.bin", completed, [(1, etag)])
    part_files = [p for p in store.root.rglob("*") if p.is_file() and p.name.endswith(".part")]
    assert part_files == []
    assert {p.name for p in store.root.iterdir() if p.is_file()} == {"b.bin"}


def test_delete_removes_emptied_directories_but_not_the_root(tmp_path):
    store = LocalObjectStore(tmp_path / "root")
    store.put("a/b/c/d.bin", b"x")
    store.put("a/keep.bin", b"y")
    store.delete("a/b/c/d.bin")
    assert not (store.root / "a" / "b").exists()
    assert (store.root / "a" / "keep.bin").is_file()
    store.delete("a/keep.bin")
    assert store.root.is_dir() and not (store.root / "a").exists()


def test_local_path_points_at_the_file(tmp_path):
    store = LocalObjectStore(tmp_path / "root")
    store.put("v/x.bin", b"abc")
    path = store.local_path("v/x.bin")
    assert path is not None and path.read_bytes() == b"abc"
    assert path.resolve().is_relative_to(store.root)
    assert store.presign_get("v/x.bin") is None


def test_reopening_the_root_keeps_objects(tmp_path):
    LocalObjectStore(tmp_path / "root").put("persist/me.txt", b"still here")
    reopened = LocalObjectStore(tmp_path / "root")
    assert reopened.read("persist/me.txt") == b"still here"
    assert [i.key for i in reopened.list()] == ["persist/me.txt"]
    reopened.ping()


def test_stray_hidden_files_are_not_objects(tmp_path):
    store = LocalObjectStore(tmp_path / "root")
    store.put("v/a/seg.m4s", b"x")
    (tmp_path / "root" / "v" / "a" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "root" / "v" / ".cache").mkdir()
    (tmp_path / "root" / "v" / ".cache" / "f").write_bytes(b"junk")
    assert [info.key for info in store.list("v/")] == ["v/a/seg.m4s"]
    assert store.delete_prefix("v/") == 1



def test_list_multipart_uploads_reports_recent_activity_as_initiated(tmp_path):
    from datetime import UTC, datetime, timedelta

    store = LocalObjectStore(tmp_path / "root")
    upload_id = store.create_multipart("v/source.mp4")
    ((key, listed_id, initiated),) = store.list_multipart_uploads()
    assert (key, listed_id) == ("v/source.mp4", upload_id)
    assert abs(datetime.now(UTC) - initiated) < timedelta(minutes=1)
    (store.root / ".multipart" / "stray-file").write_bytes(b"not an upload")
    (store.root / ".multipart" / "no-key-file").mkdir()
    assert [u[1] for u in store.list_multipart_uploads()] == [upload_id]
    store.abort_multipart("v/source.mp4", upload_id)
    assert store.list_multipart_uploads() == []
