"""Ports: the small interfaces services depend on; adapters in services.adapters implement them."""

from services.ports.events import EventBus, Subscription
from services.ports.jobs import Delivery, JobQueue
from services.ports.metadata import (
    COLLECTIONS,
    DuplicateKey,
    MetadataStore,
    Page,
    RecordNotFound,
    Repository,
    VersionConflict,
)
from services.ports.objects import InvalidKey, MultipartUploads, ObjectInfo, ObjectNotFound, ObjectStore

__all__ = [
    "COLLECTIONS", "Delivery", "DuplicateKey", "EventBus", "InvalidKey", "JobQueue", "MetadataStore",
    "MultipartUploads", "ObjectInfo", "ObjectNotFound", "ObjectStore", "Page", "RecordNotFound",
    "Repository", "Subscription", "VersionConflict",
]
