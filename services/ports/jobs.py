"""Job queue port: durable work items with explicit ack/nack, delayed retries and dead-lettering."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

LANES = ("express", "bulk")
"""Short sources go express so they never wait behind long ones in bulk."""


class Delivery(ABC):
    """One delivered job. Exactly one of ack(), nack() or retry() settles it; any thread may call them."""

    body: dict[str, Any]
    redelivered: bool
    lane: str
    attempt: int
    """1 for the first delivery; counts redeliveries and retries."""

    @abstractmethod
    def ack(self) -> None: ...

    @abstractmethod
    def nack(self, requeue: bool = True) -> None:
        """Hand the job back now (requeue=True), or give it up: it goes to the dead-letter queue."""

    @abstractmethod
    def retry(self, delay: float) -> None:
        """Settle this delivery and deliver the job again after `delay` seconds, with attempt + 1."""

    @abstractmethod
    def release(self) -> None:
        """Hand the job back without spending an attempt (a graceful shutdown, e.g. an autoscaler scaling in):
        it is delivered again at once with the same attempt. A crash still counts, through nack/redelivery."""


class JobQueue(ABC):
    @abstractmethod
    def publish(self, body: dict[str, Any], *, lane: str = "express") -> None:
        """Returns once the job is safely stored (publisher confirm on RabbitMQ)."""

    @abstractmethod
    def consume(self, handler: Callable[[Delivery], None], stop: threading.Event,
                lanes: Sequence[str] = LANES) -> None:
        """Call handler for one job at a time from `lanes` (express first) until stop is set. Blocks.

        The handler may settle the delivery itself or return; a job the handler leaves unsettled is handed back.
        Several consumers (threads or processes) share the work."""

    @abstractmethod
    def pending(self) -> int:
        """Jobs waiting in the lane queues (not in flight): the depth an autoscaler (KEDA) scales workers on."""

    def ping(self) -> None:  # noqa: B027 - optional hook
        pass

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
