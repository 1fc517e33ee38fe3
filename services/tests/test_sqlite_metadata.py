"""SQLite adapter specifics: WAL, recorded migrations, several connections/processes on one file."""

from __future__ import annotations

import gc
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from services.adapters.sqlite_metadata import IDLE_CONNECTIONS, MIGRATIONS, SqliteMetadataStore
from services.ports.metadata import DuplicateKey, VersionConflict


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "nested" / "dir" / "reelhouse.db"


@pytest.fixture
def store(db_path):
    s = SqliteMetadataStore(db_path)
    yield s
    s.close()


def test_creates_parent_directories_and_uses_wal(store, db_path):
    assert db_path.is_file()
    with store.connection() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    # WAL is a property of the file: a plain connection opened afterwards sees it too.
    with sqlite3.connect(db_path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"


def test_migrations_are_recorded(store, db_path):
    assert store.schema_version() == 2 == max(v for v, _ in MIGRATIONS)
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT version, applied_at FROM schema_migrations").fetchall()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert [r[0] for r in rows] == [1, 2]
    assert rows[0][1]
    assert {"tenants", "users", "videos", "uploads", "refresh_tokens", "webhooks", "webhook_deliveries"} <= tables


def test_reopening_does_not_rerun_migrations_or_lose_data(store, db_path):
    record = store.videos.add({"tenant_id": "t1", "title": "kept"})
    with sqlite3.connect(db_path) as conn:
        before = conn.execute("SELECT version, applied_at FROM schema_migrations").fetchall()
    store.close()
    for _ in range(2):
        reopened = SqliteMetadataStore(db_path)
        assert reopened.schema_version() == 2
        assert reopened.videos.get(record["id"]) == record
        reopened.close()
    with sqlite3.connect(db_path) as conn:
        after = conn.execute("SELECT version, applied_at FROM schema_migrations").fetchall()
    assert after == before


def test_a_version_1_database_is_upgraded_to_version_2(db_path):
    # Build the file exactly as a store that only knew migration 1 left it.
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT)")
        for statement in dict(MIGRATIONS)[1]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (1, '2024-01-01T00:00:00.000000Z')")
        conn.execute("INSERT INTO videos (id, data) VALUES ('v1', ?)",
                     ('{"id":"v1","tenant_id":"t1","version":1,"created_at":"2024-01-01T00:00:00.000000Z"}',))
    upgraded = SqliteMetadataStore(db_path)
    try:
        assert upgraded.schema_version() == 2
        assert upgraded.videos.get("v1")["tenant_id"] == "t1"
        hook = upgraded.webhooks.add({"tenant_id": "t1", "url": "https://example.com/h"})
        assert upgraded.webhooks.get(hook["id"])["url"] == "https://example.com/h"
        delivery = upgraded.webhook_deliveries.add({"tenant_id": "t1", "webhook_id": hook["id"],
                                                    "status": "pending", "next_attempt_at": 1.0})
        assert upgraded.webhook_deliveries.find({"status": "pending", "next_attempt_at": {"$lte": 2.0}}).items[0][
            "id"] == delivery["id"]
        with upgraded.connection() as conn:
            indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"ix_webhooks_tenant_id", "ix_webhook_deliveries_webhook_id",
                "ix_webhook_deliveries_status_next_attempt_at"} <= indexes
    finally:
        upgraded.close()


def test_unique_constraints_survive_reopen(store, db_path):
    store.users.add({"tenant_id": "t1", "email": "a@example.com"})
    store.close()
    reopened = SqliteMetadataStore(db_path)
    try:
        with pytest.raises(DuplicateKey):
            reopened.users.add({"tenant_id": "t1", "email": "a@example.com"})
    finally:
        reopened.close()


def test_two_stores_on_one_file_see_each_others_writes(store, db_path):
    other = SqliteMetadataStore(db_path)
    try:
        added = store.videos.add({"tenant_id": "t1", "title": "from A"})
        assert other.videos.get(added["id"]) == added
        changed = other.videos.update(added["id"], {"title": "from B"})
        assert store.videos.get(added["id"]) == changed
        assert store.videos.find({"title": "from B"}).total == 1
        # Compare-and-set holds across instances: A's read is stale after B's write.
        stale = store.videos.get(added["id"])
        other.videos.update(added["id"], {"title": "B again"}, expected_version=stale["version"])
        with pytest.raises(VersionConflict):
            store.videos.update(added["id"], {"title": "A loses"}, expected_version=stale["version"])
        # Unique keys hold across instances too.
        store.users.add({"tenant_id": "t1", "email": "x@example.com"})
        with pytest.raises(DuplicateKey):
            other.users.add({"tenant_id": "t1", "email": "x@example.com"})
        assert other.videos.delete(added["id"]) is True
        assert store.videos.get(added["id"]) is None
    finally:
        other.close()


def test_separate_processes_increment_without_lost_updates(store, db_path):
    counter = store.videos.add({"tenant_id": "t1", "count": 0})["id"]
    script = textwrap.dedent(f"""
        import sys, time
        from services.adapters.sqlite_metadata import SqliteMetadataStore
        from services.ports.metadata import VersionConflict
        store = SqliteMetadataStore({str(db_path)!r})
        for _ in range(30):
            while True:
                current = store.videos.get({counter!r})
                time.sleep(0.0005)
                try:
                    store.videos.update({counter!r}, {{"count": current["count"] + 1}},
                                        expected_version=current["version"])
                    break
                except VersionConflict:
                    pass
        store.close()
    """)
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=root) for _ in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    final = store.videos.get(counter)
    assert final["count"] == 90
    assert final["version"] == 91


def test_close_then_use_again_reconnects(store):
    added = store.tenants.add({"name": "Acme", "name_key": "acme"})
    store.close()
    assert store.tenants.get(added["id"]) == added
    store.ping()


def _live_connections() -> int:
    gc.collect()  # garbage of earlier tests is not live
    return sum(isinstance(o, sqlite3.Connection) for o in gc.get_objects())


def test_threads_hold_no_connection_between_operations(store):
    """A long-lived thread (a websocket's, in the notify service) must not keep a connection after its lookup, and
    short-lived ones (one per Socket.IO message or request) must not leave theirs open."""
    added = store.tenants.add({"name": "Acme", "name_key": "acme"})
    before = _live_connections()

    def read():
        assert store.tenants.get(added["id"]) == added
        assert store.tenants.find({"name_key": "acme"}).total == 1

    for _ in range(40):
        thread = threading.Thread(target=read)
        thread.start()
        thread.join()
    assert _live_connections() <= before + 1

    ready, go = threading.Barrier(31), threading.Event()

    def read_then_stay():
        read()
        ready.wait()
        go.wait(30)

    threads = [threading.Thread(target=read_then_stay) for _ in range(30)]
    for thread in threads:
        thread.start()
    ready.wait()
    try:
        # 30 threads alive that have each used the store: at most the idle pool is open
        assert _live_connections() <= before + IDLE_CONNECTIONS
    finally:
        go.set()
        for thread in threads:
            thread.join()
    read()


def test_a_connection_handed_back_inside_a_transaction_is_not_reused(store):
    with store.connection() as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO schema_migrations VALUES (99, 'x')")
    # the write lock went with that connection, and its insert was rolled back
    with store.transaction() as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations WHERE version = 99").fetchone()[0] == 0
