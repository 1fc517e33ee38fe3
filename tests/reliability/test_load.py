"""Load on the `make cluster` topology: concurrent HLS viewers and tus uploaders for a bounded time (loadgen).

Checked: not one failed request (every answer has the expected status and a whole body), every upload ends
`ready`, latency per endpoint kind recorded, and the memory of every process before and after; the soak run
samples memory every 30 s for 10 minutes and requires no upward trend over its second half.

Rate limits: all the load comes from one loopback address and one tenant, which the gateway's defaults (1,200
API requests a minute per address) would throttle into 429s within the first minute. A load test from one machine
sets generous limits explicitly, and so does this one (`LOAD_ENV`); the limits themselves are tested elsewhere.
Figures go to test-artifacts/reliability/ (JSON and a markdown table) and are printed.
"""

from __future__ import annotations

import http.server
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import requests

from services import loadgen
from services.testing import ClusterDeployment, make_clip, register_account, soak, tus_upload

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability"
LOAD_ENV = {
    "API_RATE_LIMIT_PER_ADDRESS": "1000000 per minute",
    "API_RATE_LIMIT_PER_TENANT": "1000000 per minute",
    "ACCESS_TOKEN_TTL": "7200",  # the soak outlasts the default 15 minutes of one access token
}
READY_WAIT = 240  # seconds after the load for the last uploads to be transcoded
# (viewers, uploaders, seconds, memory sample interval): CI's size, then the under `make soak`
LOAD_SIZE = soak((10, 2, 15, 5), (50, 5, 60, 10))
TREND_SIZE = soak((10, 2, 30, 3), (50, 5, 600, 30))
# the largest upward RSS trend (MiB per minute) allowed per process over the second half of the trend run: a
# short CI run can only catch a gross leak (a response body kept per request is hundreds of MiB a minute)
MAX_SLOPE = soak(100.0, 3.0)
MAX_GROWTH_MIB = 250  # RSS of one process after the load run vs before, warm-up of thread arenas included


@pytest.fixture(scope="module")
def cluster(request, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        for name, value in LOAD_ENV.items():
            patch.setenv(name, value)  # the supervisor hands its environment on to every service
        running = ClusterDeployment(tmp_path_factory.mktemp("load"))
    failed_before = request.session.testsfailed
    try:
        yield running
    finally:
        running.stop()
        if request.session.testsfailed > failed_before:  # what the services logged, for whoever reads the failure
            shutil.copytree(running.dir / "logs", ARTIFACTS / "load-cluster-logs", dirs_exist_ok=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A 6 s 640×360 seed (two rungs, three segments each) and three small upload clips of distinct bytes."""
    folder = tmp_path_factory.mktemp("load-media")
    seed = make_clip(folder / "seed.mp4", 6, "640x360")
    clips = [make_clip(folder / f"clip{seconds}.mp4", seconds, "426x240") for seconds in (2, 3, 4)]
    return seed, clips


@pytest.fixture(scope="module")
def account(cluster, media):
    """A tenant with one ready video, the viewers' first library."""
    account = register_account(cluster.url)
    video_id = tus_upload(cluster.url, account["token"], media[0], "Seed")
    deadline, status = time.monotonic() + READY_WAIT, None
    while time.monotonic() < deadline and status not in ("ready", "failed"):
        time.sleep(0.5)
        status = requests.get(f"{cluster.url}/api/videos/{video_id}", timeout=30,
                              headers={"Authorization": f"Bearer {account['token']}"}).json()["status"]
    assert status == "ready", status
    return {**account, "seed": video_id}


def run_load(cluster: ClusterDeployment, account: dict, clips: list[Path], viewers: int, uploaders: int,
             seconds: float, sample_every: float) -> dict:
    """Viewers and uploaders for `seconds`, then the last uploads followed to ready; memory sampled throughout."""
    from reelhouse_gateway import cluster as topology

    recorder, library, stop, results = loadgen.Recorder(), loadgen.Library([account["seed"]]), threading.Event(), []
    memory = loadgen.ProcessMemory(lambda: topology.state(cluster.dir))
    restarts = {name: service["restarts"] for name, service in topology.state(cluster.dir)["services"].items()}
    before = memory.sample()
    sampling = threading.Event()
    memory.every(sample_every, sampling)
    started = time.monotonic()
    follow_until = started + seconds + READY_WAIT
    threads = [threading.Thread(target=loadgen.viewer, name=f"viewer-{i}", daemon=True,
                                args=(cluster.url, account["token"], library, recorder, stop, i))
               for i in range(viewers)]
    threads += [threading.Thread(target=loadgen.uploader, name=f"uploader-{i}", daemon=True,
                                 args=(cluster.url, account["token"], clips, library, recorder, stop, results,
                                       follow_until, i))
                for i in range(uploaders)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    load_seconds = time.monotonic() - started
    for thread in threads:  # a viewer ends within one request; an uploader follows its last video to ready
        thread.join(max(1.0, follow_until + loadgen.REQUEST_TIMEOUT - time.monotonic()))
    drained = time.monotonic() - started
    sampling.set()
    after = memory.sample()
    return {"size": {"viewers": viewers, "uploaders": uploaders, "seconds": seconds},
            "load_seconds": round(load_seconds, 1), "drained_after_seconds": round(drained, 1),
            "stuck_threads": [t.name for t in threads if t.is_alive()],
            # a process that crashed and was restarted would hide a leak (and fail requests): there must be none
            "restarted": sorted(name for name, service in topology.state(cluster.dir)["services"].items()
                                if service["restarts"] != restarts.get(name)),
            "summary": recorder.summary(load_seconds), "uploads": uploads_report(results),
            "memory": {"before": before, "after": after, "series": memory.series}, "results": results}


def uploads_report(results: list[loadgen.UploadResult]) -> dict:
    ready = [r.ready_seconds for r in results if r.status == "ready"]
    return {"count": len(results), "ready": len(ready),
            "not_ready": {r.video_id: r.status for r in results if r.status != "ready"},
            "upload_p50_s": round(loadgen.percentile([r.uploaded_seconds for r in results], 0.5), 2),
            "to_ready_p50_s": round(loadgen.percentile(ready, 0.5), 2),
            "to_ready_p99_s": round(loadgen.percentile(ready, 0.99), 2)}


def table(report: dict) -> str:
    """The report as markdown: requests per endpoint kind, then memory per process."""
    summary, size = report["summary"], report["size"]
    lines = [f"{size['viewers']} viewers, {size['uploaders']} uploaders, {report['load_seconds']} s: "
             f"{summary['requests']} requests ({summary['per_second']}/s, {summary['mib']} MiB), "
             f"{summary['failed']} failed; {report['uploads']['count']} uploads, {report['uploads']['ready']} ready "
             f"(upload p50 {report['uploads']['upload_p50_s']} s, to ready p50 {report['uploads']['to_ready_p50_s']}"
             f" s, p99 {report['uploads']['to_ready_p99_s']} s)", "",
             "| endpoint kind | requests | failed | per s | p50 ms | p99 ms | max ms | MiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for kind, k in summary["kinds"].items():
        lines.append(f"| {kind} | {k['requests']} | {k['failed']} | {k['per_second']} | {k['p50_ms']} | "
                     f"{k['p99_ms']} | {k['max_ms']} | {k['mib']} |")
    lines += ["", *memory_table(report)]
    return "\n".join(lines) + "\n"


def memory_table(report: dict) -> list[str]:
    """Per process: RSS before and after, its trend (soak), and the CPU seconds it used during the run."""
    first, last = report["memory"]["before"], report["memory"]["after"]
    before, after, slopes = first["rss_mib"], last["rss_mib"], report.get("slopes", {})
    trend = " trend MiB/min |" if slopes else ""
    lines = [f"| process (tree RSS, ffmpeg apart) | before MiB | after MiB | growth MiB |{trend} CPU s |",
             "|---|---:|---:|---:|" + ("---:|" if slopes else "") + "---:|"]
    for name in sorted(last["cpu_s"]):
        cpu = round(last["cpu_s"][name] - first["cpu_s"].get(name, 0.0), 1)
        memory = (f"{before.get(name, '-')} | {after[name]} | {round(after[name] - before.get(name, 0.0), 1)}"
                  if name in after else "- | - | -")
        lines.append(f"| {name} | {memory} |" + (f" {slopes.get(name, '-')} |" if slopes else "") + f" {cpu} |")
    lines.append(f"| total | {round(sum(before.values()), 1)} | {round(sum(after.values()), 1)} | "
                 f"{round(sum(after.values()) - sum(before.values()), 1)} |" + (" |" if slopes else "") + " |")
    peak = max(entry["ffmpeg_mib"] for entry in report["memory"]["series"])
    return [*lines, "", f"ffmpeg (job processes of the workers, counted apart): at most {peak} MiB in a sample"]


def publish(name: str, report: dict) -> None:
    """test-artifacts/reliability/<name>.json and .md, and the table on stdout."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    body = {key: value for key, value in report.items() if key != "results"}
    (ARTIFACTS / f"{name}.json").write_text(json.dumps(body, indent=2))
    (ARTIFACTS / f"{name}.md").write_text(table(report))
    print(f"\n{name}:\n{table(report)}")


def assert_clean(report: dict, uploaders: int) -> None:
    """No failed request, every endpoint kind exercised, every upload ready, no thread left hanging."""
    summary = report["summary"]
    assert summary["failed"] == 0, json.dumps(summary["failures"][:10], indent=1)
    assert all(kind["requests"] for kind in summary["kinds"].values()), summary["kinds"]
    assert not report["stuck_threads"], report["stuck_threads"]
    assert not report["restarted"], f"restarted during the load: {report['restarted']}"
    uploads = report["uploads"]
    assert uploads["count"] >= uploaders and uploads["ready"] == uploads["count"], uploads


def assert_all_ready(cluster: ClusterDeployment, account: dict, results: list[loadgen.UploadResult]) -> None:
    """The library agrees: every video of the tenant is ready, the seed and each upload of the run."""
    auth = {"Authorization": f"Bearer {account['token']}"}
    listing = requests.get(f"{cluster.url}/api/videos", params={"per_page": 100, "page": 1}, headers=auth,
                           timeout=30).json()
    statuses = {v["id"]: v["status"] for v in listing["items"]}
    for page in range(2, -(-listing["total"] // 100) + 1):
        more = requests.get(f"{cluster.url}/api/videos", params={"per_page": 100, "page": page}, headers=auth,
                            timeout=30).json()
        statuses.update({v["id"]: v["status"] for v in more["items"]})
    assert {r.video_id for r in results} <= set(statuses), "an upload is missing from the library"
    assert set(statuses.values()) == {"ready"}, {k: v for k, v in statuses.items() if v != "ready"}


def test_viewers_and_uploads_under_load_fail_no_request(cluster, account, media):
    viewers, uploaders, seconds, sample_every = LOAD_SIZE
    report = run_load(cluster, account, media[1], viewers, uploaders, seconds, sample_every)
    publish("load", report)
    assert_clean(report, uploaders)
    assert_all_ready(cluster, account, report["results"])
    before, after = report["memory"]["before"]["rss_mib"], report["memory"]["after"]["rss_mib"]
    grown = {name: round(after[name] - before[name], 1) for name in after
             if name in before and name != "s3 (moto)" and after[name] - before[name] > MAX_GROWTH_MIB}
    assert not grown, grown  # moto keeps every object in memory by design: its growth is storage, not a leak


def test_memory_has_no_upward_trend_under_sustained_load(cluster, account, media):
    viewers, uploaders, seconds, sample_every = TREND_SIZE
    report = run_load(cluster, account, media[1], viewers, uploaders, seconds, sample_every)
    # warm-up excluded: only the second half of the load counts (samples while the last uploads finish, not)
    series, load_end = report["memory"]["series"], report["load_seconds"]
    report["slopes"] = loadgen.trends(series, since=load_end / 2, until=load_end)
    publish("soak-memory", report)
    assert_clean(report, uploaders)
    assert len([e for e in series if load_end / 2 <= e["t"] <= load_end]) >= 4, "too few samples"
    leaking = {name: slope for name, slope in report["slopes"].items() if name != "s3 (moto)" and slope > MAX_SLOPE}
    assert not leaking, (leaking, MAX_SLOPE)


# --- the checks themselves can fail: a server that answers wrongly, a series that leaks ------------------------

class _Wrong(http.server.BaseHTTPRequestHandler):
    """429 like a rate limit, a body cut short, a range that is not the one asked for, a playlist without an end."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        answers = {"/throttled": (429, {}, b'{"error": {}}'), "/short": (200, {"Content-Length": "100"}, b"x" * 10),
                   "/range": (206, {"Content-Range": "bytes 0-9/100"}, b"x" * 10),
                   "/live.m3u8": (200, {}, b"#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\nseg1.m4s\n")}
        status, headers, body = answers.get(self.path, (404, {}, b""))
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_the_load_generator_counts_wrong_answers_as_failures():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Wrong)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        recorder = loadgen.Recorder()
        client = loadgen.Client(f"http://127.0.0.1:{server.server_port}", recorder)
        assert client.call("api", "GET", "/throttled", 200) is None
        assert client.call("segment", "GET", "/short", 200) is None
        assert client.call("original_range", "GET", "/range", 206, check=loadgen._exact_range(50, 10)) is None
        live = client.call("media_playlist", "GET", "/live.m3u8", 200)
        assert loadgen.media_uris(live.text) == ["init.mp4", "seg1.m4s"]
        summary = recorder.summary(1.0)
        assert summary["failed"] == 3 and summary["requests"] == 4, summary
        assert {f["kind"] for f in summary["failures"]} == {"api", "segment", "original_range"}
        client.close()
    finally:
        server.shutdown()
        server.server_close()


def test_a_leak_shows_as_a_trend_and_a_restart_does_not():
    series = [{"t": t, "rss_mib": {"leaky": 100 + t / 10, "steady": 100 + (t % 20) / 10, "restarted": 300.0},
               "pids": {"leaky": 1, "steady": 2, "restarted": 3 if t < 300 else 4}} for t in range(0, 600, 30)]
    for entry in series[10:]:
        entry["rss_mib"]["restarted"] = 90.0  # a new process: smaller, and flat
    slopes = loadgen.trends(series, since=0)
    assert slopes["leaky"] == pytest.approx(6.0) and abs(slopes["steady"]) < 0.5 and slopes["restarted"] == 0
    assert loadgen.percentile([5, 1, 3, 2, 4], 0.5) == 3 and loadgen.percentile(list(range(1, 101)), 0.99) == 99


class _KeepAlive(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; answers with the client's port, so a test sees whether a connection was reused."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server's naming
        body = str(self.client_address[1]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_the_gateway_does_not_reuse_a_connection_the_service_may_be_closing(monkeypatch):
    """The load run's rare 502s: gunicorn closes idle keep-alive connections after 2 s, and a request sent on one
    as it closes is lost. The gateway's pool keeps using a busy connection but dials again after a pause."""
    from reelhouse_gateway import proxy

    monkeypatch.setattr(proxy, "IDLE_REUSE_LIMIT", 0.3)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KeepAlive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        upstream = proxy.Upstream("upload", f"http://127.0.0.1:{server.server_port}", connect_timeout=5,
                                  read_timeout=5, maxsize=1)

        def port() -> bytes:
            return upstream.pool.urlopen("GET", "/", retries=False).data

        first = port()
        assert port() == first  # busy: the same connection
        time.sleep(0.5)
        assert port() != first  # idle past the limit: a new one
        upstream.pool.close()
    finally:
        server.shutdown()
        server.server_close()
