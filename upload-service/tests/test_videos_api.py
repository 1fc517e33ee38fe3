"""The video library API: visibility, roles, tenant isolation, filters, edits, and deletes that leave nothing."""

from __future__ import annotations

import pytest

from services import keys
from services.testing import STRONG_PASSWORD, assert_error
from services.videos import new_video

TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture
def tenant(api, deps):
    admin = api.register()
    token = admin["access_token"]
    api.call("POST", "/api/auth/users", token, json={"email": "v@acme.test", "password": STRONG_PASSWORD,
                                                     "role": "viewer"})
    api.call("POST", "/api/auth/users", token, json={"email": "e@acme.test", "password": STRONG_PASSWORD,
                                                     "role": "editor"})
    viewer = api.login("v@acme.test").get_json()
    editor = api.login("e@acme.test").get_json()
    tid = admin["tenant"]["id"]

    def video(owner, title, visibility="tenant", status="ready"):
        return deps.metadata.videos.add({**new_video(tid, owner, title, visibility=visibility), "status": status})

    return {"admin": token, "viewer": viewer["access_token"], "editor": editor["access_token"], "tid": tid,
            "viewer_id": viewer["user"]["id"], "editor_id": editor["user"]["id"], "video": video}


def titles(api, token, query=""):
    body = api.call("GET", f"/api/videos{query}", token).get_json()
    return sorted(v["title"] for v in body["items"]), body["total"]


def test_private_videos_are_hidden_from_other_viewers(api, tenant):
    others_private = tenant["video"](tenant["editor_id"], "editor's private", "private")
    tenant["video"](tenant["viewer_id"], "viewer's own private", "private")
    tenant["video"](tenant["editor_id"], "shared", "tenant")
    tenant["video"](tenant["editor_id"], "by link", "unlisted")
    assert titles(api, tenant["viewer"]) == (["by link", "shared", "viewer's own private"], 3)
    assert_error(api.call("GET", f"/api/videos/{others_private['id']}", tenant["viewer"]), 404, "not_found")
    assert titles(api, tenant["editor"])[1] == 4 and titles(api, tenant["admin"])[1] == 4
    assert api.call("GET", f"/api/videos/{others_private['id']}", tenant["admin"]).status_code == 200


def test_viewers_cannot_edit_or_delete(api, tenant):
    shared = tenant["video"](tenant["editor_id"], "shared")
    assert_error(api.call("PATCH", f"/api/videos/{shared['id']}", tenant["viewer"], json={"title": "x"}), 403)
    assert_error(api.call("DELETE", f"/api/videos/{shared['id']}", tenant["viewer"]), 403)
    assert api.call("GET", f"/api/videos/{shared['id']}", tenant["viewer"]).get_json()["title"] == "shared"


def test_other_tenants_see_404(api, tenant):
    shared = tenant["video"](tenant["editor_id"], "shared")
    rival = api.register(tenant_name="Rival", email="boss@rival.test")["access_token"]
    for method, body in [("GET", None), ("PATCH", {"title": "mine now"}), ("DELETE", None)]:
        assert_error(api.call(method, f"/api/videos/{shared['id']}", rival, json=body), 404, "not_found")
    assert titles(api, rival) == ([], 0)


def test_filters_search_and_pages(api, tenant):
    for i in range(5):
        tenant["video"](tenant["editor_id"], f"Holiday {i}", status="ready" if i % 2 else "failed")
    tenant["video"](tenant["editor_id"], "Zoë's party", status="processing")
    assert titles(api, tenant["admin"], "?status=failed")[1] == 3
    assert titles(api, tenant["admin"], "?q=zoË") == (["Zoë's party"], 1)
    page = api.call("GET", "/api/videos?per_page=4&page=2", tenant["admin"]).get_json()
    assert page["total"] == 6 and len(page["items"]) == 2 and page["page"] == 2
    newest = api.call("GET", "/api/videos?per_page=1", tenant["admin"]).get_json()["items"][0]
    assert newest["title"] == "Zoë's party"
    assert_error(api.call("GET", "/api/videos?status=done", tenant["admin"]), 422)
    assert_error(api.call("GET", "/api/videos?page=0", tenant["admin"]), 422)


def test_edits_are_validated(api, tenant):
    video = tenant["video"](tenant["editor_id"], "before")
    path = f"/api/videos/{video['id']}"
    changed = api.call("PATCH", path, tenant["editor"], json={"title": "  after  ", "description": "Ünïcode",
                                                              "visibility": "private"})
    assert changed.status_code == 200
    assert {k: changed.get_json()[k] for k in ("title", "description", "visibility")} == {
        "title": "after", "description": "Ünïcode", "visibility": "private"}
    assert_error(api.call("PATCH", path, tenant["editor"], json={"visibility": "public"}), 422)
    assert_error(api.call("PATCH", path, tenant["editor"], json={"title": ""}), 422)
    assert_error(api.call("PATCH", path, tenant["editor"], json={}), 422)
    assert_error(api.call("PATCH", path, tenant["editor"], data=b"{", content_type="application/json"), 400)


def test_delete_leaves_no_object_behind(api, tenant, deps, media):
    data = media["big"].read_bytes()
    # One finished video with outputs, one upload still in progress (an S3 part and a staged remainder).
    done = api.call("POST", "/api/uploads", tenant["editor"], headers={**TUS, "Upload-Length": str(len(data))})
    done_path = done.headers["Location"]
    api.call("PATCH", done_path, tenant["editor"], data=data, headers={
        **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    done_id = done_path.rsplit("/", 1)[1]
    deps.objects.put(keys.hls_master_key(tenant["tid"], done_id), b"#EXTM3U\n")
    deps.objects.put(keys.thumbnail_key(tenant["tid"], done_id), b"jpeg")
    busy = api.call("POST", "/api/uploads", tenant["editor"], headers={**TUS, "Upload-Length": str(len(data))})
    busy_path = busy.headers["Location"]
    api.call("PATCH", busy_path, tenant["editor"], data=data[: 9 * 1024 * 1024 + 11], headers={
        **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    for path in (done_path, busy_path):
        assert api.call("DELETE", path.replace("uploads", "videos"), tenant["editor"]).status_code == 204
    assert list(deps.objects.list("tenants/")) == []
    lister = getattr(deps.objects, "list_multipart_uploads", None)
    assert lister is None or lister("tenants/") == []
    assert api.call("HEAD", busy_path, tenant["editor"], headers=TUS).status_code == 404
    assert titles(api, tenant["admin"]) == ([], 0)
