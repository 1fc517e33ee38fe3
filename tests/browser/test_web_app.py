"""The web app end to end in Chromium against a real `reelhouse up`: register, upload through the UI with live
progress in the library, HLS playback, resume after a reload, the original before HLS is ready, tenant isolation
and the admin page. The tests run in file order and share organisation A (`alice`)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.infra]

MIB = 1024 * 1024

# Records every state a library card shows (status, progress bar value), so the test can tell that the bar
# moved on this page, and marks the window: a reload would lose the mark.
RECORD_CARDS = """() => {
  window.__noReload = 'still the same page';
  window.__cards = [];
  const snapshot = () => {
    for (const card of document.querySelectorAll('[data-testid=video-card]')) {
      const bar = card.querySelector('[role=progressbar]');
      const entry = {id: card.dataset.videoId, status: card.dataset.status,
                     progress: bar ? Number(bar.getAttribute('aria-valuenow') ?? -1) : null};
      const last = window.__cards.filter((e) => e.id === entry.id).pop();
      if (!last || last.status !== entry.status || last.progress !== entry.progress) window.__cards.push(entry);
    }
  };
  new MutationObserver(snapshot).observe(document.body, {subtree: true, childList: true, attributes: true,
    attributeFilter: ['data-status', 'aria-valuenow']});
  snapshot();
}"""

MEDIA_STATE = """() => {
  const v = document.querySelector('[data-testid=player] video');
  return v && {time: v.currentTime, error: v.error ? v.error.code : null, src: v.currentSrc, paused: v.paused,
               ended: v.ended};
}"""


def _throttle_uploads(page, bytes_per_second: int):
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": bytes_per_second})
    return cdp


def _unthrottle(cdp):
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": -1})


def _media(page) -> dict:
    state = page.evaluate(MEDIA_STATE)
    assert state is not None, "no <video> element in the player"
    return state


def _assert_playing(page, beyond: float = 1.0):
    """currentTime gets past `beyond` and keeps advancing, with no media error."""
    try:
        page.wait_for_function(f"() => {{ const v = document.querySelector('[data-testid=player] video');"
                               f" return v && !v.error && v.currentTime > {beyond}; }}", timeout=20_000)
    except Exception as error:
        raise AssertionError(f"the video did not play past {beyond} s: {_media(page)}") from error
    first = _media(page)
    assert first["error"] is None, first
    page.wait_for_timeout(600)
    second = _media(page)
    assert second["error"] is None, second
    assert second["time"] > first["time"] or second["ended"], (first, second)
    return second


def test_upload_with_live_progress_to_ready_then_hls_playback(alice, clip, shoot):
    page = alice.page
    expect(page.get_by_test_id("empty-state")).to_contain_text("Your library is empty")
    shoot(page, "library-empty")
    page.evaluate(RECORD_CARDS)

    # Upload through the UI, slowed down so that the library shows the upload itself moving as well.
    page.get_by_test_id("empty-upload").click()
    expect(page).to_have_url(re.compile(r"/upload$"))
    cdp = _throttle_uploads(page, 160 * 1024)
    page.get_by_test_id("file-input").set_input_files(str(clip))
    item = page.get_by_test_id("upload-item")
    expect(item).to_have_attribute("data-state", "uploading")
    expect(item).not_to_have_attribute("data-video-id", "")
    expect(item.get_by_test_id("upload-speed")).to_contain_text("/s")
    shoot(page, "upload")
    video_id = item.get_attribute("data-video-id")
    alice.video_ids.append(video_id)

    # The library (reached without a reload) follows it: uploading → uploaded → processing → ready.
    page.get_by_test_id("nav-library").click()
    card = page.locator(f'[data-testid=video-card][data-video-id="{video_id}"]')
    expect(card).to_be_visible()
    expect(card).to_have_attribute("data-status", "ready", timeout=60_000)
    _unthrottle(cdp)
    assert page.evaluate("window.__noReload") == "still the same page"
    history = [entry for entry in page.evaluate("window.__cards") if entry["id"] == video_id]
    statuses = [entry["status"] for entry in history]
    assert statuses[0] == "uploading" and statuses[-1] == "ready", history
    assert "uploaded" in statuses or "processing" in statuses, history
    uploading = [entry["progress"] for entry in history if entry["status"] == "uploading" and entry["progress"]]
    assert len(set(uploading)) >= 2 and uploading == sorted(uploading), history
    expect(card.get_by_test_id("status-badge")).to_have_text("Ready")
    expect(card.get_by_test_id("duration")).to_contain_text("00:04")
    expect(card.locator("[role=progressbar]")).to_have_count(0)
    expect(card.locator("img")).to_have_js_property("complete", True)
    page.wait_for_function("() => document.querySelector('[data-testid=video-card] img').naturalWidth > 0")
    shoot(page, "library")

    # Watch it: hls.js over Media Source Extensions, the position advances, no media error.
    stream_requests: list[str] = []
    page.on("request", lambda request: stream_requests.append(request.url) if "/api/stream/" in request.url else None)
    card.get_by_test_id("video-link").click()
    expect(page).to_have_url(re.compile(rf"/watch\?v={video_id}$"))
    player = page.get_by_test_id("player")
    expect(player).to_have_attribute("data-playback", "hls")
    expect(page.get_by_test_id("watch-title")).to_have_text("clip")
    page.get_by_test_id("play-toggle").click()
    state = _assert_playing(page)
    assert state["src"].startswith("blob:"), state  # Media Source Extensions: hls.js, not a file URL
    assert any("/hls/master.m3u8" in url for url in stream_requests), stream_requests
    assert any(re.search(r"/hls/\d+p/seg_\d+\.m4s", url) for url in stream_requests), stream_requests
    assert not any(url.split("?")[0].endswith("/original") for url in stream_requests), stream_requests
    expect(player).to_have_attribute("data-media-error", "false")

    # Quality: Auto plus one entry per rendition; choosing one is honoured.
    quality = page.get_by_test_id("quality")
    labels = quality.locator("option").all_inner_texts()
    assert labels[0].startswith("Auto") and "360p" in labels and "240p" in labels, labels
    quality.select_option(label="240p")
    page.evaluate("() => { const v = document.querySelector('[data-testid=player] video'); v.currentTime = 0;"
                  " v.play(); }")
    expect(player).to_have_attribute("data-level", "240p", timeout=15_000)
    _assert_playing(page, beyond=0.5)

    # Storyboard thumbnails when hovering the seek bar.
    seek = page.get_by_test_id("seek").bounding_box()
    page.mouse.move(seek["x"] + seek["width"] * 0.7, seek["y"] + seek["height"] / 2)
    preview = page.get_by_test_id("storyboard-preview")
    expect(preview).to_be_visible()
    assert "storyboard.jpg" in preview.locator(".seek__preview-image").evaluate("e => e.style.backgroundImage")
    page.wait_for_timeout(300)
    shoot(page, "watch")
    page.mouse.move(0, 0)

    # Editors change the title; the library shows it.
    page.get_by_test_id("edit-title").fill("Test pattern")
    page.get_by_test_id("edit-description").fill("Colour bars and a tone.")
    page.get_by_test_id("edit-save").click()
    expect(page.get_by_test_id("watch-title")).to_have_text("Test pattern")
    page.get_by_test_id("nav-library").click()
    expect(card.get_by_test_id("video-link")).to_have_text("Test pattern")
    assert not alice.problems, alice.problems


def test_reload_during_an_upload_resumes_it(alice, big_clip, shoot):
    page = alice.page
    page.goto("/upload")
    cdp = _throttle_uploads(page, 4 * MIB)  # 8 MiB chunks: about two seconds each
    page.get_by_test_id("file-input").set_input_files(str(big_clip))
    with page.expect_response(lambda r: r.request.method == "PATCH" and r.status == 204, timeout=30_000) as first:
        pass
    assert int(first.value.headers["upload-offset"]) >= 8 * MIB, first.value.headers
    item = page.get_by_test_id("upload-item")
    expect(item).to_have_attribute("data-state", "uploading")
    video_id = item.get_attribute("data-video-id")
    assert video_id

    # Pause and resume: nothing moves while paused; resuming asks the server where it stands (HEAD).
    item.get_by_test_id("upload-pause").click()
    expect(item).to_have_attribute("data-state", "paused")
    paused_at = item.get_by_test_id("upload-bytes").inner_text()
    page.wait_for_timeout(700)
    assert item.get_by_test_id("upload-bytes").inner_text() == paused_at
    with page.expect_request(lambda r: r.method == "HEAD" and "/api/uploads/" in r.url):
        item.get_by_test_id("upload-resume").click()
    expect(item).to_have_attribute("data-state", "uploading")
    with page.expect_response(lambda r: r.request.method == "PATCH" and r.status == 204, timeout=30_000) as later:
        pass
    stored = int(later.value.headers["upload-offset"])
    assert stored >= 16 * MIB, stored

    page.reload()  # the page's "leave while uploading?" question is accepted (register_through_ui)
    interrupted = page.get_by_test_id("interrupted-item")
    expect(interrupted).to_contain_text(big_clip.name)
    shoot(page, "upload-interrupted")

    tus_requests: list[tuple[str, str | None]] = []
    page.on("request", lambda r: tus_requests.append((r.method, r.headers.get("upload-offset")))
            if "/api/uploads" in r.url and r.method in ("POST", "HEAD", "PATCH") else None)
    _unthrottle(cdp)
    page.get_by_test_id("file-input").set_input_files(str(big_clip))  # the same file again
    item = page.get_by_test_id("upload-item")
    expect(item).to_have_attribute("data-state", "done", timeout=60_000)
    assert item.get_attribute("data-video-id") == video_id
    expect(item.get_by_test_id("upload-resumed")).to_contain_text("Resumed at")
    assert ("POST", None) not in tus_requests, tus_requests  # no new upload was created
    patches = [int(offset) for method, offset in tus_requests if method == "PATCH"]
    assert tus_requests[0][0] == "HEAD" and patches and patches[0] >= stored, tus_requests
    expect(page.get_by_test_id("interrupted")).to_have_count(0)  # the fingerprint was removed on success
    expect(item.get_by_test_id("status-badge")).to_have_attribute(
        "data-status", re.compile("uploaded|processing|ready"))
    shoot(page, "upload-resumed")

    # The library lists it with its whole size; then delete it (which also stops its transcode).
    page.goto(f"/watch?v={video_id}")
    expect(page.get_by_test_id("watch-title")).to_have_text("noise")
    page.get_by_test_id("delete").click()
    page.get_by_test_id("delete-confirm").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator(f'[data-testid=video-card][data-video-id="{video_id}"]')).to_have_count(0)


def test_plays_the_original_until_hls_is_ready_then_switches(alice, long_clip, rest):
    headers = rest.login(alice.email)
    video_id = rest.upload(headers, long_clip, "Long clip")
    alice.video_ids.append(video_id)
    page = alice.page
    originals: list[str] = []
    page.on("request", lambda r: originals.append(r.url) if "/original" in r.url else None)
    page.goto(f"/watch?v={video_id}")
    player = page.get_by_test_id("player")
    expect(player).to_have_attribute("data-playback", "original")  # still processing: ranges on the original
    page.get_by_test_id("play-toggle").click()
    before = _assert_playing(page, beyond=0.5)
    assert not before["src"].startswith("blob:") and "/original" in before["src"], before

    expect(player).to_have_attribute("data-playback", "hls", timeout=90_000)  # video.ready → switched live
    after = _assert_playing(page, beyond=before["time"])
    assert after["src"].startswith("blob:"), after
    assert after["time"] >= before["time"], (before, after)  # kept the position, did not restart
    expect(page.get_by_test_id("status-badge")).to_have_text("Ready")
    print(f"original requests: {len(originals)}, reloads after a media error: "
          f"{sum('attempt=' in url for url in originals)}")
    assert not alice.problems, alice.problems


def test_another_organisation_sees_none_of_it(alice, register, shoot):
    assert alice.video_ids, "the earlier tests uploaded videos"
    bob = register("Bob")
    page = bob.page
    expect(page.get_by_test_id("empty-state")).to_be_visible()
    expect(page.get_by_test_id("video-card")).to_have_count(0)
    page.get_by_test_id("search").fill("Test pattern")
    expect(page.get_by_test_id("empty-state")).to_contain_text("No videos match")
    for video_id in alice.video_ids:
        page.goto(f"/watch?v={video_id}")
        expect(page.get_by_test_id("watch-error")).to_contain_text("Video not found")
        expect(page.locator("video")).to_have_count(0)
    response = page.goto("/")
    assert "script-src 'self'" in response.headers.get("content-security-policy", ""), response.headers
    expect(page.get_by_test_id("tenant-name")).to_contain_text(bob.tenant)
    expect(page.get_by_test_id("empty-state")).to_be_visible()
    # and Alice still sees hers
    alice.page.goto("/")
    expect(alice.page.get_by_test_id("video-card")).to_have_count(len(alice.video_ids))
    assert not bob.problems, bob.problems


def test_an_unlisted_video_plays_from_its_share_link_logged_out(alice, open_context, shoot):
    page = alice.page
    page.goto(f"/watch?v={alice.video_ids[0]}")
    expect(page.get_by_test_id("share-link")).to_have_count(0)
    page.get_by_test_id("visibility").select_option("unlisted")
    link = page.get_by_test_id("share-link")
    expect(link).to_have_value(re.compile(r"/watch\?v=.+&share=.+"))
    shared = link.input_value()
    expect(page.get_by_test_id("share-link-copy")).to_be_visible()

    stranger = open_context().new_page()  # nobody logged in
    stranger.goto(shared)
    expect(stranger.get_by_test_id("player")).to_have_attribute("data-playback", "hls")
    expect(stranger.get_by_test_id("watch-title")).to_have_text("Test pattern")
    expect(stranger.get_by_test_id("edit-form")).to_have_count(0)
    stranger.get_by_test_id("play-toggle").click()
    _assert_playing(stranger, beyond=0.5)

    page.get_by_test_id("share-rotate").click()  # a new link: the old one stops working
    expect(link).not_to_have_value(shared)
    stranger.goto(shared)
    expect(stranger.get_by_test_id("watch-error")).to_contain_text("This link no longer works")
    page.get_by_test_id("visibility").select_option("tenant")
    expect(page.get_by_test_id("share-link")).to_have_count(0)


def test_admin_invites_a_viewer_and_manages_webhooks(alice, server, open_context, shoot):
    page = alice.page
    page.get_by_test_id("nav-admin").click()
    expect(page.get_by_test_id("user-row")).to_have_count(1)

    viewer_email = f"viewer-{alice.email}"
    page.get_by_label("Email").fill(viewer_email)
    page.get_by_label("Role", exact=True).select_option("viewer")
    page.get_by_label("Initial password").fill("a viewer passphrase")
    page.get_by_test_id("invite-submit").click()
    expect(page.get_by_test_id("invite-result")).to_contain_text(viewer_email)
    row = page.locator(f'[data-testid=user-row][data-email="{viewer_email}"]')
    expect(row.get_by_test_id("user-role")).to_have_value("viewer")

    page.get_by_label("URL").fill(f"{server.url}/hook-receiver")
    page.get_by_test_id("webhook-submit").click()
    secret = page.get_by_test_id("webhook-secret-value")
    expect(secret).not_to_have_value("")
    expect(page.get_by_test_id("webhook-row")).to_have_count(1)
    shoot(page, "admin")

    # The viewer: the library, no upload, no admin, no editing.
    context = open_context()
    viewer = context.new_page()
    viewer.goto("/login")
    viewer.get_by_label("Email").fill(viewer_email)
    viewer.get_by_label("Password").fill("a viewer passphrase")
    viewer.get_by_test_id("login-submit").click()
    expect(viewer.get_by_test_id("video-card").first).to_be_visible()
    expect(viewer.get_by_test_id("nav-library")).to_be_visible()
    expect(viewer.get_by_test_id("nav-upload")).to_have_count(0)
    expect(viewer.get_by_test_id("nav-admin")).to_have_count(0)
    viewer.get_by_test_id("video-link").first.click()
    expect(viewer.get_by_test_id("player")).to_be_visible()
    expect(viewer.get_by_test_id("edit-form")).to_have_count(0)
    expect(viewer.get_by_test_id("delete")).to_have_count(0)
    # The session survives a reload (refresh cookie), and logging out ends it.
    viewer.reload()
    expect(viewer.get_by_test_id("player")).to_be_visible()
    viewer.get_by_test_id("logout").click()
    expect(viewer).to_have_url(re.compile(r"/login"))
    viewer.goto("/")
    expect(viewer).to_have_url(re.compile(r"/login"))

    # Promote, then remove; remove the webhook.
    row.get_by_test_id("user-role").select_option("editor")
    expect(page.get_by_test_id("users")).to_contain_text(f"{viewer_email} is now an editor")
    row.get_by_test_id("user-remove").click()
    row.get_by_test_id("user-remove-confirm").click()
    expect(page.get_by_test_id("user-row")).to_have_count(1)
    page.get_by_test_id("webhook-remove").click()
    page.get_by_role("button", name="Remove webhook").click()
    expect(page.get_by_test_id("webhook-row")).to_have_count(0)
    assert not alice.problems, alice.problems
