"""In-process job queue (not durable): express lane before bulk, ack/nack with redelivery."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from services.ports.jobs import LANES, Delivery, JobQueue


class _MemoryDelivery(Delivery):
    def __init__(self, queue: MemoryJobQueue, body: dict, lane: str, redelivered: bool):
        self.queue, self.body, self.lane, self.redelivered = queue, body, lane, redelivered
        self.settled = False

    def _settle(self) -> None:
        if self.settled:
            raise RuntimeError("delivery already settled")
        self.settled = True

    def ack(self) -> None:
        self._settle()

    def nack(self, requeue: bool = True) -> None:
        self._settle()
        with self.queue._cond:
            if requeue:
                self.queue._lanes[self.lane].appendleft((self.body, True))
                self.queue._cond.notify()
            else:
                self.queue.dead_letters.append(self.body)


class MemoryJobQueue(JobQueue):
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._lanes: dict[str, deque] = {lane: deque() for lane in LANES}
        self.dead_letters: list[dict] = []

    def publish(self, body: dict[str, Any], *, lane: str = "express") -> None:
        if lane not in LANES:
            raise ValueError(f"unknown lane {lane!r}")
        copy = json.loads(json.dumps(body))
        with self._cond:
            self._lanes[lane].append((copy, False))
            self._cond.notify()

    def _take(self, stop: threading.Event) -> _MemoryDelivery | None:
        with self._cond:
            while not stop.is_set():
                for lane in LANES:
                    if self._lanes[lane]:
                        body, redelivered = self._lanes[lane].popleft()
                        return _MemoryDelivery(self, body, lane, redelivered)
                self._cond.wait(0.2)
        return None

    def consume(self, handler: Callable[[Delivery], None], stop: threading.Event) -> None:
        while (delivery := self._take(stop)) is not None:
            try:
                handler(delivery)
            except Exception:
                if not delivery.settled:
                    delivery.nack(requeue=True)
                raise

    def pending(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._lanes.values())
