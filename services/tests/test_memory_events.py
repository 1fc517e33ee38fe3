"""AMQP topic pattern matching and in-process bus specifics; the shared behaviour is in test_event_bus_contract.py."""

from __future__ import annotations

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


def test_delivery_is_synchronous_and_reentrant():
    """The in-process bus calls handlers inside publish(); a handler may (un)subscribe without deadlocking and a
    subscription made during a delivery does not receive that same event."""
    bus = MemoryEventBus()
    late: list[tuple[str, dict]] = []
    box = {}

    def once(topic, event):
        box["subscription"].close()
        bus.subscribe(lambda t, e: late.append((t, e)), "x")

    box["subscription"] = bus.subscribe(once, "x")
    bus.publish("x", {"n": 1})
    assert late == []
    bus.publish("x", {"n": 2})
    assert late == [("x", {"n": 2})]  # already there when publish() returned
