"""Broker outage: RabbitMQ's app stopped (`rabbitmqctl stop_app`) for a while during a batch of uploads and
transcode jobs on a `make cluster` topology, then started again.

A private RabbitMQ node (own name, ports, data dir) carries this cluster's jobs and events, so the broker other
tests share is never stopped.

What the product guarantees for an upload completed during the outage is the outbox (upload-service
`completion.py`, `sweeper.py`): the final PATCH is answered 204 at once, the video is `uploaded` and its record says
a job is owed (`job_pending`, with `job_publish_failed` once the request gave up publishing); the upload service's
sweeper publishes owed jobs every few seconds once the broker is back. The test checks exactly that during the
real outage, then that every video ends `ready` (no job lost), that no service was restarted (they reconnected by
themselves), and that Socket.IO events flow again (a listener connected before the outage gets `video.ready` of
a video uploaded after it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from services.testing import (
    ClusterDeployment,
    EventListener,
    check_vod,
    free_port,
    make_clip,
    register_account,
    require_infra,
    soak,
    tus_create,
    tus_patch,
    tus_upload,
    wait_videos,
)

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

OUTAGE_SECONDS = soak(8, 20)
UPLOADS_DURING = soak(2, 4)  # uploads half sent before the outage and finished during it
JOBS_BEFORE = soak(1, 3)  # videos transcoding when the broker goes
RUNNING_SECONDS = soak(16, 30)  # long enough to be still transcoding then
SERVICES = ("auth", "upload", "stream", "gateway", "notify-1", "notify-2", "worker-1", "worker-2")


class PrivateRabbitMQ:
    """A RabbitMQ node of our own: `rh<id>@localhost` on free loopback ports, data and logs in `root`."""

    def __init__(self, root: Path):
        if not shutil.which("rabbitmq-server") or not shutil.which("rabbitmqctl"):
            require_infra("rabbitmq-server (a private node for the broker outage)")
        self.root, self.node = root, f"rh{uuid.uuid4().hex[:8]}@localhost"
        self.port, self.dist_port = free_port(), free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        root.mkdir(parents=True, exist_ok=True)
        # The system config pins the listener to 5672: this node gets a config file of its own.
        (root / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(root)], check=False, timeout=30)
        self.env = {**os.environ, "RABBITMQ_NODENAME": self.node, "RABBITMQ_NODE_PORT": str(self.port),
                    "RABBITMQ_DIST_PORT": str(self.dist_port), "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq.conf"),
                    "RABBITMQ_MNESIA_BASE": str(root / "mnesia"), "RABBITMQ_LOG_BASE": str(root / "log"),
                    "RABBITMQ_PID_FILE": str(root / "pid"), "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "plugins")}
        (root / "plugins").write_text("[].\n")  # no management plugin: its port would clash with the shared node's

    def ctl(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
        return subprocess.run(["rabbitmqctl", "-n", self.node, *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def start(self) -> PrivateRabbitMQ:
        subprocess.run(["rabbitmq-server", "-detached"], env=self.env, check=True, timeout=60,
                       capture_output=True)
        deadline = time.monotonic() + 90
        while True:  # await_startup fails at once while the node is not registered with epmd yet
            if self.ctl("await_startup", "--timeout", "60").returncode == 0:
                return self
            if time.monotonic() > deadline:
                raise AssertionError(f"private RabbitMQ {self.node} did not start: {self.log_tail()}")
            time.sleep(1)

    def stop_app(self) -> None:
        result = self.ctl("stop_app")
        assert result.returncode == 0, result.stderr

    def start_app(self) -> None:
        result = self.ctl("start_app")
        assert result.returncode == 0, result.stderr

    def stop(self) -> None:
        """Stop the node whatever state it is in (also half started, or with its app stopped), then remove it."""
        try:
            stopped = self.ctl("stop", timeout=60).returncode == 0
        except subprocess.TimeoutExpired:
            stopped = False
        if not stopped:  # the node name is unique to this test: kill its Erlang VM by it
            subprocess.run(["pkill", "-9", "-f", self.node.split("@")[0]], check=False, timeout=10)
            time.sleep(1)
        leftover = subprocess.run(["pgrep", "-f", self.node.split("@")[0]], capture_output=True, text=True)
        assert not leftover.stdout.strip(), f"private RabbitMQ {self.node} still running: {leftover.stdout}"
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self) -> str:
        logs = sorted((self.root / "log").glob("*.log")) if (self.root / "log").exists() else []
        return logs[0].read_text(errors="replace")[-2000:] if logs else "(no log)"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    node = PrivateRabbitMQ(Path("/tmp") / f"reelhouse-rabbit-{uuid.uuid4().hex[:8]}")  # short: epmd/socket paths
    try:
        yield node.start()
    finally:
        node.stop()


@pytest.fixture(scope="module")
def cluster(broker, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BROKER_URL", broker.url)  # `make cluster` takes an amqp:// BROKER_URL from the environment
        running = ClusterDeployment(tmp_path_factory.mktemp("outage"))
    try:
        yield running
    finally:
        running.stop()


def _internal(cluster: ClusterDeployment, video_id: str) -> dict:
    """The metadata record, with what the API does not show (job_pending, job_publish_failed)."""
    from services.adapters.sqlite_metadata import SqliteMetadataStore

    store = SqliteMetadataStore(cluster.dir / "data" / "reelhouse.db")
    try:
        return store.videos.get(video_id) or {}
    finally:
        store.close()


def _half_upload(url: str, token: str, clip: Path, title: str) -> tuple[str, int, bytes]:
    """Create an upload and send its first half; the location, the offset reached and the rest."""
    data = clip.read_bytes()
    created = tus_create(url, token, len(data), title)
    assert created.status_code == 201, created.text
    location, half = created.headers["Location"], len(data) // 2
    assert tus_patch(url, token, location, 0, data[:half]).status_code == 204
    return location, half, data[half:]


def test_services_ride_out_a_broker_outage_and_no_job_is_lost(cluster, broker, tmp_path):
    url = cluster.url
    account = register_account(url)
    token, auth = account["token"], {"Authorization": f"Bearer {account['token']}"}
    queues = broker.ctl("list_queues", "name").stdout
    assert f"{cluster.state['namespace']}.jobs.express" in queues, queues  # the cluster runs on the private node
    # 720p (four rungs) for the jobs that must still be transcoding when the broker goes, even on an idle machine
    clips = [make_clip(tmp_path / f"c{n}.mp4", (RUNNING_SECONDS if n < JOBS_BEFORE else 4) + n,
                       "1280x720" if n < JOBS_BEFORE else "640x360")
             for n in range(JOBS_BEFORE + UPLOADS_DURING + 2)]
    restarts = {name: cluster.service(name)["restarts"] for name in SERVICES}
    listener = EventListener(url, token)
    try:
        # before: uploads half sent, then jobs transcoding (the broker goes the moment the first one runs)
        halves = [_half_upload(url, token, clip, f"During {n}")
                  for n, clip in enumerate(clips[JOBS_BEFORE:JOBS_BEFORE + UPLOADS_DURING])]
        running = [tus_upload(url, token, clip, f"Running {n}") for n, clip in enumerate(clips[:JOBS_BEFORE])]
        wait_videos(url, token, running[:1], timeout=120, until=("processing", "ready"))

        broker.stop_app()
        down_at = time.monotonic()
        try:
            in_progress = [v for v in running if _internal(cluster, v).get("status") == "processing"]
            assert in_progress, "no job was transcoding when the broker went"
            during = []
            for location, offset, rest in halves:  # finished while the broker is away: answered, a job owed
                began = time.monotonic()
                response = tus_patch(url, token, location, offset, rest, timeout=60)
                answered = time.monotonic() - began
                assert response.status_code == 204 and answered < 30, (response.status_code, response.text, answered)
                during.append((location.rsplit("/", 1)[1], answered))
            whole = tus_upload(url, token, clips[-2], "Whole during")  # a whole upload in the outage too
            during.append((whole, None))
            for video_id, _ in during:
                video = requests.get(f"{url}/api/videos/{video_id}", headers=auth, timeout=30).json()
                record = _internal(cluster, video_id)
                assert video["status"] == "uploaded" and record["job_pending"] is True, (video, record)
                assert record.get("job_publish_failed") is True, record  # its request gave up: the outbox has it
            ready_check = requests.get(url + "/readyz", timeout=30)
            assert ready_check.status_code == 503, ready_check.text  # the upload service's queue check says so
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))  # at least that long, checks included
        except BaseException:
            broker.start_app()  # so the cluster can be stopped cleanly
            raise
        broker.start_app()
        up_at = time.monotonic()
        print(f"outage: {up_at - down_at:.1f} s with {len(in_progress)} job(s) transcoding; final PATCHes "
              f"answered in {[round(a, 2) for _, a in during if a is not None]} s")

        # after: everything owed goes out, every video ends ready, nothing was restarted
        all_ids = running + [video_id for video_id, _ in during]
        records = wait_videos(url, token, all_ids, timeout=soak(240, 600))
        settled = time.monotonic() - up_at
        assert {v: r["status"] for v, r in records.items()} == dict.fromkeys(all_ids, "ready"), records
        for video_id in all_ids:
            record = _internal(cluster, video_id)
            assert not record.get("job_pending"), record
            check_vod(url, records[video_id])
        after = tus_upload(url, token, clips[-1], "After")
        listener.wait_for(after, "video.ready", timeout=180)  # the same Socket.IO connection: events resumed
        assert {name: cluster.service(name)["restarts"] for name in SERVICES} == restarts  # reconnected alone
        assert requests.get(url + "/readyz", timeout=30).status_code == 200
        print(f"{len(all_ids)} videos ready {settled:.1f} s after the broker came back; video.ready of a new "
              "upload delivered to a listener connected before the outage")
    finally:
        listener.close()
