"""/api/stream end to end: a real upload, transcoded by the real worker, watched with tokens only — by ffmpeg
over HTTP, logged out through share links — and refused across videos, tenants and visibility."""

from __future__ import annotations

import re
import subprocess
import threading
import time

import imageio_ffmpeg
import pytest
from werkzeug.serving import make_server

from reelhouse_gateway import create_app
from services import keys
from services.adapters.memory_jobs import MemoryJobQueue
from services.bootstrap import bootstrap
from services.testing import STRONG_PASSWORD, Api, assert_error
from transcode_worker.worker import Worker

TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.infra)])
def deps(request, make_config):
    given = {"jobs": MemoryJobQueue()}
    if request.param == "s3":
        given["objects"] = request.getfixturevalue("s3_store")
    deps = bootstrap(make_config(), **given)
    yield deps
    deps.close()


@pytest.fixture
def app(deps):
    app = create_app(deps=deps)
    worker = Worker(deps, 1).start()
    yield app
    worker.stop(grace=0)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=480x270:rate=25", "-f", "lavfi", "-i", "sine", "-t", "4", "-c:v", "libx264",
                    "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
                   check=True, timeout=120)
    return path


def upload(api, token, data: bytes, visibility="tenant") -> str:
    import base64

    meta = f"visibility {base64.b64encode(visibility.encode()).decode()}"
    location = api.call("POST", "/api/uploads", token, headers={
        **TUS, "Upload-Length": str(len(data)), "Upload-Metadata": meta}).headers["Location"]
    assert api.call("PATCH", location, token, data=data, headers={
        **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}).status_code == 204
    return location.rsplit("/", 1)[1]


def until_ready(api, token, video_id, timeout=90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        video = api.call("GET", f"/api/videos/{video_id}", token).get_json()
        if video["status"] in ("ready", "failed"):
            assert video["status"] == "ready", video
            return video
        time.sleep(0.2)
    raise AssertionError("not ready in time")


@pytest.fixture
def watched(api, clip):
    """A ready video and its admin's token."""
    token = api.register()["access_token"]
    video_id = upload(api, token, clip.read_bytes())
    return until_ready(api, token, video_id), token


def test_ffmpeg_plays_every_rung_over_http_with_the_token_alone(app, watched):
    video, _ = watched
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}{video['playback']['hls_url']}"
        assert "token=" in url
        for index, rendition in enumerate(video["renditions"]):
            result = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", url, "-map", f"0:v:{index}",
                                     "-f", "null", "-"], capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, (rendition, result.stderr[-2000:])
        original = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i",
                                   f"http://127.0.0.1:{server.server_port}{video['playback']['original_url']}",
                                   "-f", "null", "-"], capture_output=True, text=True, timeout=60)
        assert original.returncode == 0, original.stderr[-2000:]
    finally:
        server.shutdown()


def test_every_uri_in_playlists_carries_the_token(api, watched):
    video, _ = watched
    master_url = video["playback"]["hls_url"]
    token = master_url.split("token=")[1]
    master = api.client.get(master_url)
    assert master.status_code == 200 and master.mimetype == "application/vnd.apple.mpegurl"
    assert master.headers["Cache-Control"] == "private, max-age=60"
    variants = [line for line in master.get_data(as_text=True).splitlines() if line and not line.startswith("#")]
    assert variants and all(line.endswith(f"?token={token}") for line in variants)
    base = master_url.rsplit("/", 1)[0]
    media = api.client.get(f"{base}/{variants[0]}")
    text = media.get_data(as_text=True)
    assert "#EXT-X-ENDLIST" in text and "#EXT-X-PLAYLIST-TYPE:VOD" in text
    uris = [line for line in text.splitlines() if line and not line.startswith("#")]
    uris += re.findall(r'URI="([^"]+)"', text)
    assert uris and all(f"token={token}" in uri for uri in uris)
    segment = api.client.get(f"{base}/{variants[0].split('/')[0]}/{uris[0]}")
    assert segment.status_code == 200 and segment.headers["Cache-Control"] == "private, max-age=31536000, immutable"
    vtt = api.client.get(video["storyboard_url"]).get_data(as_text=True)
    images = [line for line in vtt.splitlines() if "#xywh=" in line]
    assert images and all(re.fullmatch(r"storyboard\.jpg\?token=[^#]+#xywh=\d+,\d+,\d+,\d+", line) for line in images)
    for url in (video["thumbnail_url"], video["poster_url"]):
        image = api.client.get(url)
        assert image.status_code == 200 and image.mimetype == "image/jpeg" and image.data[:2] == b"\xff\xd8"


def test_tokens_are_scoped_signed_and_short_lived(api, watched, deps, clip):
    video, admin = watched
    other_id = upload(api, admin, clip.read_bytes())
    token = video["playback"]["hls_url"].split("token=")[1]
    assert_error(api.client.get(f"/api/stream/{other_id}/hls/master.m3u8?token={token}"), 403, "token_scope")
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert_error(api.client.get(f"/api/stream/{video['id']}/hls/master.m3u8?token={tampered}"), 401, "invalid_token")
    expired, _ = deps.playback.issue(deps.metadata.videos.get(video["id"]), now=time.time() - 7200)
    assert_error(api.client.get(f"/api/stream/{video['id']}/original?token={expired}"), 401, "token_expired")
    assert_error(api.client.get(f"/api/stream/{video['id']}/original"), 401, "missing_token")
    # Bearer works too, and another tenant's bearer sees nothing.
    assert api.call("GET", f"/api/stream/{video['id']}/original", admin).status_code == 200
    rival = api.register(tenant_name="Rival", email="boss@rival.test")["access_token"]
    assert_error(api.call("GET", f"/api/stream/{video['id']}/original", rival), 404, "not_found")
    assert_error(api.call("GET", f"/api/stream/{video['id']}/hls/master.m3u8", rival), 404)


def test_private_videos_are_invisible_to_other_viewers(api, watched):
    video, admin = watched
    api.call("PATCH", f"/api/videos/{video['id']}", admin, json={"visibility": "private"})
    api.call("POST", "/api/auth/users", admin, json={"email": "v@acme.test", "password": STRONG_PASSWORD,
                                                     "role": "viewer"})
    viewer = api.login("v@acme.test").get_json()["access_token"]
    for path in ("original", "hls/master.m3u8", "thumbnail.jpg", "storyboard.vtt"):
        assert_error(api.call("GET", f"/api/stream/{video['id']}/{path}", viewer), 404)
    assert_error(api.call("GET", f"/api/videos/{video['id']}", viewer), 404)


def test_unlisted_share_links_work_logged_out_until_rotated(api, watched):
    video, admin = watched
    shared = api.call("PATCH", f"/api/videos/{video['id']}", admin, json={"visibility": "unlisted"}).get_json()
    share = shared["share_url"].split("share=")[1]
    anonymous = Api(api.client.application.test_client())
    seen = anonymous.client.get(f"/api/videos/{video['id']}?share={share}")
    assert seen.status_code == 200 and seen.get_json()["title"] == video["title"]
    hls = seen.get_json()["playback"]["hls_url"]
    assert anonymous.client.get(hls).status_code == 200
    assert anonymous.client.get(f"/api/stream/{video['id']}/original?token={share}").status_code == 200
    rotated = api.call("POST", f"/api/videos/{video['id']}/share", admin).get_json()
    assert rotated["share_url"] != shared["share_url"]
    assert_error(anonymous.client.get(f"/api/videos/{video['id']}?share={share}"), 401, "share_revoked")
    assert_error(anonymous.client.get(f"/api/stream/{video['id']}/original?token={share}"), 401, "share_revoked")
    new_share = rotated["share_url"].split("share=")[1]
    assert anonymous.client.get(f"/api/videos/{video['id']}?share={new_share}").status_code == 200
    api.call("PATCH", f"/api/videos/{video['id']}", admin, json={"visibility": "tenant"})
    assert_error(anonymous.client.get(f"/api/videos/{video['id']}?share={new_share}"), 401, "share_revoked")
    assert_error(api.call("POST", f"/api/videos/{video['id']}/share", admin), 409, "not_unlisted")


def test_the_original_plays_before_the_ladder_and_never_when_not_browser_playable(api, deps, clip, tmp_path):
    admin = api.register()["access_token"]
    tenant = api.call("GET", "/api/auth/me", admin).get_json()["tenant"]["id"]
    playable = deps.metadata.videos.add({
        "tenant_id": tenant, "owner_id": "u", "title": "t", "status": "uploaded", "visibility": "tenant",
        "source": {"video_codec": "h264", "audio_codec": "aac", "container": "mov,mp4,m4a,3gp,3g2,mj2",
                   "pixel_format": "yuv420p"}})
    deps.objects.put(keys.original_key(tenant, playable["id"]), clip.read_bytes())
    view = api.call("GET", f"/api/videos/{playable['id']}", admin).get_json()
    assert view["playback"]["original_url"] and view["playback"]["hls_url"] is None
    ranged = api.client.get(view["playback"]["original_url"], headers={"Range": "bytes=0-99"})
    assert ranged.status_code == 206 and len(ranged.data) == 100 and ranged.mimetype == "video/mp4"
    vp9 = deps.metadata.videos.add({
        "tenant_id": tenant, "owner_id": "u", "title": "t", "status": "uploaded", "visibility": "tenant",
        "source": {"video_codec": "vp9", "audio_codec": "opus", "container": "matroska,webm"}})
    view = api.call("GET", f"/api/videos/{vp9['id']}", admin).get_json()
    assert view["playback"]["original_url"] is None
    assert_error(api.call("GET", f"/api/stream/{vp9['id']}/original", admin), 404, "not_playable")


def test_an_original_url_keeps_serving_the_file_it_was_issued_for(api, deps, clip):
    """A player mid-way through range requests must not get bytes of the faststart remux when it appears."""
    admin = api.register()["access_token"]
    tenant = api.call("GET", "/api/auth/me", admin).get_json()["tenant"]["id"]
    video = deps.metadata.videos.add({
        "tenant_id": tenant, "owner_id": "u", "title": "t", "status": "processing", "visibility": "tenant",
        "source": {"video_codec": "h264", "audio_codec": "aac", "container": "mov,mp4,m4a,3gp,3g2,mj2",
                   "pixel_format": "yuv420p"}})
    upload_bytes, remux_bytes = clip.read_bytes(), b"R" * 5000
    deps.objects.put(keys.original_key(tenant, video["id"]), upload_bytes)
    early = api.call("GET", f"/api/videos/{video['id']}", admin).get_json()["playback"]["original_url"]
    assert early.endswith("&src=upload")
    # the worker's faststart copy lands
    deps.objects.put(keys.playable_original_key(tenant, video["id"]), remux_bytes)
    deps.metadata.videos.update(video["id"], {"original_playable": True})
    late = api.call("GET", f"/api/videos/{video['id']}", admin).get_json()["playback"]["original_url"]
    assert late.endswith("&src=faststart")
    assert api.client.get(early, headers={"Range": "bytes=0-99"}).data == upload_bytes[:100]
    assert api.client.get(late, headers={"Range": "bytes=0-99"}).data == remux_bytes[:100]
    assert api.client.get(early.replace("&src=upload", "")).data == remux_bytes  # no src: the current file
    assert_error(api.client.get(early.replace("src=upload", "src=../../etc")), 400, "invalid_source")


def test_bad_paths_are_404(api, watched):
    video, admin = watched
    for path in ("hls/../../original", "hls/180p/../../x", "hls/abc/index.m3u8", "hls/270p/secret.txt",
                 "hls/270p/seg_1.m4s", "nothing.jpg"):
        assert api.call("GET", f"/api/stream/{video['id']}/{path}", admin).status_code == 404, path


def test_deleting_a_video_mid_transcode_stops_it_and_leaves_nothing(api, deps, tmp_path):
    long_clip = tmp_path / "long.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=1280x720:rate=30", "-t", "30", "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", str(long_clip)], check=True, timeout=120)
    admin = api.register()["access_token"]
    tenant = api.call("GET", "/api/auth/me", admin).get_json()["tenant"]["id"]
    video_id = upload(api, admin, long_clip.read_bytes())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        video = api.call("GET", f"/api/videos/{video_id}", admin).get_json()
        if video["status"] == "processing" and video["progress"] > 5:
            break
        time.sleep(0.1)
    assert video["status"] == "processing", video
    assert api.call("DELETE", f"/api/videos/{video_id}", admin).status_code == 204
    deadline = time.monotonic() + 20
    leftovers = ["?"]
    while leftovers and time.monotonic() < deadline:  # the worker notices within seconds and cleans up
        time.sleep(0.5)
        leftovers = [info.key for info in deps.objects.list(keys.video_prefix(tenant, video_id))]
    assert leftovers == []
    assert deps.jobs.pending() == 0


def test_tokens_never_outlive_access(api, watched):
    video, admin = watched
    api.call("POST", "/api/auth/users", admin, json={"email": "v@acme.test", "password": STRONG_PASSWORD,
                                                     "role": "viewer"})
    viewer = api.login("v@acme.test").get_json()["access_token"]
    viewer_url = api.call("GET", f"/api/videos/{video['id']}", viewer).get_json()["playback"]["original_url"]
    assert api.client.get(viewer_url).status_code == 200
    api.call("PATCH", f"/api/videos/{video['id']}", admin, json={"visibility": "private"})
    assert_error(api.client.get(viewer_url), 404, "not_found")  # the viewer's token no longer opens it
    # Play tokens handed out through a share link die with the link.
    shared = api.call("PATCH", f"/api/videos/{video['id']}", admin, json={"visibility": "unlisted"}).get_json()
    share = shared["share_url"].split("share=")[1]
    anonymous = api.client.application.test_client()
    play_url = anonymous.get(f"/api/videos/{video['id']}?share={share}").get_json()["playback"]["original_url"]
    assert anonymous.get(play_url).status_code == 200
    api.call("POST", f"/api/videos/{video['id']}/share", admin)
    assert_error(anonymous.get(play_url), 401, "share_revoked")


def test_what_bearer_callers_get_is_never_cached(api, watched):
    video, admin = watched
    master = api.call("GET", f"/api/stream/{video['id']}/hls/master.m3u8", admin)
    assert master.status_code == 200 and master.headers["Cache-Control"] == "private, no-store"
    vtt = api.client.get(video["storyboard_url"])
    assert vtt.status_code == 200 and "immutable" not in vtt.headers["Cache-Control"]
