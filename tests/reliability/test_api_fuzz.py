"""schemathesis against /api/openapi.json of a running `reelhouse up`: every operation, with an admin's token, never
answers 5xx and every response conforms to the spec (documented status, content type, headers, body schema).

Two runs over the same server: one where schemathesis generates every path parameter (ids that do not exist,
hostile strings), one where the ids name real objects (a ready video, a second video to delete, unfinished
uploads, a viewer, webhooks), so the handlers behind the 404s are fuzzed too. Sized by `soak()`: a few examples per
operation in CI, 100 under `make soak`."""

from __future__ import annotations

import base64
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
import schemathesis

from services.testing import ReelhouseProcess, make_clip, register_account, soak, tus_upload

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

MAX_EXAMPLES = soak(8, 100)
# Checks about the spec being honest; stateful checks (use_after_free, ...) and negative_data_rejection (extra
# query parameters are ignored, as most APIs do) are outside this scenario.
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance")

# tus bodies are raw bytes under their own media type: serialize them as octet streams.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")


@schemathesis.hook
def map_body(context, body):
    """Webhook URLs fuzzed into real-looking hosts go to `.invalid` (RFC 6761), so a registered hook never
    reaches a host on the internet."""
    if context.operation is not None and context.operation.path == "/api/webhooks" and isinstance(body, dict):
        url = body.get("url")
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            try:
                parts = urlsplit(url)
                body = {**body, "url": urlunsplit((parts.scheme, "hooks.invalid", parts.path, "", ""))}
            except ValueError:  # not parseable: left as the fuzzer made it, the API refuses it
                pass
    return body


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory):
    """A `reelhouse up` with two organisations, both made before any fuzzing (it exhausts the registration rate
    limit): one for the generated ids; one whose real objects of every kind the real ids name, out of reach of
    the first run (which learns ids from responses and deletes what it can)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    # Webhook deliveries polled rarely: nothing is sent anywhere while fuzzing (registration still validates).
    server = ReelhouseProcess(tmp / "data", WEBHOOK_POLL_SECONDS="60")
    try:
        generated = {"url": server.url, "token": register_account(server.url)["token"]}
        yield {"generated": generated, "real": _populate(server.url, tmp)}
    finally:
        server.stop()


def _populate(url: str, tmp) -> dict:
    admin = register_account(url)
    auth = {"Authorization": f"Bearer {admin['token']}"}
    clip = make_clip(tmp / "clip.mp4", 2)
    ready = tus_upload(url, admin["token"], clip, "Fuzzed")
    doomed = tus_upload(url, admin["token"], clip, "Deleted by the fuzzer")
    viewer = requests.post(url + "/api/auth/users", headers=auth, timeout=30, json={
        "email": "viewer@fuzz.test", "password": "correct horse battery", "role": "viewer"})
    assert viewer.status_code == 201, viewer.text
    video = _wait_ready(url, auth, ready)
    return {
        "url": url, "token": admin["token"], "video": ready, "doomed_video": doomed,
        "rendition": video["renditions"][0]["name"] if video.get("renditions") else "240p",
        "user": viewer.json()["id"], "upload": _open_upload(url, auth), "patched_upload": _open_upload(url, auth),
        "doomed_upload": _open_upload(url, auth),
        "webhook": _webhook(url, auth), "doomed_webhook": _webhook(url, auth),
    }


def _wait_ready(url: str, auth: dict, video_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        video = requests.get(f"{url}/api/videos/{video_id}", headers=auth, timeout=30).json()
        if video["status"] in ("ready", "failed"):
            assert video["status"] == "ready", video
            return video
        time.sleep(0.5)
    raise AssertionError(f"video {video_id} not ready within {timeout} s")


def _open_upload(url: str, auth: dict) -> str:
    """An upload far from complete: fuzzed PATCHes append to it but never finish it."""
    title = base64.b64encode(b"unfinished").decode()
    response = requests.post(url + "/api/uploads", timeout=30, headers={
        **auth, "Tus-Resumable": "1.0.0", "Upload-Length": str(10**9), "Upload-Metadata": f"title {title}"})
    assert response.status_code == 201, response.text
    return response.headers["Location"].rsplit("/", 1)[1]


def _webhook(url: str, auth: dict) -> str:
    response = requests.post(url + "/api/webhooks", headers=auth, timeout=30, json={
        "url": "http://10.255.255.1/hook", "events": ["video.ready"]})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _config(target: dict, operations: list[dict]) -> schemathesis.Config:
    checks = {"enabled": False, **{name: {"enabled": True} for name in CHECKS}}
    return schemathesis.Config.from_dict({
        "headers": {"Authorization": f"Bearer {target['token']}"},
        "request-timeout": 30,
        "generation": {"max-examples": MAX_EXAMPLES},
        "checks": checks,
        "phases": {"stateful": {"enabled": False}},
        "operations": operations,
    })


def _real_ids(target: dict) -> list[dict]:
    """Per-operation path parameters naming real objects; DELETEs get objects of their own to destroy."""
    def op(path, methods, **parameters):
        # one entry per operation, matched by its exact name: path and method filters matched loosely
        return [{"include-name": f"{method} {path}",
                 "parameters": {f"path.{name}": value for name, value in parameters.items()}}
                for method in ([methods] if isinstance(methods, str) else methods)]

    video, upload, hook = target["video"], target["upload"], target["webhook"]
    return [entry for entries in (
        op("/api/videos/{video_id}", ["GET", "PATCH"], video_id=video),
        op("/api/videos/{video_id}", "DELETE", video_id=target["doomed_video"]),
        op("/api/videos/{video_id}/share", "POST", video_id=video),
        *(op(path, "GET", video_id=video) for path in (
            "/api/stream/{video_id}/original", "/api/stream/{video_id}/hls/master.m3u8",
            "/api/stream/{video_id}/thumbnail.jpg", "/api/stream/{video_id}/poster.jpg",
            "/api/stream/{video_id}/storyboard.jpg", "/api/stream/{video_id}/storyboard.vtt")),
        op("/api/stream/{video_id}/hls/{rendition}/{filename}", "GET", video_id=video,
           rendition=target["rendition"], filename="index.m3u8"),
        op("/api/uploads/{upload_id}", ["HEAD", "OPTIONS"], upload_id=upload),
        # PATCH may carry X-HTTP-Method-Override: DELETE and terminate its upload: one of its own
        op("/api/uploads/{upload_id}", "PATCH", upload_id=target["patched_upload"]),
        op("/api/uploads/{upload_id}", "DELETE", upload_id=target["doomed_upload"]),
        op("/api/auth/users/{user_id}", ["GET", "PATCH", "DELETE"], user_id=target["user"]),
        op("/api/webhooks/{webhook_id}", "GET", webhook_id=hook),
        op("/api/webhooks/{webhook_id}/deliveries", "GET", webhook_id=hook),
        op("/api/webhooks/{webhook_id}", "DELETE", webhook_id=target["doomed_webhook"]),
    ) for entry in entries]


def run_schemathesis(target: dict, operations: list[dict]) -> tuple[list[str], dict]:
    """Every phase but stateful over every operation; returns the failures (title, message, curl) and counts.

    The engine the CLI runs, not the pytest plugin: its lazy (fixture) schemas rewrite `node._nodeid`, which
    pytest 9 no longer has."""
    from schemathesis.engine import Status, events, from_schema

    schema = schemathesis.openapi.from_url(target["url"] + "/api/openapi.json", config=_config(target, operations))
    failures, counts = [], {"scenarios": 0, "cases": 0, "operations": set(), "statuses": {},
                            "in_spec": sum(1 for _ in schema.get_all_operations())}
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.status != Status.SKIP:
            counts["scenarios"] += 1
            counts["cases"] += len(event.recorder.cases)
            counts["operations"].add(event.recorder.label)
            for interaction in event.recorder.interactions.values():
                if interaction.response is not None:
                    counts["statuses"].setdefault(event.recorder.label, set()).add(interaction.response.status_code)
            failures.extend(_describe(event.recorder))
        elif isinstance(event, events.NonFatalError):
            failures.append(f"{event.label}: error\n{event.info.format()}")
        elif isinstance(event, events.FatalError):
            failures.append(f"run stopped: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            counts["stop_reason"] = str(event.stop_reason)
    return failures, counts


def _describe(recorder) -> list[str]:
    described = []
    for checks in recorder.checks.values():
        for check in checks:
            if check.failure_info is not None:
                failure = check.failure_info.failure
                described.append(f"{recorder.label}: {failure.title}\n{failure.message}\n"
                                 f"{check.failure_info.code_sample}")
    return described


def _assert_conforms(failures: list[str], counts: dict) -> None:
    print(f"schemathesis: {counts['cases']} cases in {counts['scenarios']} scenarios over "
          f"{len(counts['operations'])} operations, stop: {counts.get('stop_reason')}")
    assert not failures, f"{len(failures)} failures:\n\n" + "\n\n".join(dict.fromkeys(failures))
    assert counts.get("stop_reason") == "completed"
    tested = {label for label in counts["operations"] if label.split(" ", 1)[0].isupper()}
    assert len(tested) >= counts["in_spec"] >= 38, sorted(counts["operations"])  # every operation of the spec ran


def test_every_operation_conforms_with_generated_ids(fuzz_target):
    _assert_conforms(*run_schemathesis(fuzz_target["generated"], []))


def test_every_operation_conforms_with_real_ids(fuzz_target):
    target = fuzz_target["real"]
    failures, counts = run_schemathesis(target, _real_ids(target))
    _assert_conforms(failures, counts)
    # The real ids reached the handlers behind the 404s: each of these answered a success at least once.
    for label in ("GET /api/videos/{video_id}", "GET /api/stream/{video_id}/hls/master.m3u8",
                  "GET /api/stream/{video_id}/hls/{rendition}/{filename}", "GET /api/auth/users/{user_id}",
                  "GET /api/webhooks/{webhook_id}", "HEAD /api/uploads/{upload_id}"):
        assert any(200 <= status < 300 for status in counts["statuses"].get(label, ())), (
            label, counts["statuses"].get(label))
