"""Metadata port: one repository per record kind, behind a MetadataStore.

Every record is a JSON-able dict with `id`, `version` (bumped on each update, used for
compare-and-set), `created_at` and `updated_at` (ISO 8601 UTC, sortable as text) and, for every
kind but tenants, `tenant_id`.
"""

from __future__ import annotations

import base64
import secrets
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


class MetadataError(Exception):
    """Base class of the typed errors every adapter raises."""


class DuplicateKey(MetadataError):
    def __init__(self, collection: str, fields: tuple[str, ...]):
        super().__init__(f"{collection}: a record with the same {', '.join(fields)} exists")
        self.collection = collection
        self.fields = fields


class RecordNotFound(MetadataError):
    pass


class VersionConflict(MetadataError):
    """The record changed since it was read (compare-and-set failed)."""


@dataclass(frozen=True)
class Collection:
    """What both adapters need to know of a record kind: uniqueness and the fields queried often."""

    name: str
    unique: tuple[tuple[str, ...], ...] = ()
    indexes: tuple[tuple[str, ...], ...] = ()
    search_field: str | None = None


COLLECTIONS: dict[str, Collection] = {
    c.name: c
    for c in (
        Collection("tenants", unique=(("name_key",),)),
        Collection("users", unique=(("tenant_id", "email"),), indexes=(("email",),)),
        Collection("videos", indexes=(("tenant_id", "status"), ("tenant_id", "created_at")),
                   search_field="title"),
        Collection("uploads", indexes=(("tenant_id",), ("expires_at",))),
        Collection("refresh_tokens", unique=(("token_hash",),), indexes=(("family_id",), ("user_id",))),
        Collection("webhooks", indexes=(("tenant_id",),)),
        Collection("webhook_deliveries", indexes=(("webhook_id",), ("status", "next_attempt_at"))),
    )
}


@dataclass
class Page:
    items: list[dict]
    total: int
    page: int
    per_page: int


Where = Mapping[str, Any]
"""Field filters: `{"f": v}` equality (None matches a missing/null field),
`{"f": {"$lt"|"$lte"|"$gt"|"$gte"|"$ne": v}}` or `{"f": {"$in": [...]}}`; `{"$or": [where, ...]}` matches
any branch."""

OPERATORS = ("$lt", "$lte", "$gt", "$gte", "$ne", "$in")


class Repository(ABC):
    """Records of one kind. `tenant_id=` on a call scopes it: another tenant's record is invisible."""

    @abstractmethod
    def add(self, record: dict) -> dict:
        """Store a new record (id and timestamps filled in if absent); DuplicateKey on a unique clash."""

    @abstractmethod
    def get(self, record_id: str, *, tenant_id: str | None = None) -> dict | None: ...

    @abstractmethod
    def update(self, record_id: str, changes: Mapping[str, Any], *, tenant_id: str | None = None,
               expected_version: int | None = None) -> dict:
        """Apply top-level changes atomically; RecordNotFound, VersionConflict, DuplicateKey."""

    @abstractmethod
    def delete(self, record_id: str, *, tenant_id: str | None = None) -> bool: ...

    @abstractmethod
    def find(self, where: Where | None = None, *, search: str | None = None, newest_first: bool = False,
             page: int = 1, per_page: int = 50) -> Page:
        """Records matching `where` (and `search` in the kind's search field, case-insensitive),
        ordered by (created_at, id) — a stable order across pages."""

    @abstractmethod
    def delete_where(self, where: Where) -> int: ...

    def find_one(self, where: Where) -> dict | None:
        items = self.find(where, per_page=1).items
        return items[0] if items else None


class MetadataStore(ABC):
    tenants: Repository
    users: Repository
    videos: Repository
    uploads: Repository
    refresh_tokens: Repository
    webhooks: Repository
    webhook_deliveries: Repository

    @abstractmethod
    def ping(self) -> None:
        """Raise if the store cannot be reached (used by /readyz)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


def new_id() -> str:
    """16 lowercase characters of [a-z2-7]: safe in URLs, object keys and file names."""
    return base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()


def utcnow_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stamp_new(record: Mapping[str, Any]) -> dict:
    now = utcnow_iso()
    out = dict(record)
    out.setdefault("id", new_id())
    out.setdefault("created_at", now)
    out["updated_at"] = out.get("updated_at") or now
    out["version"] = 1
    return out


def apply_changes(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict:
    if "id" in changes and changes["id"] != current["id"]:
        raise ValueError("a record's id cannot change")
    out = dict(current)
    out.update({k: v for k, v in changes.items() if k not in ("version",)})
    out["version"] = int(current["version"]) + 1
    out["updated_at"] = utcnow_iso()
    return out


def check_page(page: int, per_page: int) -> tuple[int, int]:
    if page < 1 or per_page < 1:
        raise ValueError("page and per_page start at 1")
    return page, per_page
