"""End to end: uploads become `ready` in the embedded process; in distributed mode two `reelhouse worker`
processes share one batch over RabbitMQ, and a worker stopped with SIGTERM hands its job back."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import av
import imageio_ffmpeg
import pytest
import requests

from services.testing import STRONG_PASSWORD, free_port, require_infra

pytestmark = pytest.mark.e2e
TUS = {"Tus-Resumable": "1.0.0"}


def make_clip(path: Path, seconds: float, size: str = "320x180") -> Path:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size={size}:rate=25", "-f", "lavfi", "-i", "sine", "-t", str(seconds), "-c:v", "libx264",
                    "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
                   check=True, timeout=120)
    return path


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "reelhouse_gateway", *args], env={**os.environ, **env},
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen, log: Path, path: str = "/readyz") -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if requests.get(url + path, timeout=1).status_code == 200:
                return
        except requests.RequestException:  # not up yet, or too busy to answer within the timeout
            pass
        time.sleep(0.2)
    raise AssertionError(log.read_text())


def upload(url: str, token: str, clip: Path, title: str) -> str:
    data = clip.read_bytes()
    auth = {"Authorization": f"Bearer {token}", **TUS}
    meta = f"title {base64.b64encode(title.encode()).decode()}"
    location = requests.post(url + "/api/uploads", timeout=30, headers={
        **auth, "Upload-Length": str(len(data)), "Upload-Metadata": meta}).headers["Location"]
    response = requests.patch(url + location, data=data, timeout=60, headers={
        **auth, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert response.status_code == 204, response.text
    return location.rsplit("/", 1)[1]


def follow(url: str, token: str, video_ids: list[str], timeout: float = 180) -> dict[str, dict]:
    deadline, seen = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        for video_id in video_ids:
            seen[video_id] = requests.get(f"{url}/api/videos/{video_id}", timeout=10,
                                          headers={"Authorization": f"Bearer {token}"}).json()
        if all(v["status"] in ("ready", "failed") for v in seen.values()):
            return seen
        time.sleep(0.5)
    raise AssertionError(f"not finished in time: {[(k, v['status'], v['progress']) for k, v in seen.items()]}")


def register(url: str) -> str:
    return requests.post(url + "/api/auth/register", timeout=30, json={
        "tenant_name": f"Org {uuid.uuid4().hex[:6]}", "email": "me@org.test", "password": STRONG_PASSWORD,
    }).json()["access_token"]


def test_embedded_upload_becomes_ready_with_every_output(tmp_path):
    data_dir, port = tmp_path / "data", free_port()
    url, log = f"http://127.0.0.1:{port}", tmp_path / "up.log"
    proc = start(["up"], {"REELHOUSE_DATA_DIR": str(data_dir), "REELHOUSE_PORT": str(port)}, log)
    try:
        wait_ready(url, proc, log)
        token = register(url)
        video_id = upload(url, token, make_clip(tmp_path / "clip.mp4", 4), "Embedded")
        video = follow(url, token, [video_id])[video_id]
        assert video["status"] == "ready", video
        assert [r["name"] for r in video["renditions"]] == ["180p"] and video["progress"] == 100
        prefix = next(data_dir.glob(f"objects/tenants/*/videos/{video_id}"))
        for name in ("hls/master.m3u8", "hls/180p/index.m3u8", "hls/180p/init.mp4", "thumbnail.jpg", "poster.jpg",
                     "storyboard.jpg", "storyboard.vtt", "original.mp4"):
            assert (prefix / name).is_file(), name
        assert "#EXT-X-ENDLIST" in (prefix / "hls/180p/index.m3u8").read_text()
        with av.open(str(prefix / "hls/master.m3u8")) as container:
            assert container.streams.video[0].codec_context.height == 180
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


@pytest.fixture
def rabbitmq():
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        require_infra("RabbitMQ on 127.0.0.1:5672")
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"
    yield namespace
    from services.adapters.rabbitmq_jobs import RabbitJobQueue

    RabbitJobQueue("amqp://guest:guest@127.0.0.1:5672/%2F", namespace=namespace).delete_topology()


def test_two_workers_share_a_batch_and_sigterm_hands_a_job_back(tmp_path, rabbitmq):
    env = {"REELHOUSE_DATA_DIR": str(tmp_path / "data"), "BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/%2F",
           "BROKER_NAMESPACE": rabbitmq, "WORKER_CONCURRENCY": "0", "JOB_MAX_ATTEMPTS": "3",
           "WORKER_GRACE_SECONDS": "0"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api_log = tmp_path / "api.log"
    api = start(["up"], {**env, "REELHOUSE_PORT": str(port)}, api_log)  # uploads + API, no workers of its own
    workers: list[subprocess.Popen] = []
    try:
        wait_ready(url, api, api_log)
        token = register(url)
        clips = [make_clip(tmp_path / f"clip{i}.mp4", 3 + i % 2) for i in range(4)]
        long_clip = make_clip(tmp_path / "long.mp4", 60, size="640x360")
        ids = [upload(url, token, clip, f"clip {i}") for i, clip in enumerate(clips)]
        for i in range(2):
            log = tmp_path / f"worker{i}.log"
            workers.append(start(["worker", "--concurrency", "1", "--health-port", str(free_port())], env, log))
        finished = follow(url, token, ids)
        assert all(v["status"] == "ready" for v in finished.values()), finished

        # A long job, then SIGTERM with no grace on the worker running it: the job is handed back (released,
        # keeping its attempt) and the other worker does it again from the start.
        long_id = upload(url, token, long_clip, "long")
        deadline = time.monotonic() + 60
        victim = None
        while victim is None and time.monotonic() < deadline:
            victim = next((w for w in workers if _is_transcoding(w)), None)
            time.sleep(0.1)
        assert victim is not None, "no worker started the long job"
        os.killpg(victim.pid, signal.SIGTERM)
        victim.wait(30)
        assert victim.returncode == 0
        survivor = next(w for w in workers if w is not victim)
        final = follow(url, token, [long_id], timeout=300)[long_id]
        assert final["status"] == "ready", final
    finally:
        for proc in [*workers, api]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    from services.adapters.sqlite_metadata import SqliteMetadataStore

    store = SqliteMetadataStore(tmp_path / "data" / "reelhouse.db")
    assert len({store.videos.get(i)["worker"] for i in ids}) == 2, "one worker did every job"
    record = store.videos.get(long_id)
    # a shutdown is not the job's fault: the survivor runs it as the same attempt (scale-ins cannot exhaust a job)
    assert record["worker"].endswith(f":{survivor.pid}") and record["attempt"] == 1, record


def _is_transcoding(proc: subprocess.Popen) -> bool:
    """Whether an ffmpeg runs under this worker."""
    children = []
    for task in Path(f"/proc/{proc.pid}/task").iterdir():  # every thread's: ffmpeg is started from a worker thread
        try:
            children += (task / "children").read_text().split()
        except FileNotFoundError:  # a thread that ended meanwhile (the job's planner, a publisher)
            continue
    for child in children:
        try:
            if "ffmpeg" in Path(f"/proc/{child}/cmdline").read_text():
                return True
        except FileNotFoundError:
            continue
    return False


def test_drain_takes_no_new_jobs_and_ends_the_worker(tmp_path, rabbitmq):
    """The Kubernetes preStop: POST /drain answers once the worker has let go of its work; then it exits."""
    env = {"REELHOUSE_DATA_DIR": str(tmp_path / "data"), "BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/%2F",
           "BROKER_NAMESPACE": rabbitmq, "WORKER_GRACE_SECONDS": "2"}
    port, log = free_port(), tmp_path / "worker.log"
    worker = start(["worker", "--health-port", str(port)], env, log)
    try:
        wait_ready(f"http://127.0.0.1:{port}", worker, log)
        assert requests.get(f"http://127.0.0.1:{port}/drain", timeout=10).status_code == 405  # POST only
        started = time.monotonic()
        answer = requests.post(f"http://127.0.0.1:{port}/drain", timeout=30)
        assert answer.status_code == 200 and answer.json() == {"status": "drained"}
        assert worker.wait(15) == 0 and time.monotonic() - started < 15, log.read_text()
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
