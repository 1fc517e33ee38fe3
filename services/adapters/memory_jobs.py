"""In-process job queue for embedded mode: express lane before bulk, ack/nack, delayed retries, dead letters.

Not durable by itself: embedded mode re-enqueues unfinished videos at start (see the worker's recovery)."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from services.ports.jobs import LANES, Delivery, JobQueue


class _MemoryDelivery(Delivery):
    def __init__(self, queue: MemoryJobQueue, body: dict, lane: str, redelivered: bool, attempt: int):
        self.queue, self.body, self.lane, self.redelivered, self.attempt = queue, body, lane, redelivered, attempt
        self.settled = False
        self._lock = threading.Lock()

    def _settle(self) -> None:
        with self._lock:
            if self.settled:
                raise RuntimeError("delivery already settled")
            self.settled = True

    def ack(self) -> None:
        self._settle()

    def nack(self, requeue: bool = True) -> None:
        self._settle()
        if requeue:
            self.queue._put(self.lane, self.body, True, self.attempt + 1, front=True)
        else:
            with self.queue._cond:
                self.queue.dead_letters.append(self.body)

    def release(self) -> None:
        self._settle()
        self.queue._put(self.lane, self.body, True, self.attempt, front=True)

    def retry(self, delay: float) -> None:
        self._settle()
        timer = threading.Timer(delay, self.queue._put, (self.lane, self.body, True, self.attempt + 1))
        timer.daemon = True
        timer.start()


class MemoryJobQueue(JobQueue):
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._lanes: dict[str, deque] = {lane: deque() for lane in LANES}
        self.dead_letters: list[dict] = []

    def _put(self, lane: str, body: dict, redelivered: bool, attempt: int, front: bool = False) -> None:
        with self._cond:
            item = (body, redelivered, attempt)
            self._lanes[lane].appendleft(item) if front else self._lanes[lane].append(item)
            self._cond.notify_all()

    def publish(self, body: dict[str, Any], *, lane: str = "express") -> None:
        if lane not in LANES:
            raise ValueError(f"unknown lane {lane!r}")
        self._put(lane, json.loads(json.dumps(body)), False, 1)

    def _take(self, stop: threading.Event, lanes: Sequence[str]) -> _MemoryDelivery | None:
        with self._cond:
            while not stop.is_set():
                for lane in LANES:
                    if lane in lanes and self._lanes[lane]:
                        body, redelivered, attempt = self._lanes[lane].popleft()
                        return _MemoryDelivery(self, body, lane, redelivered, attempt)
                self._cond.wait(0.2)
        return None

    def consume(self, handler: Callable[[Delivery], None], stop: threading.Event,
                lanes: Sequence[str] = LANES) -> None:
        unknown = set(lanes) - set(LANES)
        if unknown:
            raise ValueError(f"unknown lanes {sorted(unknown)}")
        while (delivery := self._take(stop, lanes)) is not None:
            try:
                handler(delivery)
            finally:
                if not delivery.settled:
                    delivery.nack(requeue=True)

    def pending(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._lanes.values())
