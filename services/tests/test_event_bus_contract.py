"""EventBus contract, run against every adapter: the in-process bus and RabbitMQ (the real broker, a unique
namespace per test, its exchange deleted afterwards).

The in-process bus delivers inside publish(); RabbitMQ delivers on each subscription's consumer thread a moment
later, so tests wait for what they expect (`Recorder.wait`) and check for the absence of an event only once a later
event has arrived on the same subscription or the subscription is closed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from urllib.parse import urlsplit

import pytest

from services.adapters.memory_events import MemoryEventBus
from services.testing import require_infra

TIMEOUT = 5
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def broker_reachable(url: str = RABBITMQ_URL) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), timeout=1):
            return True
    except OSError:
        return False


def open_rabbit_bus(namespace: str | None = None, **options):
    from services.adapters.rabbitmq_events import RabbitEventBus

    if not broker_reachable():
        require_infra(f"RabbitMQ on {urlsplit(RABBITMQ_URL).netloc}")
    return RabbitEventBus(RABBITMQ_URL, namespace=namespace or f"test-{uuid.uuid4().hex[:12]}", **options)


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.infra)])
def bus(request):
    if request.param == "memory":
        yield MemoryEventBus()
        return
    bus = open_rabbit_bus()
    try:
        yield bus
    finally:
        bus.close()
        bus.delete_topology()


class Recorder:
    def __init__(self):
        self.events: list[tuple[str, dict]] = []
        self._cond = threading.Condition()

    def __call__(self, topic: str, event: dict) -> None:
        with self._cond:
            self.events.append((topic, event))
            self._cond.notify_all()

    def wait(self, n: int, timeout: float = TIMEOUT) -> list[tuple[str, dict]]:
        """The events once there are at least n (or when the time is up)."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.events) >= n, timeout)
            return list(self.events)

    @property
    def topics(self) -> list[str]:
        return [t for t, _ in self.events]


def test_subscribers_get_matching_events_in_order(bus):
    everything, videos, progress = Recorder(), Recorder(), Recorder()
    bus.subscribe(everything)  # default pattern '#'
    bus.subscribe(videos, "video.#")
    bus.subscribe(progress, "*.progress")
    bus.publish("video.ready", {"id": "v1"})
    bus.publish("video.progress", {"id": "v1", "percent": 50})
    bus.publish("user.created", {"id": "u1"})
    assert [t for t, _ in everything.wait(3)] == ["video.ready", "video.progress", "user.created"]
    # Each queue keeps the publisher's order, so the last event `everything` saw has been routed everywhere.
    assert [t for t, _ in videos.wait(2)] == ["video.ready", "video.progress"]
    assert progress.wait(1) == [("video.progress", {"id": "v1", "percent": 50})]
    bus.publish("video.progress", {"id": "v1", "percent": 60})
    assert len(progress.wait(2)) == 2
    assert videos.wait(3)[2:] == [("video.progress", {"id": "v1", "percent": 60})]  # user.created never came


def test_publish_without_subscribers_is_fine(bus):
    bus.publish("nobody.listens", {"x": 1})


def test_close_stops_delivery(bus):
    first, second = Recorder(), Recorder()
    subscription = bus.subscribe(first, "video.*")
    bus.subscribe(second, "video.*")
    bus.publish("video.ready", {"n": 1})
    first.wait(1)
    second.wait(1)
    subscription.close()
    bus.publish("video.ready", {"n": 2})
    subscription.close()  # closing twice is harmless
    assert second.wait(2) == [("video.ready", {"n": 1}), ("video.ready", {"n": 2})]
    assert first.events == [("video.ready", {"n": 1})]


def test_same_handler_twice_is_two_subscriptions(bus):
    recorder = Recorder()
    one = bus.subscribe(recorder, "a")
    bus.subscribe(recorder, "a")
    bus.publish("a", {})
    assert len(recorder.wait(2)) == 2
    one.close()
    bus.publish("a", {"last": True})
    recorder.wait(3)
    time.sleep(0.2 if not isinstance(bus, MemoryEventBus) else 0)
    assert len(recorder.events) == 3


def test_failing_handler_does_not_affect_other_subscribers(bus, caplog):
    before, after = Recorder(), Recorder()
    failed = threading.Event()

    def broken(topic, event):
        failed.set()
        raise RuntimeError("handler bug")

    bus.subscribe(before)
    bus.subscribe(broken)
    bus.subscribe(after)
    with caplog.at_level(logging.ERROR):
        bus.publish("video.ready", {"id": "v1"})  # does not raise
        assert before.wait(1) == [("video.ready", {"id": "v1"})]
        assert after.wait(1) == [("video.ready", {"id": "v1"})]
        assert failed.wait(TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while not any("handler" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.02)
    assert any("handler" in r.getMessage() for r in caplog.records)
    bus.publish("video.ready", {"id": "v2"})  # the bus still works afterwards
    assert [t for t, _ in after.wait(2)] == ["video.ready", "video.ready"]


def test_subscribers_get_independent_copies(bus):
    seen = Recorder()
    mutated = Recorder()

    def mutator(topic, event):
        event["id"] = "hijacked"
        event["nested"]["list"].append("added")
        mutated(topic, event)

    bus.subscribe(mutator)
    bus.subscribe(seen)
    published = {"id": "v1", "nested": {"list": [1]}}
    bus.publish("video.ready", published)
    mutated.wait(1)
    assert seen.wait(1) == [("video.ready", {"id": "v1", "nested": {"list": [1]}})]
    assert published == {"id": "v1", "nested": {"list": [1]}}  # the publisher's dict is untouched too
    seen.events[0][1]["id"] = "changed later"
    bus.publish("video.ready", published)
    assert seen.wait(2)[1][1]["id"] == "v1"


def test_events_must_be_json(bus):
    recorder = Recorder()
    bus.subscribe(recorder)
    with pytest.raises(TypeError):
        bus.publish("video.ready", {"when": object()})
    bus.publish("video.after", {})
    assert recorder.wait(1) == [("video.after", {})]


def test_handler_may_unsubscribe_or_subscribe_during_delivery(bus):
    late = Recorder()
    box = {}
    resubscribed = threading.Event()

    def once(topic, event):
        box["subscription"].close()
        bus.subscribe(late, "x")
        resubscribed.set()

    box["subscription"] = bus.subscribe(once, "x")
    bus.publish("x", {"n": 1})  # must not deadlock
    assert resubscribed.wait(TIMEOUT)
    bus.publish("x", {"n": 2})
    assert late.wait(1) == [("x", {"n": 2})]
