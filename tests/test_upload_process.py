"""End to end: tus uploads into a real `reelhouse up`, killed and restarted mid-upload, on both stores;
and the service's memory stays bounded whatever the PATCH size."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import imageio_ffmpeg
import pytest
import requests

from services.testing import STRONG_PASSWORD, MotoS3Server, free_port, rss_kib

pytestmark = pytest.mark.e2e
TUS = {"Tus-Resumable": "1.0.0"}


class Server:
    def __init__(self, data_dir: Path, port: int, env: dict[str, str]):
        self.url = f"http://127.0.0.1:{port}"
        self.log = data_dir.parent / f"server-{port}-{uuid.uuid4().hex[:6]}.log"
        environment = {**os.environ, "REELHOUSE_DATA_DIR": str(data_dir), "REELHOUSE_PORT": str(port), **env}
        self.proc = subprocess.Popen([sys.executable, "-m", "reelhouse_gateway", "up"], env=environment,
                                     stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if requests.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:  # not up yet, or too busy to answer within the timeout
                pass
            time.sleep(0.2)
        self.kill()  # never leave a server behind a failed start
        raise AssertionError(self.log.read_text())

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, not a shutdown."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def rss_kib(self) -> int:
        """Resident memory of the gunicorn worker (the child that serves requests)."""
        return rss_kib(self.proc.pid)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.infra)])
def store_env(request, tmp_path):
    if request.param == "local":
        yield {}
        return
    moto = MotoS3Server()
    moto.start()
    yield {"STORAGE_URL": f"s3://bucket-{uuid.uuid4().hex[:8]}", "S3_ENDPOINT_URL": moto.endpoint_url,
           "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    moto.stop()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=640x360:rate=25", "-f", "lavfi", "-i", "sine", "-t", "4", "-c:v", "libx264",
                    "-preset", "ultrafast", "-b:v", "30M", "-minrate", "30M", "-maxrate", "30M", "-bufsize", "30M",
                    "-x264-params", "nal-hrd=cbr", "-c:a", "aac", "-shortest", str(path)], check=True, timeout=120)
    return path


def _token(url: str) -> str:
    return requests.post(url + "/api/auth/register", json={
        "tenant_name": "Acme", "email": "me@acme.test", "password": STRONG_PASSWORD}, timeout=30).json()["access_token"]


def test_server_killed_mid_upload_resumes_after_restart(tmp_path, store_env, clip):
    data = clip.read_bytes()
    data_dir, port = tmp_path / "data", free_port()
    server = Server(data_dir, port, store_env)
    try:
        token = _token(server.url)
        auth = {"Authorization": f"Bearer {token}", **TUS}
        created = requests.post(server.url + "/api/uploads", headers={**auth, "Upload-Length": str(len(data))},
                                timeout=30)
        location = created.headers["Location"]
        cut = 9 * 1024 * 1024 + 7  # past one S3 part, with a staged remainder
        first = requests.patch(server.url + location, data=data[:cut], timeout=60, headers={
            **auth, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
        assert first.status_code == 204
    finally:
        server.kill()

    server = Server(data_dir, port, store_env)
    try:
        offset = int(requests.head(server.url + location, headers=auth, timeout=30).headers["Upload-Offset"])
        assert offset == cut
        rest = requests.patch(server.url + location, data=data[offset:], timeout=60, headers={
            **auth, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
        assert rest.status_code == 204, rest.text
        video = requests.get(server.url + location.replace("uploads", "videos"), headers=auth, timeout=30).json()
        # The embedded worker may have picked it up already.
        assert video["status"] in ("uploaded", "processing", "ready") and video["size"] == len(data)
    finally:
        server.kill()
    if not store_env:
        stored = next(data_dir.glob("objects/tenants/*/videos/*/original"))
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("patch_mib", [64, 256])
def test_memory_stays_bounded_whatever_the_patch_size(tmp_path, store_env, patch_mib):
    """256 MiB in 64 MiB PATCHes: the serving process grows by far less than what passes through it."""
    total = 256 * 1024 * 1024
    server = Server(tmp_path / "data", free_port(), store_env)
    try:
        auth = {"Authorization": f"Bearer {_token(server.url)}", **TUS}
        location = requests.post(server.url + "/api/uploads", headers={**auth, "Upload-Length": str(total)},
                                 timeout=30).headers["Location"]
        before, block = server.rss_kib(), os.urandom(1024 * 1024)
        samples, sampling = [before], threading.Event()

        def sample():  # every 20 ms, during the requests too: a spike between two PATCHes would hide otherwise
            while not sampling.wait(0.02):
                samples.append(server.rss_kib())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        class Body:
            """n MiB streamed from one block: the client holds little, so RSS figures are the server's."""

            def __init__(self, n_mib):
                self.left = n_mib * 1024 * 1024

            def __len__(self):
                return self.left

            def read(self, size=-1):
                size = self.left if size < 0 else min(size, self.left)
                chunk = (block * (size // len(block) + 1))[:size]
                self.left -= len(chunk)
                return chunk

        offset = 0
        while offset < total:
            n = min(patch_mib, (total - offset) // (1024 * 1024))
            response = requests.patch(server.url + location, data=Body(n), timeout=300, headers={
                **auth, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
            assert response.status_code == 204, response.text
            offset += n * 1024 * 1024
        sampling.set()
        sampler.join()
        growth_mib = (max(samples) - before) / 1024
        assert growth_mib < 64, f"RSS grew by {growth_mib:.1f} MiB"
    finally:
        server.kill()
