"""Repository contract: every MetadataStore adapter (SQLite, MongoDB/mongomock) must pass all of these."""

from __future__ import annotations

import re
import threading
import time

import pytest

from services.ports.metadata import (
    COLLECTIONS,
    DuplicateKey,
    MetadataStore,
    Page,
    RecordNotFound,
    Repository,
    VersionConflict,
)

TS = "2024-05-01T12:00:00.000000Z"


def video(tenant_id: str, **fields) -> dict:
    return {"tenant_id": tenant_id, "title": "untitled", "status": "uploaded", **fields}


def ids(page: Page) -> list[str]:
    return [r["id"] for r in page.items]


def all_ids(repo: Repository, where=None, **kwargs) -> set[str]:
    return set(ids(repo.find(where, per_page=1000, **kwargs)))


# --- basics -------------------------------------------------------------------------------------------


def test_store_exposes_one_repository_per_collection(metadata_store: MetadataStore):
    for name in COLLECTIONS:
        assert isinstance(getattr(metadata_store, name), Repository)
    metadata_store.ping()


def test_add_fills_id_version_and_timestamps(metadata_store):
    added = metadata_store.videos.add(video("t1", title="First"))
    assert re.fullmatch(r"[a-z2-7]{16}", added["id"])
    assert added["version"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", added["created_at"])
    assert added["updated_at"] == added["created_at"]
    assert added["title"] == "First" and added["tenant_id"] == "t1"
    assert metadata_store.videos.get(added["id"]) == added


def test_add_keeps_given_id_and_created_at(metadata_store):
    added = metadata_store.videos.add(video("t1", id="myvideo", created_at=TS))
    assert added["id"] == "myvideo"
    assert added["created_at"] == TS
    assert metadata_store.videos.get("myvideo")["created_at"] == TS


def test_add_ignores_a_given_version(metadata_store):
    added = metadata_store.videos.add(video("t1", version=42))
    assert added["version"] == 1
    assert metadata_store.videos.get(added["id"])["version"] == 1


def test_add_same_id_twice_is_a_duplicate(metadata_store):
    metadata_store.videos.add(video("t1", id="same"))
    with pytest.raises(DuplicateKey) as info:
        metadata_store.videos.add(video("t1", id="same", title="other"))
    assert info.value.collection == "videos"
    assert info.value.fields == ("id",)
    assert metadata_store.videos.get("same")["title"] == "untitled"


def test_get_missing_returns_none(metadata_store):
    assert metadata_store.videos.get("doesnotexist") is None
    assert metadata_store.tenants.get("doesnotexist") is None


def test_update_applies_changes_and_bumps_version(metadata_store):
    added = metadata_store.videos.add(video("t1", title="Old", duration=3.5, created_at=TS))
    updated = metadata_store.videos.update(added["id"], {"title": "New", "status": "ready"})
    assert updated["version"] == 2
    assert updated["title"] == "New" and updated["status"] == "ready"
    assert updated["duration"] == 3.5  # untouched fields stay
    assert updated["created_at"] == TS
    assert updated["updated_at"] >= added["updated_at"]
    assert updated["id"] == added["id"]
    assert metadata_store.videos.get(added["id"]) == updated
    again = metadata_store.videos.update(added["id"], {"duration": 4})
    assert again["version"] == 3 and again["title"] == "New" and again["duration"] == 4


def test_update_can_set_a_field_to_none(metadata_store):
    added = metadata_store.videos.add(video("t1", error="boom"))
    updated = metadata_store.videos.update(added["id"], {"error": None})
    assert updated["error"] is None
    assert metadata_store.videos.get(added["id"])["error"] is None
    assert added["id"] in all_ids(metadata_store.videos, {"error": None})


def test_update_ignores_version_in_changes(metadata_store):
    added = metadata_store.videos.add(video("t1"))
    updated = metadata_store.videos.update(added["id"], {"version": 99, "title": "x"})
    assert updated["version"] == 2
    assert metadata_store.videos.get(added["id"])["version"] == 2


def test_update_cannot_change_the_id(metadata_store):
    added = metadata_store.videos.add(video("t1"))
    with pytest.raises(ValueError):
        metadata_store.videos.update(added["id"], {"id": "other"})
    assert metadata_store.videos.get(added["id"])["version"] == 1
    assert metadata_store.videos.get("other") is None


def test_update_missing_raises_record_not_found(metadata_store):
    with pytest.raises(RecordNotFound):
        metadata_store.videos.update("missing", {"title": "x"})
    with pytest.raises(RecordNotFound):  # not a VersionConflict: there is nothing to conflict with
        metadata_store.videos.update("missing", {"title": "x"}, expected_version=1)
    assert metadata_store.videos.get("missing") is None


def test_delete_returns_whether_something_was_deleted(metadata_store):
    added = metadata_store.videos.add(video("t1"))
    keep = metadata_store.videos.add(video("t1"))
    assert metadata_store.videos.delete(added["id"]) is True
    assert metadata_store.videos.get(added["id"]) is None
    assert metadata_store.videos.delete(added["id"]) is False
    assert metadata_store.videos.get(keep["id"]) is not None
    with pytest.raises(RecordNotFound):
        metadata_store.videos.update(added["id"], {"title": "x"})


def test_find_one(metadata_store):
    metadata_store.users.add({"tenant_id": "t1", "email": "a@example.com", "role": "admin"})
    found = metadata_store.users.find_one({"email": "a@example.com"})
    assert found is not None and found["role"] == "admin"
    assert metadata_store.users.find_one({"email": "nobody@example.com"}) is None


# --- unique constraints -------------------------------------------------------------------------------


def test_users_email_is_unique_per_tenant(metadata_store):
    users = metadata_store.users
    first = users.add({"tenant_id": "t1", "email": "ann@example.com"})
    with pytest.raises(DuplicateKey) as info:
        users.add({"tenant_id": "t1", "email": "ann@example.com"})
    assert info.value.collection == "users"
    assert info.value.fields == ("tenant_id", "email")
    other = users.add({"tenant_id": "t2", "email": "ann@example.com"})  # another tenant may reuse it
    assert other["id"] != first["id"]
    assert all_ids(users, {"email": "ann@example.com"}) == {first["id"], other["id"]}


def test_tenant_name_key_is_unique(metadata_store):
    metadata_store.tenants.add({"name": "Acme", "name_key": "acme"})
    with pytest.raises(DuplicateKey) as info:
        metadata_store.tenants.add({"name": "ACME", "name_key": "acme"})
    assert info.value.collection == "tenants"
    assert info.value.fields == ("name_key",)
    assert metadata_store.tenants.find().total == 1


def test_refresh_token_hash_is_unique(metadata_store):
    tokens = metadata_store.refresh_tokens
    tokens.add({"tenant_id": "t1", "user_id": "u1", "family_id": "f1", "token_hash": "h1"})
    with pytest.raises(DuplicateKey) as info:
        tokens.add({"tenant_id": "t2", "user_id": "u2", "family_id": "f2", "token_hash": "h1"})
    assert info.value.collection == "refresh_tokens"
    assert info.value.fields == ("token_hash",)


def test_update_into_a_unique_clash_raises_duplicate_key_and_changes_nothing(metadata_store):
    users = metadata_store.users
    users.add({"tenant_id": "t1", "email": "ann@example.com"})
    bob = users.add({"tenant_id": "t1", "email": "bob@example.com", "name": "Bob"})
    with pytest.raises(DuplicateKey) as info:
        users.update(bob["id"], {"email": "ann@example.com", "name": "Robert"})
    assert info.value.collection == "users"
    assert info.value.fields == ("tenant_id", "email")
    assert users.get(bob["id"]) == bob
    # The same change is fine where it does not clash, and a record may "change" to its own value.
    assert users.update(bob["id"], {"email": "bob@example.com"})["version"] == 2


def test_update_tenant_name_key_clash(metadata_store):
    metadata_store.tenants.add({"name": "Acme", "name_key": "acme"})
    other = metadata_store.tenants.add({"name": "Other", "name_key": "other"})
    with pytest.raises(DuplicateKey) as info:
        metadata_store.tenants.update(other["id"], {"name_key": "acme"})
    assert info.value.fields == ("name_key",)
    assert metadata_store.tenants.get(other["id"])["name_key"] == "other"


# --- tenant scoping -----------------------------------------------------------------------------------


def test_another_tenants_record_behaves_as_not_found(metadata_store):
    videos = metadata_store.videos
    mine = videos.add(video("t1", title="Mine"))
    assert videos.get(mine["id"], tenant_id="t1") == mine
    assert videos.get(mine["id"], tenant_id="t2") is None
    with pytest.raises(RecordNotFound):
        videos.update(mine["id"], {"title": "Stolen"}, tenant_id="t2")
    with pytest.raises(RecordNotFound):
        videos.update(mine["id"], {"title": "Stolen"}, tenant_id="t2", expected_version=1)
    assert videos.delete(mine["id"], tenant_id="t2") is False
    assert videos.get(mine["id"]) == mine  # untouched
    assert videos.update(mine["id"], {"title": "Renamed"}, tenant_id="t1")["title"] == "Renamed"
    assert videos.delete(mine["id"], tenant_id="t1") is True
    assert videos.get(mine["id"]) is None


def test_find_filters_by_tenant(metadata_store):
    videos = metadata_store.videos
    t1 = {videos.add(video("t1"))["id"] for _ in range(3)}
    t2 = {videos.add(video("t2"))["id"] for _ in range(2)}
    page = videos.find({"tenant_id": "t1"})
    assert set(ids(page)) == t1 and page.total == 3
    assert all_ids(videos, {"tenant_id": "t2"}) == t2
    assert all_ids(videos, {"tenant_id": "t3"}) == set()
    assert videos.find().total == 5


# --- ordering and pagination --------------------------------------------------------------------------


@pytest.mark.parametrize("newest_first", [False, True])
def test_pages_with_identical_created_at_cover_every_record_once(metadata_store, newest_first):
    videos = metadata_store.videos
    added = [videos.add(video("t1", created_at=TS))["id"] for _ in range(25)]
    videos.add(video("t2", created_at=TS))  # filtered out below
    expected = sorted(added, reverse=newest_first)
    seen = []
    for number in (1, 2, 3):
        page = videos.find({"tenant_id": "t1"}, newest_first=newest_first, page=number, per_page=10)
        assert page.total == 25 and page.page == number and page.per_page == 10
        assert len(page.items) == (10 if number < 3 else 5)
        seen += ids(page)
    assert seen == expected
    assert videos.find({"tenant_id": "t1"}, newest_first=newest_first, page=4, per_page=10).items == []


@pytest.mark.parametrize("newest_first", [False, True])
def test_find_orders_by_created_at_then_id(metadata_store, newest_first):
    videos = metadata_store.videos
    stamps = ["2024-01-02T00:00:00.000000Z", "2024-01-01T00:00:00.000000Z", "2024-01-03T00:00:00.000000Z"]
    records = [videos.add(video("t1", created_at=stamps[i % 3])) for i in range(9)]
    expected = [r["id"] for r in sorted(records, key=lambda r: (r["created_at"], r["id"]), reverse=newest_first)]
    pages = [ids(videos.find(newest_first=newest_first, page=n, per_page=4)) for n in (1, 2, 3)]
    assert pages[0] + pages[1] + pages[2] == expected


def test_bad_page_arguments_raise(metadata_store):
    with pytest.raises(ValueError):
        metadata_store.videos.find(page=0)
    with pytest.raises(ValueError):
        metadata_store.videos.find(per_page=0)


# --- where operators ----------------------------------------------------------------------------------


@pytest.fixture
def sized(metadata_store):
    """Five uploads with sizes 1..5 (and a sixth with no size) -> {size: id}."""
    uploads = metadata_store.uploads
    out = {}
    for size in range(1, 6):
        out[size] = uploads.add({"tenant_id": "t1", "size": size, "state": "open" if size % 2 else "done",
                                 "expires_at": f"2024-01-0{size}T00:00:00.000000Z"})["id"]
    out[None] = uploads.add({"tenant_id": "t1", "state": "open"})["id"]
    return out


def test_where_comparison_operators(metadata_store, sized):
    uploads = metadata_store.uploads
    assert all_ids(uploads, {"size": {"$lt": 3}}) == {sized[1], sized[2]}
    assert all_ids(uploads, {"size": {"$lte": 3}}) == {sized[1], sized[2], sized[3]}
    assert all_ids(uploads, {"size": {"$gt": 3}}) == {sized[4], sized[5]}
    assert all_ids(uploads, {"size": {"$gte": 3}}) == {sized[3], sized[4], sized[5]}
    assert all_ids(uploads, {"size": {"$gt": 1, "$lt": 4}}) == {sized[2], sized[3]}
    assert all_ids(uploads, {"size": {"$gt": 100}}) == set()


def test_where_compares_iso_timestamps_as_text(metadata_store, sized):
    expired = all_ids(metadata_store.uploads, {"expires_at": {"$lt": "2024-01-03T00:00:00.000000Z"}})
    assert expired == {sized[1], sized[2]}


def test_where_in(metadata_store, sized):
    uploads = metadata_store.uploads
    assert all_ids(uploads, {"size": {"$in": [2, 4, 99]}}) == {sized[2], sized[4]}
    assert all_ids(uploads, {"size": {"$in": (5,)}}) == {sized[5]}
    assert all_ids(uploads, {"size": {"$in": []}}) == set()
    assert all_ids(uploads, {"id": {"$in": [sized[1], sized[3], "nope"]}}) == {sized[1], sized[3]}


def test_where_ne_includes_records_without_the_field(metadata_store, sized):
    uploads = metadata_store.uploads
    assert all_ids(uploads, {"state": {"$ne": "open"}}) == {sized[2], sized[4]}
    assert all_ids(uploads, {"size": {"$ne": 3}}) == set(sized.values()) - {sized[3]}


def test_where_equality_and_none(metadata_store, sized):
    uploads = metadata_store.uploads
    assert all_ids(uploads, {"state": "done"}) == {sized[2], sized[4]}
    assert all_ids(uploads, {"state": "open", "size": {"$gt": 1}}) == {sized[3], sized[5]}
    assert all_ids(uploads, {"id": sized[4]}) == {sized[4]}
    # None matches a missing field and an explicit null, never a set value.
    explicit_null = uploads.add({"tenant_id": "t1", "size": None})["id"]
    assert all_ids(uploads, {"size": None}) == {sized[None], explicit_null}
    assert all_ids(uploads, {"size": {"$ne": None}}) == {sized[n] for n in range(1, 6)}


def test_where_matches_booleans(metadata_store):
    users = metadata_store.users
    on = users.add({"tenant_id": "t1", "email": "a@x.io", "disabled": True})["id"]
    off = users.add({"tenant_id": "t1", "email": "b@x.io", "disabled": False})["id"]
    assert all_ids(users, {"disabled": True}) == {on}
    assert all_ids(users, {"disabled": False}) == {off}


def test_where_rejects_unknown_operators(metadata_store):
    with pytest.raises(ValueError):
        metadata_store.uploads.find({"size": {"$regex": ".*"}})
    with pytest.raises(ValueError):
        metadata_store.uploads.delete_where({"size": {"$where": "1"}})


def test_find_total_counts_all_matches_not_the_page(metadata_store, sized):
    page = metadata_store.uploads.find({"state": "open"}, per_page=2)
    assert page.total == 4 and len(page.items) == 2


# --- search -------------------------------------------------------------------------------------------


def test_search_is_case_insensitive_substring(metadata_store):
    videos = metadata_store.videos
    holiday = videos.add(video("t1", title="Summer Holiday 2024"))["id"]
    video_b = videos.add(video("t1", title="holiday party"))["id"]
    videos.add(video("t1", title="Board meeting"))
    assert all_ids(videos, search="HOLIDAY") == {holiday, video_b}
    assert all_ids(videos, search="mmer hol") == {holiday}
    assert all_ids(videos, search="winter") == set()
    assert videos.find(search="holiday").total == 2


def test_search_non_ascii_case_insensitive(metadata_store):
    videos = metadata_store.videos
    lower = videos.add(video("t1", title="Zoë's first steps"))["id"]
    upper = videos.add(video("t1", title="ZOË ON STAGE"))["id"]
    videos.add(video("t1", title="Zoe without the diaeresis"))
    assert all_ids(videos, search="zoë") == {lower, upper}
    assert all_ids(videos, search="ZOË") == {lower, upper}
    assert all_ids(videos, search="Zoë") == {lower, upper}


def test_search_treats_special_characters_literally(metadata_store):
    videos = metadata_store.videos
    exact = videos.add(video("t1", title="Q&A (part 1.5) 100%"))["id"]
    videos.add(video("t1", title="Q&A part 1x5"))
    assert all_ids(videos, search="(part 1.5)") == {exact}
    assert all_ids(videos, search="100%") == {exact}
    assert all_ids(videos, search=".*") == set()
    assert all_ids(videos, search="_") == set()


def test_search_combines_with_where(metadata_store):
    videos = metadata_store.videos
    mine = videos.add(video("t1", title="Launch video"))["id"]
    videos.add(video("t2", title="Launch video"))
    assert all_ids(videos, {"tenant_id": "t1"}, search="launch") == {mine}


def test_search_on_a_kind_without_search_field_raises(metadata_store):
    with pytest.raises(ValueError):
        metadata_store.users.find(search="x")


# --- compare-and-set and concurrency ------------------------------------------------------------------


def test_stale_expected_version_raises_version_conflict(metadata_store):
    videos = metadata_store.videos
    added = videos.add(video("t1", views=0))
    first = videos.update(added["id"], {"views": 1}, expected_version=1)
    assert first["version"] == 2
    with pytest.raises(VersionConflict):
        videos.update(added["id"], {"views": 100}, expected_version=1)
    with pytest.raises(VersionConflict):
        videos.update(added["id"], {"views": 100}, expected_version=3)
    assert videos.get(added["id"]) == first
    assert videos.update(added["id"], {"views": 2}, expected_version=2)["version"] == 3


def test_concurrent_compare_and_set_loses_no_updates(metadata_store):
    videos = metadata_store.videos
    counter = videos.add(video("t1", count=0))["id"]
    threads_n, increments = 8, 25
    errors: list[BaseException] = []
    conflicts = [0]
    start = threading.Barrier(threads_n)

    def worker():
        try:
            start.wait()
            for _ in range(increments):
                while True:
                    current = videos.get(counter)
                    time.sleep(0)  # let other threads in between read and write: the race CAS must win
                    try:
                        videos.update(counter, {"count": current["count"] + 1},
                                      expected_version=current["version"])
                        break
                    except VersionConflict:
                        conflicts[0] += 1
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    final = videos.get(counter)
    assert final["count"] == threads_n * increments
    assert final["version"] == 1 + threads_n * increments
    assert conflicts[0] > 0  # the threads really did interleave


# --- delete_where -------------------------------------------------------------------------------------


def test_delete_where_removes_exactly_the_matches(metadata_store, sized):
    uploads = metadata_store.uploads
    other_tenant = uploads.add({"tenant_id": "t2", "state": "open", "size": 1})["id"]
    assert uploads.delete_where({"tenant_id": "t1", "size": {"$lte": 2}}) == 2
    assert uploads.get(sized[1]) is None and uploads.get(sized[2]) is None
    assert all_ids(uploads) == {sized[3], sized[4], sized[5], sized[None], other_tenant}
    assert uploads.delete_where({"tenant_id": "t1", "size": {"$lte": 2}}) == 0
    assert uploads.delete_where({"tenant_id": "t1"}) == 4
    assert all_ids(uploads) == {other_tenant}


def test_delete_where_refuses_an_empty_filter(metadata_store, sized):
    with pytest.raises(ValueError):
        metadata_store.uploads.delete_where({})
    assert metadata_store.uploads.find().total == 6


# --- values -------------------------------------------------------------------------------------------


def test_non_ascii_and_nested_values_round_trip(metadata_store):
    videos = metadata_store.videos
    values = {
        "title": "Zoë — 日本語の動画 🎬",
        "description": "line one\nline \"two\" \\ tab\t end",
        "tags": ["café", "naïve", "Ωmega"],
        "renditions": [{"height": 1080, "bitrate": 5_000_000, "codec": "avc1.640028"}, {"height": 360}],
        "meta": {"ratio": 1.7777, "ok": True, "nothing": None, "nested": {"ключ": "значение"}},
    }
    added = videos.add(video("t1", **values))
    got = videos.get(added["id"])
    for key, value in values.items():
        assert got[key] == value
    assert videos.find({"title": values["title"]}).items == [got]
    updated = videos.update(added["id"], {"title": "Ünïcödé ✓"})
    assert videos.get(added["id"])["title"] == "Ünïcödé ✓" == updated["title"]
    assert videos.get(added["id"])["tags"] == values["tags"]


def test_returned_records_are_copies(metadata_store):
    videos = metadata_store.videos
    added = videos.add(video("t1", tags=["a"]))
    added["tags"].append("mutated")
    added["title"] = "mutated"
    got = videos.get(added["id"])
    assert got["tags"] == ["a"] and got["title"] == "untitled"
    got["title"] = "mutated again"
    assert videos.get(added["id"])["title"] == "untitled"


def test_search_combines_with_a_where_on_the_search_field(metadata_store):
    videos = metadata_store.videos
    wanted = videos.add(video("t1", title="Holiday"))["id"]
    videos.add(video("t1", title="Holiday at sea"))
    assert all_ids(videos, {"title": "Holiday"}, search="holi") == {wanted}
    assert all_ids(videos, {"title": "Holiday"}, search="sea") == set()


def test_or_matches_any_branch(metadata_store):
    videos = metadata_store.videos
    shared = videos.add(video("t1", title="a", visibility="tenant", owner_id="u1"))["id"]
    mine = videos.add(video("t1", title="b", visibility="private", owner_id="me"))["id"]
    videos.add(video("t1", title="c", visibility="private", owner_id="u2"))
    videos.add(video("t2", title="d", visibility="tenant", owner_id="me"))
    where = {"tenant_id": "t1", "$or": [{"visibility": {"$ne": "private"}}, {"owner_id": "me"}]}
    assert all_ids(videos, where) == {shared, mine}
    assert videos.find(where).total == 2
    assert all_ids(videos, {"tenant_id": "t1", "$or": []}) == set()


def test_webhook_deliveries_due_query_and_claim(metadata_store):
    hooks, deliveries = metadata_store.webhooks, metadata_store.webhook_deliveries
    hook = hooks.add({"tenant_id": "t1", "url": "https://example.com/h", "events": ["video.ready"],
                      "secret": "s", "active": True})
    assert ids(hooks.find({"tenant_id": "t1", "active": True})) == [hook["id"]]
    due = deliveries.add({"tenant_id": "t1", "webhook_id": hook["id"], "status": "pending", "next_attempt_at": 10.5})
    deliveries.add({"tenant_id": "t1", "webhook_id": hook["id"], "status": "pending", "next_attempt_at": 99.0})
    deliveries.add({"tenant_id": "t1", "webhook_id": hook["id"], "status": "delivered", "next_attempt_at": 1.0})
    assert ids(deliveries.find({"status": "pending", "next_attempt_at": {"$lte": 20.0}})) == [due["id"]]
    deliveries.update(due["id"], {"attempts": 1}, expected_version=due["version"])
    with pytest.raises(VersionConflict):
        deliveries.update(due["id"], {"attempts": 1}, expected_version=due["version"])
