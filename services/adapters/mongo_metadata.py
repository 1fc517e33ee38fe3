"""MongoDB metadata adapter (pymongo): `_id` is the record id, unique constraints are unique indexes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pymongo
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

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
    check_page,
    stamp_new,
    utcnow_iso,
)


class MongoMetadataStore(MetadataStore):
    def __init__(self, url: str | None = None, *, client: Any = None, database: str | None = None):
        if client is None:
            client = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000)
        if database is None and url:
            database = pymongo.uri_parser.parse_uri(url).get("database")
        self.client = client
        self.db = client[database or "reelhouse"]
        for name, collection in COLLECTIONS.items():
            repo = MongoRepository(self.db[name], collection)
            repo.ensure_indexes()
            setattr(self, name, repo)

    def ping(self) -> None:
        self.db.command("ping")

    def close(self) -> None:
        self.client.close()


def _out(doc: Mapping[str, Any] | None) -> dict | None:
    if doc is None:
        return None
    record = {k: v for k, v in doc.items() if k != "_id"}
    return {"id": doc["_id"], **record}


class MongoRepository(Repository):
    def __init__(self, coll: Any, collection: Collection):
        self.coll = coll
        self.c = collection

    def ensure_indexes(self) -> None:
        self.coll.create_index([("created_at", 1), ("_id", 1)], name="ix_order")
        for fields in self.c.unique:
            self.coll.create_index([(f, 1) for f in fields], unique=True, name="ux_" + "_".join(fields))
        for fields in self.c.indexes:
            self.coll.create_index([(f, 1) for f in fields], name="ix_" + "_".join(fields))

    def _duplicate(self, record: Mapping[str, Any], exclude_id: str | None = None) -> DuplicateKey:
        for fields in self.c.unique:
            query = {f: record.get(f) for f in fields}
            if exclude_id is not None:
                query["_id"] = {"$ne": exclude_id}
            if self.coll.find_one(query) is not None:
                return DuplicateKey(self.c.name, fields)
        return DuplicateKey(self.c.name, ("id",))

    def _scope(self, record_id: str, tenant_id: str | None) -> dict:
        query: dict[str, Any] = {"_id": record_id}
        if tenant_id is not None:
            query["tenant_id"] = tenant_id
        return query

    def add(self, record: dict) -> dict:
        record = stamp_new(record)
        doc = {"_id": record["id"], **{k: v for k, v in record.items() if k != "id"}}
        try:
            self.coll.insert_one(doc)
        except DuplicateKeyError:
            raise self._duplicate(record) from None
        return record

    def get(self, record_id: str, *, tenant_id: str | None = None) -> dict | None:
        return _out(self.coll.find_one(self._scope(record_id, tenant_id)))

    def update(self, record_id: str, changes: Mapping[str, Any], *, tenant_id: str | None = None,
               expected_version: int | None = None) -> dict:
        if "id" in changes and changes["id"] != record_id:
            raise ValueError("a record's id cannot change")
        query = self._scope(record_id, tenant_id)
        if expected_version is not None:
            query["version"] = expected_version
        to_set = {k: v for k, v in changes.items() if k not in ("id", "version")}
        to_set["updated_at"] = utcnow_iso()
        try:
            doc = self.coll.find_one_and_update(query, {"$set": to_set, "$inc": {"version": 1}},
                                                return_document=ReturnDocument.AFTER)
        except DuplicateKeyError:
            # A unique key can span fields the change does not touch (users: tenant_id, email).
            current = self.coll.find_one({"_id": record_id}) or {}
            raise self._duplicate({**current, **changes}, exclude_id=record_id) from None
        if doc is None:
            current = self.get(record_id, tenant_id=tenant_id)
            if current is None:
                raise RecordNotFound(f"{self.c.name}/{record_id}")
            raise VersionConflict(f"{self.c.name}/{record_id} is at version {current['version']}")
        return _out(doc)

    def delete(self, record_id: str, *, tenant_id: str | None = None) -> bool:
        return self.coll.delete_one(self._scope(record_id, tenant_id)).deleted_count > 0

    def find(self, where: Where | None = None, *, search: str | None = None, newest_first: bool = False,
             page: int = 1, per_page: int = 50) -> Page:
        page, per_page = check_page(page, per_page)
        query = self._query(where or {})
        if search:
            if not self.c.search_field:
                raise ValueError(f"{self.c.name} has no search field")
            text = {self.c.search_field: {"$regex": re.escape(search), "$options": "i"}}
            query = {"$and": [query, text]} if self.c.search_field in query else {**query, **text}
        direction = pymongo.DESCENDING if newest_first else pymongo.ASCENDING
        total = self.coll.count_documents(query)
        cursor = (self.coll.find(query).sort([("created_at", direction), ("_id", direction)])
                  .skip((page - 1) * per_page).limit(per_page))
        return Page([_out(d) for d in cursor], total, page, per_page)

    def delete_where(self, where: Where) -> int:
        if not where:
            raise ValueError("delete_where needs a filter")
        return self.coll.delete_many(self._query(where)).deleted_count

    @staticmethod
    def _query(where: Where) -> dict:
        query: dict[str, Any] = {}
        for field, cond in where.items():
            if field == "$or":
                query["$or"] = [MongoRepository._query(branch) for branch in cond] or [{"_id": {"$in": []}}]
                continue
            key = "_id" if field == "id" else field
            if isinstance(cond, Mapping):
                unknown = set(cond) - set(OPERATORS)
                if unknown:
                    raise ValueError(f"unsupported operator {sorted(unknown)[0]!r}")
                query[key] = {op: (list(v) if op == "$in" else v) for op, v in cond.items()}
            else:
                query[key] = cond
        return query
