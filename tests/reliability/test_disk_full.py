"""Disk full on the local store: the object store of `reelhouse up` on a small tmpfs.

An upload whose declared length does not fit in the free space now is refused at creation with 507
`insufficient_storage` (nothing created); one that fitted when created but meets a full disk mid-PATCH gets 507
too, and the bytes of that PATCH are given back (no staging or temporary file left); the service keeps serving,
and the upload resumes once there is room. The worker's scratch space on a full tmpfs: the job fails with a
readable reason after its attempts, never hangs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest
import requests

from services import keys
from services.testing import (
    ReelhouseProcess,
    assert_error,
    make_clip,
    padded_clip,
    register_account,
    require_infra,
    sha256_of,
    soak,
    tus_create,
    tus_patch,
    tus_settled_offset,
    tus_upload,
)

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

MiB = 1024 * 1024


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A tmpfs of `size` mounted at `path`, always unmounted afterwards (lazily if something still holds it)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                             capture_output=True, text=True, timeout=30)
    if mounted.returncode != 0:
        require_infra(f"root to mount a tmpfs ({mounted.stderr.strip()})")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)
        assert not os.path.ismount(path), f"the tmpfs at {path} is still mounted"


@contextlib.contextmanager
def running(data: Path, **env):
    server = ReelhouseProcess(data, **env)
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):  # stop() has killed it then
            server.stop(timeout=30)


def _fill(path: Path, keep_free: int) -> Path:
    """A ballast file taking all but `keep_free` bytes of path's filesystem."""
    ballast = path / "ballast"
    size = os.statvfs(path).f_bavail * os.statvfs(path).f_frsize - keep_free
    with ballast.open("wb") as f:
        f.write(b"\0" * max(size, 0))
    return ballast


def _leftovers(store: Path) -> list[str]:
    """Files in the store that are neither the ballast nor a finished object: staging and temporary files."""
    return sorted(str(p.relative_to(store)) for p in store.rglob("*")
                  if p.is_file() and p.name != "ballast" and not p.name.startswith("original"))


def test_a_full_disk_is_507_and_nothing_is_left_behind(tmp_path):
    with tmpfs(tmp_path / "store", "8m") as store, \
            running(tmp_path / "data", STORAGE_URL=f"file://{store}", WORKER_CONCURRENCY="0") as server:
        account = register_account(server.url)
        token, auth = account["token"], {"Authorization": f"Bearer {account['token']}"}

        # Declared larger than the free space: refused before anything exists.
        assert_error(tus_create(server.url, token, 16 * MiB), 507, "insufficient_storage")
        assert requests.get(server.url + "/api/videos", headers=auth, timeout=10).json()["total"] == 0

        # Fits when created, then the disk fills up (another writer) before the bytes arrive.
        source = padded_clip(tmp_path / "source.mp4", 5 * MiB, seed=3)
        data = source.read_bytes()
        location = tus_create(server.url, token, len(data)).headers["Location"]
        assert tus_patch(server.url, token, location, 0, data[:MiB]).status_code == 204
        ballast = _fill(store, keep_free=2 * MiB)  # half of what the next PATCH brings
        started = time.monotonic()
        refused = tus_patch(server.url, token, location, MiB, data[MiB:])
        assert_error(refused, 507, "insufficient_storage")
        assert int(refused.headers["Retry-After"]) > 0 and time.monotonic() - started < 30
        # That PATCH's bytes were given back at once (checked before any other request touches the upload).
        assert _leftovers(store) == [f".uploads/{location.rsplit('/', 1)[1]}"]
        assert (store / ".uploads" / location.rsplit("/", 1)[1]).stat().st_size == MiB
        assert tus_settled_offset(server.url, token, location) == MiB

        # The service goes on: health, listing, a small upload that fits.
        assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
        assert requests.get(server.url + "/api/videos", headers=auth, timeout=10).status_code == 200
        small = make_clip(tmp_path / "small.mp4", 1, size="160x90")
        assert small.stat().st_size < 512 * 1024
        small_id = tus_upload(server.url, token, small, "Fits")

        # Room again: the refused upload resumes where it was.
        ballast.unlink()
        assert tus_patch(server.url, token, location, MiB, data[MiB:]).status_code == 204
        video_id = location.rsplit("/", 1)[1]
        for vid in (video_id, small_id):
            video = requests.get(f"{server.url}/api/videos/{vid}", headers=auth, timeout=10).json()
            assert video["status"] == "uploaded", video
        with (store / keys.original_key(account["tenant"]["id"], video_id)).open("rb") as stored:
            assert sha256_of(stored) == sha256_of(source.open("rb"))
        assert _leftovers(store) == []


def test_worker_scratch_space_full_fails_the_job_clearly(tmp_path):
    """ffmpeg's outputs cannot be written (WORK_DIR on a 1 MiB tmpfs): retried, then failed with the reason."""
    with tmpfs(tmp_path / "work", "1m") as work, \
            running(tmp_path / "data", WORK_DIR=str(work), WORKER_CONCURRENCY="1", JOB_MAX_ATTEMPTS="2") as server:
        account = register_account(server.url)
        clip = make_clip(tmp_path / "clip.mp4", soak(6, 20), size="640x360")
        video_id = tus_upload(server.url, account["token"], clip, "Too big for the scratch disk")
        deadline = time.monotonic() + 180
        while True:
            video = requests.get(f"{server.url}/api/videos/{video_id}", timeout=10,
                                 headers={"Authorization": f"Bearer {account['token']}"}).json()
            if video["status"] == "failed":
                break
            assert video["status"] != "ready", video
            assert time.monotonic() < deadline, video
            time.sleep(0.5)
        print(f"\nscratch disk full: {video['error']}")
        assert video["error"].startswith("Processing failed after 2 attempts"), video
        assert "space" in video["error"].lower() or "insufficient storage" in video["error"], video
        assert list(work.iterdir()) == []  # job directories removed
