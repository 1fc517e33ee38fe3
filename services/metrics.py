"""Prometheus metric sets created once per registry: several apps (the embedded gateway mounts every service)
and threads share one `Dependencies.registry`, and a second registration of a name would raise."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import CollectorRegistry

T = TypeVar("T")

_lock = threading.Lock()
_made: dict[tuple[int, str], object] = {}


def per_registry(registry: CollectorRegistry, name: str, make: Callable[[CollectorRegistry], T]) -> T:
    """`make(registry)` the first time `name` is asked for on this registry; the same object afterwards."""
    key = (id(registry), name)
    with _lock:
        if key not in _made:
            _made[key] = make(registry)
        return _made[key]  # type: ignore[return-value]
