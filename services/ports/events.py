"""Event bus port: fan-out of domain events (every subscriber gets every matching event)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

Handler = Callable[[str, dict[str, Any]], None]


class Subscription(ABC):
    @abstractmethod
    def close(self) -> None: ...


class EventBus(ABC):
    @abstractmethod
    def publish(self, topic: str, event: dict[str, Any]) -> None: ...

    @abstractmethod
    def subscribe(self, handler: Handler, pattern: str = "#") -> Subscription:
        """AMQP topic patterns: '*' matches one dot-separated word, '#' zero or more."""

    def ping(self) -> None:  # noqa: B027 - optional hook
        pass

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


def topic_matches(pattern: str, topic: str) -> bool:
    def match(p: list[str], t: list[str]) -> bool:
        if not p:
            return not t
        if p[0] == "#":
            return any(match(p[1:], t[i:]) for i in range(len(t) + 1))
        if not t:
            return False
        return (p[0] == "*" or p[0] == t[0]) and match(p[1:], t[1:])

    return match(pattern.split("."), topic.split("."))
