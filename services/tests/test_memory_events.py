"""EventBus contract on the in-process adapter, and AMQP topic pattern matching."""

from __future__ import annotations

import logging

import pytest

from services.adapters.memory_events import MemoryEventBus
from services.ports.events import topic_matches


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("video.ready", "video.ready", True),
        ("video.ready", "video.failed", False),
        ("video", "video.ready", False),
        ("video.ready", "video", False),
        # '*' is exactly one word
        ("video.*", "video.ready", True),
        ("video.*", "video", False),
        ("video.*", "video.ready.hd", False),
        ("*.ready", "video.ready", True),
        ("*.ready", "ready", False),
        ("*", "video", True),
        ("*", "video.ready", False),
        ("tenant.*.video.*", "tenant.t1.video.progress", True),
        ("tenant.*.video.*", "tenant.t1.user.progress", False),
        ("a.*.z", "a.z", False),
        # '#' is zero or more words
        ("#", "video", True),
        ("#", "tenant.t1.video.v1.progress", True),
        ("video.#", "video", True),
        ("video.#", "video.ready", True),
        ("video.#", "video.ready.hd.extra", True),
        ("video.#", "videos.ready", False),
        ("#.ready", "ready", True),
        ("#.ready", "tenant.t1.video.ready", True),
        ("#.ready", "tenant.t1.video.ready.not", False),
        ("a.#.z", "a.z", True),
        ("a.#.z", "a.b.c.z", True),
        ("a.#.z", "a.b.c", False),
        ("#.b.#", "a.b.c", True),
        ("#.b.#", "b", True),
        ("#.b.#", "a.c", False),
        ("*.#", "a", True),
        ("*.#", "a.b.c", True),
        ("#.*", "a.b", True),
        # words are compared whole, not as substrings or globs
        ("vid*", "video", False),
        ("video.ready", "video.readyx", False),
    ],
)
def test_topic_matches(pattern, topic, expected):
    assert topic_matches(pattern, topic) is expected


@pytest.fixture
def bus() -> MemoryEventBus:
    return MemoryEventBus()


class Recorder:
    def __init__(self):
        self.events: list[tuple[str, dict]] = []

    def __call__(self, topic: str, event: dict) -> None:
        self.events.append((topic, event))

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
    assert everything.topics == ["video.ready", "video.progress", "user.created"]
    assert videos.topics == ["video.ready", "video.progress"]
    assert progress.events == [("video.progress", {"id": "v1", "percent": 50})]


def test_publish_without_subscribers_is_fine(bus):
    bus.publish("nobody.listens", {"x": 1})


def test_close_stops_delivery(bus):
    first, second = Recorder(), Recorder()
    subscription = bus.subscribe(first, "video.*")
    bus.subscribe(second, "video.*")
    bus.publish("video.ready", {"n": 1})
    subscription.close()
    bus.publish("video.ready", {"n": 2})
    subscription.close()  # closing twice is harmless
    assert first.events == [("video.ready", {"n": 1})]
    assert second.events == [("video.ready", {"n": 1}), ("video.ready", {"n": 2})]


def test_same_handler_twice_is_two_subscriptions(bus):
    recorder = Recorder()
    one = bus.subscribe(recorder, "a")
    bus.subscribe(recorder, "a")
    bus.publish("a", {})
    assert len(recorder.events) == 2
    one.close()
    bus.publish("a", {})
    assert len(recorder.events) == 3


def test_failing_handler_does_not_affect_other_subscribers(bus, caplog):
    before, after = Recorder(), Recorder()

    def broken(topic, event):
        raise RuntimeError("handler bug")

    bus.subscribe(before)
    bus.subscribe(broken)
    bus.subscribe(after)
    with caplog.at_level(logging.ERROR):
        bus.publish("video.ready", {"id": "v1"})  # does not raise
    assert before.events == [("video.ready", {"id": "v1"})]
    assert after.events == [("video.ready", {"id": "v1"})]
    assert any("handler" in r.getMessage() for r in caplog.records)
    bus.publish("video.ready", {"id": "v2"})  # the bus still works afterwards
    assert after.topics == ["video.ready", "video.ready"]


def test_subscribers_get_independent_copies(bus):
    seen: list[dict] = []

    def mutator(topic, event):
        event["id"] = "hijacked"
        event["nested"]["list"].append("added")

    bus.subscribe(mutator)
    bus.subscribe(lambda topic, event: seen.append(event))
    published = {"id": "v1", "nested": {"list": [1]}}
    bus.publish("video.ready", published)
    assert seen == [{"id": "v1", "nested": {"list": [1]}}]
    assert published == {"id": "v1", "nested": {"list": [1]}}  # the publisher's dict is untouched too
    seen[0]["id"] = "changed later"
    bus.publish("video.ready", published)
    assert seen[1]["id"] == "v1"


def test_events_must_be_json(bus):
    recorder = Recorder()
    bus.subscribe(recorder)
    with pytest.raises(TypeError):
        bus.publish("video.ready", {"when": object()})
    assert recorder.events == []


def test_handler_may_unsubscribe_or_subscribe_during_delivery(bus):
    late = Recorder()
    box = {}

    def once(topic, event):
        box["subscription"].close()
        bus.subscribe(late, "x")

    box["subscription"] = bus.subscribe(once, "x")
    bus.publish("x", {"n": 1})  # must not deadlock
    bus.publish("x", {"n": 2})
    assert late.events == [("x", {"n": 2})]
