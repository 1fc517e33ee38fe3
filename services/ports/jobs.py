"""Job queue port: durable work items with explicit ack/nack and redelivery."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

LANES = ("express", "bulk")
"""Short sources go express so they never wait behind long ones in bulk."""


class Delivery(ABC):
    """One delivered job. Exactly one of ack() or nack() settles it."""

    body: dict[str, Any]
    redelivered: bool
    lane: str

    @abstractmethod
    def ack(self) -> None: ...

    @abstractmethod
    def nack(self, requeue: bool = True) -> None:
        """Hand the job back (requeue=True) or give it up (dead-letter where the adapter has one)."""


class JobQueue(ABC):
    @abstractmethod
    def publish(self, body: dict[str, Any], *, lane: str = "express") -> None:
        """Returns once the job is safely stored (publisher confirm on RabbitMQ)."""

    @abstractmethod
    def consume(self, handler: Callable[[Delivery], None], stop: threading.Event) -> None:
        """Call handler for each job until stop is set; express before bulk. Blocks."""

    def ping(self) -> None:  # noqa: B027 - optional hook
        pass

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
