"""SQLite metadata adapter: one JSON document per row, WAL, pooled connections, versioned migrations.

Each operation borrows a connection from a small pool and hands it back, so that no thread holds one between
operations. (A connection per thread, as before, cost each open Socket.IO socket of the notify service ~150 KiB:
the socket's own thread or greenlet ran the connect handler's lookup and kept that connection while it lived; and
the short-lived threads and greenlets left theirs open for good.)
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from services.ports.metadata import (
    COLLECTIONS,
    OPERATORS,
    Collection,
    DuplicateKey,
    MetadataStore,
    Page,
    RecordNotFound,
    Repository,
    VersionConflict,
    Where,
    apply_changes,
    check_page,
    stamp_new,
    utcnow_iso,
)

_FIELD = re.compile(r"[a-z_][a-z0-9_]*")
IDLE_CONNECTIONS = 8  # kept open between operations; more are opened while more operations run at once


def _index_name(table: str, fields: tuple[str, ...], unique: bool) -> str:
    return f"{'ux' if unique else 'ix'}_{table}_{'_'.join(fields)}"


def _index_sql(table: str, fields: tuple[str, ...], unique: bool) -> str:
    columns = ", ".join(f"json_extract(data, '$.{f}')" for f in fields)
    kind = "UNIQUE INDEX" if unique else "INDEX"
    return f"CREATE {kind} {_index_name(table, fields, unique)} ON {table} ({columns})"


def _table_sql(c: Collection) -> list[str]:
    return [
        f"CREATE TABLE {c.name} (id TEXT PRIMARY KEY, data TEXT NOT NULL CHECK (json_valid(data)))",
        f"CREATE INDEX ix_{c.name}_order ON {c.name} (json_extract(data, '$.created_at'), id)",
        *(_index_sql(c.name, f, True) for f in c.unique),
        *(_index_sql(c.name, f, False) for f in c.indexes),
    ]


# Append new versions; never edit a version that has shipped.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [stmt for name in ("tenants", "users", "videos", "uploads", "refresh_tokens")
         for stmt in _table_sql(COLLECTIONS[name])]),
    (2, [stmt for name in ("webhooks", "webhook_deliveries") for stmt in _table_sql(COLLECTIONS[name])]),
]


class SqliteMetadataStore(MetadataStore):
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._connections: set[sqlite3.Connection] = set()  # every open one, for close()
        self._idle: list[sqlite3.Connection] = []
        self._migrate()
        for name, collection in COLLECTIONS.items():
            setattr(self, name, SqliteRepository(self, collection))

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """A connection for one operation: an idle one of the pool, or a new one; handed back afterwards."""
        conn = self._checkout()
        try:
            yield conn
        finally:
            self._checkin(conn)

    def _checkout(self) -> sqlite3.Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.create_function("casefold", 1, lambda s: s.casefold() if isinstance(s, str) else s,
                             deterministic=True)
        with self._lock:
            self._connections.add(conn)
        return conn

    def _checkin(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if conn not in self._connections:
                return  # closed by close() meanwhile
            if len(self._idle) < IDLE_CONNECTIONS and not conn.in_transaction:
                self._idle.append(conn)
                return
            self._connections.discard(conn)
        conn.close()  # an unfinished transaction is rolled back

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: read-modify-write is serialised across threads and processes."""
        with self.connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self.transaction() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT)")
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, statements in MIGRATIONS:
                if version in done:
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, utcnow_iso()))

    def schema_version(self) -> int:
        with self.connection() as conn:
            row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return row[0] or 0

    def ping(self) -> None:
        with self.connection() as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
            self._idle.clear()


def _dumps(record: Mapping[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


class SqliteRepository(Repository):
    def __init__(self, store: SqliteMetadataStore, collection: Collection):
        self.store = store
        self.c = collection
        self.table = collection.name
        self._unique_by_index = {_index_name(self.table, f, True): f for f in collection.unique}

    def _duplicate(self, error: sqlite3.IntegrityError) -> DuplicateKey:
        message = str(error)
        for index, fields in self._unique_by_index.items():
            if index in message:
                return DuplicateKey(self.table, fields)
        return DuplicateKey(self.table, ("id",))

    def add(self, record: dict) -> dict:
        record = stamp_new(record)
        try:
            with self.store.transaction() as conn:
                conn.execute(f"INSERT INTO {self.table} (id, data) VALUES (?, ?)", (record["id"], _dumps(record)))  # noqa: S608
        except sqlite3.IntegrityError as error:
            raise self._duplicate(error) from None
        return record

    def get(self, record_id: str, *, tenant_id: str | None = None) -> dict | None:
        with self.store.connection() as conn:
            row = conn.execute(f"SELECT data FROM {self.table} WHERE id = ?", (record_id,)).fetchone()  # noqa: S608
        if row is None:
            return None
        record = json.loads(row[0])
        if tenant_id is not None and record.get("tenant_id") != tenant_id:
            return None
        return record

    def update(self, record_id: str, changes: Mapping[str, Any], *, tenant_id: str | None = None,
               expected_version: int | None = None) -> dict:
        try:
            with self.store.transaction() as conn:
                row = conn.execute(f"SELECT data FROM {self.table} WHERE id = ?", (record_id,)).fetchone()  # noqa: S608
                current = json.loads(row[0]) if row else None
                if current is None or (tenant_id is not None and current.get("tenant_id") != tenant_id):
                    raise RecordNotFound(f"{self.table}/{record_id}")
                if expected_version is not None and current["version"] != expected_version:
                    raise VersionConflict(f"{self.table}/{record_id} is at version {current['version']}")
                updated = apply_changes(current, changes)
                conn.execute(f"UPDATE {self.table} SET data = ? WHERE id = ?", (_dumps(updated), record_id))  # noqa: S608
        except sqlite3.IntegrityError as error:
            raise self._duplicate(error) from None
        return updated

    def delete(self, record_id: str, *, tenant_id: str | None = None) -> bool:
        sql, params = f"DELETE FROM {self.table} WHERE id = ?", [record_id]  # noqa: S608
        if tenant_id is not None:
            sql += " AND json_extract(data, '$.tenant_id') = ?"
            params.append(tenant_id)
        with self.store.transaction() as conn:
            return conn.execute(sql, params).rowcount > 0

    def find(self, where: Where | None = None, *, search: str | None = None, newest_first: bool = False,
             page: int = 1, per_page: int = 50) -> Page:
        page, per_page = check_page(page, per_page)
        clause, params = self._where(where or {})
        if search:
            if not self.c.search_field:
                raise ValueError(f"{self.table} has no search field")
            clause += f" AND instr(casefold(json_extract(data, '$.{self.c.search_field}')), ?) > 0"
            params.append(search.casefold())
        direction = "DESC" if newest_first else "ASC"
        with self.store.connection() as conn:
            total = conn.execute(f"SELECT count(*) FROM {self.table} WHERE {clause}", params).fetchone()[0]  # noqa: S608
            rows = conn.execute(
                f"SELECT data FROM {self.table} WHERE {clause} "  # noqa: S608
                f"ORDER BY json_extract(data, '$.created_at') {direction}, id {direction} LIMIT ? OFFSET ?",
                [*params, per_page, (page - 1) * per_page],
            ).fetchall()
        return Page([json.loads(r[0]) for r in rows], total, page, per_page)

    def delete_where(self, where: Where) -> int:
        if not where:
            raise ValueError("delete_where needs a filter")
        clause, params = self._where(where)
        with self.store.transaction() as conn:
            return conn.execute(f"DELETE FROM {self.table} WHERE {clause}", params).rowcount  # noqa: S608

    @staticmethod
    def _where(where: Where) -> tuple[str, list[Any]]:
        clauses, params = ["1 = 1"], []
        sql_ops = {"$lt": "<", "$lte": "<=", "$gt": ">", "$gte": ">=", "$ne": "IS NOT"}
        for field, cond in where.items():
            if field == "$or":
                branches = [SqliteRepository._where(branch) for branch in cond]
                clauses.append("(" + " OR ".join(f"({c})" for c, _ in branches) + ")" if branches else "0 = 1")
                for _, branch_params in branches:
                    params.extend(branch_params)
                continue
            if not _FIELD.fullmatch(field):
                raise ValueError(f"invalid field name {field!r}")
            expr = "id" if field == "id" else f"json_extract(data, '$.{field}')"
            conditions = cond.items() if isinstance(cond, Mapping) else [("$eq", cond)]
            for op, value in conditions:
                if op not in (*OPERATORS, "$eq"):
                    raise ValueError(f"unsupported operator {op!r}")
                if op == "$in":
                    values = list(value)
                    clauses.append(f"{expr} IN ({', '.join('?' * len(values))})" if values else "0 = 1")
                    params.extend(values)
                elif op == "$eq":
                    clauses.append(f"{expr} IS ?")
                    params.append(value)
                else:
                    clauses.append(f"{expr} {sql_ops[op]} ?")
                    params.append(value)
        return " AND ".join(clauses), params
