"""Upload interruptions: connections dropped mid-PATCH at random bytes, and the upload service killed (SIGKILL)
or stopped (SIGTERM) mid-upload and started again on the same data, on the local store and on S3 (moto).
The stored object is read back from the store itself and must hash like the source."""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import time
import uuid

import pytest
import requests

from services import keys
from services.testing import (
    ReelhouseProcess,
    open_partial_patch,
    padded_clip,
    register_account,
    sha256_of,
    soak,
    tus_create,
    tus_patch,
    tus_settled_offset,
)

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

MiB = 1024 * 1024


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.infra)])
def store(request, tmp_path):
    """{"env": what `reelhouse up` needs for this store, "open": key → a stream read from the store itself}."""
    if request.param == "local":
        from services.adapters.local_objects import LocalObjectStore

        return {"env": {}, "open": lambda key: LocalObjectStore(tmp_path / "data" / "objects").open(key)}
    from services.adapters.s3_objects import S3ObjectStore

    server = request.getfixturevalue("s3_server")
    bucket = f"drops-{uuid.uuid4().hex[:12]}"
    reader = S3ObjectStore(bucket, endpoint_url=server.endpoint_url, access_key="test", secret_key="test")  # noqa: S106
    env = {"STORAGE_URL": f"s3://{bucket}", "S3_ENDPOINT_URL": server.endpoint_url, "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "UPLOAD_PART_SIZE": str(5 * MiB)}
    return {"env": env, "open": reader.open}


class Servers:
    """`reelhouse up` processes on one data directory, one after the other; whatever runs is stopped at the end."""

    def __init__(self, tmp_path, env):
        self.data, self.env, self.current = tmp_path / "data", {"WORKER_CONCURRENCY": "0", **env}, None

    def start(self) -> ReelhouseProcess:
        self.current = ReelhouseProcess(self.data, **self.env)
        return self.current

    def close(self) -> None:
        if self.current is not None and self.current.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):  # stop() has killed it then
                self.current.stop(timeout=30)


@pytest.fixture
def servers(tmp_path, store):
    running = Servers(tmp_path, store["env"])
    try:
        yield running
    finally:
        running.close()


def _drop_after(url, token, location, offset, data, cut) -> None:
    """A PATCH announcing the rest of the file whose connection dies after `cut` body bytes."""
    with open_partial_patch(url, token, location, offset, len(data) - offset) as sock:
        for start in range(offset, cut, 256 * 1024):
            sock.sendall(data[start:min(cut, start + 256 * 1024)])


def _finish(url, token, location, offset, data, chunk=4 * MiB) -> None:
    while offset < len(data):
        answer = tus_patch(url, token, location, offset, data[offset:offset + chunk])
        assert answer.status_code == 204, answer.text
        offset = int(answer.headers["Upload-Offset"])


def _check_stored(server, store, account, video_id, source) -> None:
    video = requests.get(f"{server.url}/api/videos/{video_id}", timeout=10,
                         headers={"Authorization": f"Bearer {account['token']}"}).json()
    assert video["status"] == "uploaded", video
    with store["open"](keys.original_key(account["tenant"]["id"], video_id)) as stream:
        assert sha256_of(stream) == sha256_of(source.open("rb"))


def test_random_connection_drops(tmp_path, store, servers):
    """N drops at seeded random bytes of a tus upload: after each, the offset the server settles on lies between
    the last one and the byte where the connection died; the stored object's sha256 equals the source's."""
    size, drops = soak(16 * MiB, 64 * MiB), soak(5, 20)
    rng = random.Random(20240609)
    source = padded_clip(tmp_path / "source.mp4", size, seed=1)
    data = source.read_bytes()
    server = servers.start()
    account = register_account(server.url)
    token = account["token"]
    location = tus_create(server.url, token, size).headers["Location"]
    offset, started = 0, time.monotonic()
    for cut in sorted(rng.sample(range(1, size), drops)):
        if cut <= offset:
            continue
        _drop_after(server.url, token, location, offset, data, cut)
        settled = tus_settled_offset(server.url, token, location)
        assert offset <= settled <= cut, (offset, settled, cut)
        offset = settled
    _finish(server.url, token, location, offset, data)
    print(f"\n{drops} drops over {size // MiB} MiB in {time.monotonic() - started:.1f} s")
    _check_stored(server, store, account, location.rsplit("/", 1)[1], source)


def test_upload_service_restarted_mid_upload(tmp_path, store, servers):
    """SIGKILL mid-PATCH, then SIGTERM mid-PATCH, each followed by a new process on the same data: HEAD gives an
    offset the stored bytes agree with, and the upload resumes and completes with the source's sha256."""
    size = soak(16 * MiB, 64 * MiB)
    source = padded_clip(tmp_path / "source.mp4", size, seed=2)
    data = source.read_bytes()
    server = servers.start()
    account = register_account(server.url)
    token = account["token"]
    location = tus_create(server.url, token, size).headers["Location"]
    offset = 0
    for how in (signal.SIGKILL, signal.SIGTERM):
        for _ in range(2):  # a few whole PATCHes first
            assert tus_patch(server.url, token, location, offset, data[offset:offset + 3 * MiB]).status_code == 204
            offset += 3 * MiB
        before = offset
        with open_partial_patch(server.url, token, location, offset, size - offset) as sock:
            sock.sendall(data[offset:offset + 2 * MiB])
            time.sleep(0.3)
            if how == signal.SIGKILL:
                server.kill()  # master and gunicorn worker at once, as a crash would
            else:
                server.proc.send_signal(how)
                sock.close()  # the client goes too: a graceful stop must not wait for it forever
                server.proc.wait(60)
        server = servers.start()
        offset = tus_settled_offset(server.url, token, location, timeout=40)  # a killed holder's lease runs out
        assert before <= offset <= before + 2 * MiB, (before, offset, how)
    _finish(server.url, token, location, offset, data)
    _check_stored(server, store, account, location.rsplit("/", 1)[1], source)
