"""In-process event bus for embedded mode: synchronous fan-out to every matching subscriber."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from services.ports.events import EventBus, Handler, Subscription, topic_matches

log = logging.getLogger(__name__)


class _MemorySubscription(Subscription):
    def __init__(self, bus: MemoryEventBus, handler: Handler, pattern: str):
        self.bus, self.handler, self.pattern = bus, handler, pattern

    def close(self) -> None:
        self.bus._remove(self)


class MemoryEventBus(EventBus):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: list[_MemorySubscription] = []

    def publish(self, topic: str, event: dict[str, Any]) -> None:
        payload = json.dumps(event)  # same rule as on the wire: events must be JSON
        with self._lock:
            targets = [s for s in self._subscriptions if topic_matches(s.pattern, topic)]
        for subscription in targets:
            try:
                subscription.handler(topic, json.loads(payload))
            except Exception:
                log.exception("event handler failed", extra={"topic": topic})

    def subscribe(self, handler: Handler, pattern: str = "#") -> Subscription:
        subscription = _MemorySubscription(self, handler, pattern)
        with self._lock:
            self._subscriptions.append(subscription)
        return subscription

    def _remove(self, subscription: _MemorySubscription) -> None:
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)
