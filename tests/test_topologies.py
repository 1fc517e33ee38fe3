"""The same end-to-end journey against both topologies: `reelhouse up` (one process, in-memory bus) and
`make cluster` (nginx ingress, gateway proxy, auth/upload/stream under gunicorn, two gevent notify replicas, two
worker processes, RabbitMQ, moto's S3 server, SQLite on a shared file). Then faults only the cluster has:
a worker killed mid-job and a service that goes away and comes back."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import requests

from services.testing import (
    STRONG_PASSWORD,
    ClusterDeployment,
    EmbeddedDeployment,
    EventListener,
    assert_error,
    cluster_prerequisites,
    free_port,
    make_clip,
    register_account,
    tus_upload,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["embedded", "cluster"])
def deployment(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    running = EmbeddedDeployment(tmp) if request.param == "embedded" else ClusterDeployment(tmp)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("media") / "clip.mp4", 4, "640x360")


def test_register_upload_transcode_stream_and_live_events(deployment, clip):
    url = deployment.url
    account = register_account(url)
    stranger = register_account(url)
    listeners = [EventListener(socket_url, account["token"]) for socket_url in deployment.socket_urls]
    outsider = EventListener(url, stranger["token"])
    try:
        video_id = tus_upload(url, account["token"], clip, "Journey", patch_bytes=256 * 1024)
        for listener in listeners:
            events = listener.wait_for(video_id, "video.ready", timeout=180)
            names = [name for name, _ in events]
            statuses = [data["status"] for name, data in events if name == "video.status"]
            assert statuses[:3] == ["uploading", "uploaded", "processing"] and "video.progress" in names, events
            seqs = [data["seq"] for _, data in events]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
        assert outsider.events == []

        auth = {"Authorization": f"Bearer {account['token']}"}
        video = requests.get(f"{url}/api/videos/{video_id}", headers=auth, timeout=30).json()
        assert video["status"] == "ready" and video["progress"] == 100
        assert [r["name"] for r in video["renditions"]] == ["360p", "240p"]
        master = requests.get(url + video["playback"]["hls_url"], timeout=30)
        assert master.status_code == 200 and master.text.startswith("#EXTM3U")
        media_uri = next(line for line in master.text.splitlines() if line and not line.startswith("#"))
        base = url + video["playback"]["hls_url"].split("?")[0].rsplit("/", 1)[0] + "/"
        playlist = requests.get(base + media_uri, timeout=30)
        assert playlist.status_code == 200 and "#EXT-X-ENDLIST" in playlist.text
        segment_uri = next(line for line in playlist.text.splitlines() if line.endswith(".m4s") or ".m4s?" in line)
        media_base = (base + media_uri).split("?")[0].rsplit("/", 1)[0] + "/"
        segment = requests.get(media_base + segment_uri, timeout=30)
        assert segment.status_code == 200 and len(segment.content) > 1000
        ranged = requests.get(url + video["playback"]["original_url"], headers={"Range": "bytes=100-199"}, timeout=30)
        assert ranged.status_code == 206 and len(ranged.content) == 100
        assert ranged.headers["Content-Range"].startswith("bytes 100-199/")
        # another tenant sees nothing of it
        assert_error(requests.get(f"{url}/api/videos/{video_id}", timeout=30,
                                  headers={"Authorization": f"Bearer {stranger['token']}"}), 404)
    finally:
        for listener in [*listeners, outsider]:
            listener.close()


def test_errors_keep_the_contract_shape_through_every_hop(deployment):
    assert_error(requests.get(deployment.url + "/api/videos", timeout=30), 401)
    assert_error(requests.get(deployment.url + "/api/stream/nope/original", timeout=30), 401)
    assert_error(requests.post(deployment.url + "/api/auth/login", data=b"{", timeout=30,
                               headers={"Content-Type": "application/json"}), 400)
    ready = requests.get(deployment.url + "/readyz", timeout=30)
    assert ready.status_code == 200 and all(v == "ok" for v in ready.json()["checks"].values())


# --- faults only a cluster can have ---------------------------------------------------------------------------

def test_the_ingress_drops_client_claims_about_their_address(cluster):
    """nginx is the edge: X-Forwarded-For from a client never becomes its address (rate limits, logs)."""
    response = requests.get(f"{cluster.url}/api/auth/me", timeout=30,
                            headers={"X-Forwarded-For": "203.0.113.66", "X-Request-ID": "spoof-check-1"})
    assert response.status_code == 401 and response.headers["X-Request-ID"] != "spoof-check-1"  # nginx's own id
    request_id = response.headers["X-Request-ID"]
    deadline = time.monotonic() + 10
    lines: list[dict] = []
    while time.monotonic() < deadline and not lines:
        for log_name in ("gateway.log", "auth.log"):
            for line in (cluster.dir / "logs" / log_name).read_text().splitlines():
                if request_id in line and line.startswith("{"):
                    lines.append(json.loads(line))
        time.sleep(0.2)
    access = [entry for entry in lines if entry.get("path") == "/api/auth/me"]
    assert access and {entry["remote_addr"] for entry in access} == {"127.0.0.1"}, lines
    # the services log JSON lines with the request id too (they run under plain gunicorn)
    assert any(entry.get("service") == "auth-service" for entry in access), lines


def test_an_outage_at_the_ingress_is_a_json_503(cluster):
    hold = cluster.dir / "hold" / "gateway"
    hold.touch()
    try:
        os.killpg(cluster.service("gateway")["pid"], signal.SIGTERM)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            down = requests.get(f"{cluster.url}/api/videos", timeout=30)
            if down.status_code >= 500:
                break
            time.sleep(0.2)
        assert_error(down, 503, "service_unavailable")
    finally:
        hold.unlink()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if requests.get(f"{cluster.url}/healthz", timeout=30).status_code == 200:
            break
        time.sleep(0.5)
    assert requests.get(f"{cluster.url}/healthz", timeout=30).status_code == 200


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    running = ClusterDeployment(tmp_path_factory.mktemp("faults"))
    try:
        yield running
    finally:
        running.stop()


def _worker_running(cluster: ClusterDeployment, video_id: str) -> str | None:
    """Which worker's process holds this video's job (the record's `worker` ends with its pid)."""
    from services.adapters.sqlite_metadata import SqliteMetadataStore

    store = SqliteMetadataStore(cluster.dir / "data" / "reelhouse.db")
    try:
        record = store.videos.get(video_id) or {}
    finally:
        store.close()
    holder = str(record.get("worker") or "")
    for name in ("worker-1", "worker-2"):
        if holder.endswith(f":{cluster.service(name)['pid']}"):
            return name
    return None


def test_a_worker_killed_mid_job_does_not_lose_the_video(cluster, tmp_path):
    account = register_account(cluster.url)
    long_clip = make_clip(tmp_path / "long.mp4", 20, "1280x720", preset="ultrafast")
    listener = EventListener(cluster.url, account["token"])
    try:
        video_id = tus_upload(cluster.url, account["token"], long_clip, "Long")
        listener.wait_for(video_id, "video.progress", timeout=120)
        deadline, victim = time.monotonic() + 60, None
        while victim is None and time.monotonic() < deadline:
            victim = _worker_running(cluster, video_id)
            time.sleep(0.2)
        assert victim, "no worker took the job"
        pid = cluster.service(victim)["pid"]
        os.killpg(pid, signal.SIGKILL)  # the worker and its ffmpeg, as a node failure would
        events = listener.wait_for(video_id, "video.ready", timeout=300)
        assert not any(name == "video.failed" for name, _ in events)
        auth = {"Authorization": f"Bearer {account['token']}"}
        video = requests.get(f"{cluster.url}/api/videos/{video_id}", headers=auth, timeout=30).json()
        assert video["status"] == "ready" and {r["name"] for r in video["renditions"]} >= {"720p", "240p"}
        master = requests.get(cluster.url + video["playback"]["hls_url"], timeout=30)
        assert master.status_code == 200
        restarted = cluster.service(victim)
        assert restarted["pid"] != pid and restarted["restarts"] >= 1  # the supervisor brought it back
    finally:
        listener.close()


def test_a_stopped_service_answers_503_and_recovers_when_it_returns(cluster):
    account = register_account(cluster.url)
    auth = {"Authorization": f"Bearer {account['token']}"}
    probe = f"{cluster.url}/api/stream/nothing/original"
    assert requests.get(probe, headers=auth, timeout=30).status_code == 404
    hold = cluster.dir / "hold" / "stream"
    hold.touch()
    try:
        os.killpg(cluster.service("stream")["pid"], signal.SIGTERM)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            down = requests.get(probe, headers=auth, timeout=30)
            if down.status_code >= 500:
                break
            time.sleep(0.2)
        error = assert_error(down, 503, "service_unavailable")
        assert "stream service" in error["message"]
        not_ready = requests.get(cluster.url + "/readyz", timeout=30)
        assert not_ready.status_code == 503 and not_ready.json()["checks"]["stream"].startswith("unavailable")
        # the rest of the API is unaffected
        assert requests.get(f"{cluster.url}/api/videos", headers=auth, timeout=30).status_code == 200
    finally:
        hold.unlink()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if requests.get(probe, headers=auth, timeout=30).status_code == 404:
            break
        time.sleep(0.5)
    assert requests.get(probe, headers=auth, timeout=30).status_code == 404
    assert requests.get(cluster.url + "/readyz", timeout=30).status_code == 200


def test_a_restarted_cluster_finishes_what_the_last_one_left(tmp_path, monkeypatch):
    """`make cluster-down` mid-job, `make cluster` again (local store): the video still ends ready."""
    from reelhouse_gateway import cluster as topology

    cluster_prerequisites()
    monkeypatch.setenv("WORKER_GRACE_SECONDS", "0")  # hand the job back at once on the way down
    run_dir = tmp_path / "cluster"
    url = topology.start_detached(run_dir, free_port(), store="local")["url"]
    try:
        account = register_account(url)
        clip = make_clip(tmp_path / "long.mp4", 20, "1280x720")
        listener = EventListener(url, account["token"])
        try:
            video_id = tus_upload(url, account["token"], clip, "Interrupted")
            listener.wait_for(video_id, "video.progress", timeout=120)
        finally:
            listener.close()
    finally:
        assert topology.stop_detached(run_dir)
    url = topology.start_detached(run_dir, free_port(), store="local")["url"]
    try:
        login = requests.post(url + "/api/auth/login", timeout=30, json={
            "email": account["user"]["email"], "password": STRONG_PASSWORD})
        assert login.status_code == 200, login.text  # the records survived the restart
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        deadline = time.monotonic() + 240
        video = {}
        while time.monotonic() < deadline:
            video = requests.get(f"{url}/api/videos/{video_id}", headers=auth, timeout=30).json()
            if video["status"] in ("ready", "failed"):
                break
            time.sleep(0.5)
        assert video["status"] == "ready", video
        assert requests.get(url + video["playback"]["hls_url"], timeout=30).status_code == 200
    finally:
        assert topology.stop_detached(run_dir)
