"""JobQueue contract on the in-process adapter: lanes, ack/nack, redelivery, dead letters, stopping."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from services.adapters.memory_jobs import MemoryJobQueue
from services.ports.jobs import Delivery

TIMEOUT = 5


@pytest.fixture
def queue() -> MemoryJobQueue:
    return MemoryJobQueue()


def consume_n(queue, n: int, action: Callable[[Delivery], None] = lambda d: d.ack()) -> list[Delivery]:
    """Run consume in a thread until n deliveries were handled; returns them in delivery order."""
    stop = threading.Event()
    seen: list[Delivery] = []

    def handler(delivery: Delivery) -> None:
        seen.append(delivery)
        action(delivery)
        if len(seen) >= n:
            stop.set()

    thread = threading.Thread(target=queue.consume, args=(handler, stop), daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    stop.set()
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "consume did not return after stop was set"
    assert len(seen) == n, f"expected {n} deliveries, got {len(seen)}"
    return seen


def test_publish_then_consume(queue):
    queue.publish({"video_id": "v1", "n": 1})
    queue.publish({"video_id": "v2", "n": 2})
    assert queue.pending() == 2
    seen = consume_n(queue, 2)
    assert [d.body for d in seen] == [{"video_id": "v1", "n": 1}, {"video_id": "v2", "n": 2}]
    assert [d.redelivered for d in seen] == [False, False]
    assert [d.lane for d in seen] == ["express", "express"]
    assert queue.pending() == 0


def test_consume_receives_jobs_published_while_waiting(queue):
    stop = threading.Event()
    got: list[dict] = []

    def handler(delivery):
        got.append(delivery.body)
        delivery.ack()
        stop.set()

    thread = threading.Thread(target=queue.consume, args=(handler, stop), daemon=True)
    thread.start()
    queue.publish({"late": True}, lane="bulk")
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert got == [{"late": True}]


def test_express_lane_before_bulk(queue):
    queue.publish({"id": "bulk-1"}, lane="bulk")
    queue.publish({"id": "bulk-2"}, lane="bulk")
    queue.publish({"id": "express-1"}, lane="express")
    queue.publish({"id": "express-2"})
    seen = consume_n(queue, 4)
    assert [d.body["id"] for d in seen] == ["express-1", "express-2", "bulk-1", "bulk-2"]
    assert [d.lane for d in seen] == ["express", "express", "bulk", "bulk"]


def test_unknown_lane_is_rejected(queue):
    with pytest.raises(ValueError):
        queue.publish({"x": 1}, lane="turbo")
    assert queue.pending() == 0


def test_published_body_is_a_copy(queue):
    body = {"video_id": "v1", "renditions": [360]}
    queue.publish(body)
    body["video_id"] = "changed"
    body["renditions"].append(1080)
    (delivery,) = consume_n(queue, 1)
    assert delivery.body == {"video_id": "v1", "renditions": [360]}


def test_body_must_be_json(queue):
    with pytest.raises(TypeError):
        queue.publish({"when": object()})
    assert queue.pending() == 0


def test_nack_requeue_redelivers_with_redelivered_flag(queue):
    queue.publish({"id": "job"}, lane="bulk")
    queue.publish({"id": "other"}, lane="bulk")
    calls = {"n": 0}

    def action(delivery):
        calls["n"] += 1
        if calls["n"] == 1:
            delivery.nack(requeue=True)
        else:
            delivery.ack()

    seen = consume_n(queue, 3, action)
    assert [(d.body["id"], d.redelivered) for d in seen] == [("job", False), ("job", True), ("other", False)]
    assert seen[1].lane == "bulk"  # requeued into its own lane
    assert queue.dead_letters == []
    assert queue.pending() == 0


def test_nack_without_requeue_dead_letters(queue):
    queue.publish({"id": "poison"})
    queue.publish({"id": "fine"})
    seen = consume_n(queue, 2, lambda d: d.nack(requeue=False) if d.body["id"] == "poison" else d.ack())
    assert [d.body["id"] for d in seen] == ["poison", "fine"]
    assert queue.dead_letters == [{"id": "poison"}]
    assert queue.pending() == 0


@pytest.mark.parametrize(("first", "second"), [("ack", "ack"), ("ack", "nack"), ("nack", "ack"),
                                               ("nack", "nack")])
def test_double_settle_raises(queue, first, second):
    queue.publish({"id": "once"})
    errors: list[BaseException] = []

    def action(delivery):
        if first == "ack":
            delivery.ack()
        else:
            delivery.nack(requeue=False)
        try:
            getattr(delivery, second)()
        except RuntimeError as error:
            errors.append(error)

    consume_n(queue, 1, action)
    assert len(errors) == 1
    # The second call changed nothing: no redelivery, at most the one dead letter from the first nack.
    assert queue.pending() == 0
    assert queue.dead_letters == ([{"id": "once"}] if first == "nack" else [])


def test_stop_event_ends_an_idle_consume(queue):
    stop = threading.Event()
    thread = threading.Thread(target=queue.consume, args=(lambda d: d.ack(), stop), daemon=True)
    thread.start()
    thread.join(0.3)
    assert thread.is_alive()  # blocks while there is nothing to do
    stop.set()
    thread.join(TIMEOUT)
    assert not thread.is_alive()


def test_stop_set_before_consume_delivers_nothing(queue):
    queue.publish({"id": "left"})
    stop = threading.Event()
    stop.set()
    handled: list[Delivery] = []
    queue.consume(handled.append, stop)
    assert handled == []
    assert queue.pending() == 1


def test_handler_exception_requeues_the_job(queue):
    queue.publish({"id": "flaky"})

    def explode(delivery):
        raise RuntimeError("worker crashed")

    with pytest.raises(RuntimeError, match="worker crashed"):
        queue.consume(explode, threading.Event())
    assert queue.pending() == 1
    (again,) = consume_n(queue, 1)
    assert again.body == {"id": "flaky"}
    assert again.redelivered is True
    assert queue.dead_letters == []


def test_handler_exception_after_settling_does_not_requeue(queue):
    queue.publish({"id": "done"})

    def ack_then_explode(delivery):
        delivery.ack()
        raise RuntimeError("after ack")

    with pytest.raises(RuntimeError):
        queue.consume(ack_then_explode, threading.Event())
    assert queue.pending() == 0


def test_competing_consumers_each_job_exactly_once(queue):
    total = 200
    for i in range(total):
        queue.publish({"i": i}, lane="bulk" if i % 3 else "express")
    stop = threading.Event()
    lock = threading.Lock()
    got: list[int] = []

    def handler(delivery):
        with lock:
            got.append(delivery.body["i"])
            if len(got) >= total:
                stop.set()
        delivery.ack()

    threads = [threading.Thread(target=queue.consume, args=(handler, stop), daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    stop.set()
    assert not any(t.is_alive() for t in threads)
    assert sorted(got) == list(range(total))


def _one(queue, lanes=("express", "bulk"), timeout=3.0):
    got, stop = [], threading.Event()

    def handler(delivery):
        got.append(delivery)
        stop.set()
        delivery.ack()

    worker = threading.Thread(target=queue.consume, args=(handler, stop), kwargs={"lanes": lanes})
    worker.start()
    worker.join(timeout)
    stop.set()
    worker.join()
    return got[0] if got else None


def test_consumers_can_be_limited_to_lanes():
    queue = MemoryJobQueue()
    queue.publish({"n": "long"}, lane="bulk")
    assert _one(queue, lanes=("express",), timeout=0.5) is None  # an express-only consumer leaves bulk alone
    queue.publish({"n": "short"}, lane="express")
    assert _one(queue, lanes=("express",)).body == {"n": "short"}
    assert _one(queue, lanes=("bulk",)).body == {"n": "long"}


def test_retry_redelivers_after_the_delay_with_the_next_attempt():
    queue = MemoryJobQueue()
    queue.publish({"n": 1})
    stop, seen = threading.Event(), []

    def handler(delivery):
        seen.append((delivery.attempt, delivery.redelivered, time.monotonic()))
        if delivery.attempt < 3:
            delivery.retry(0.2)
        else:
            delivery.ack()
            stop.set()

    worker = threading.Thread(target=queue.consume, args=(handler, stop))
    worker.start()
    worker.join(5)
    stop.set()
    assert [(a, r) for a, r, _ in seen] == [(1, False), (2, True), (3, True)]
    assert seen[1][2] - seen[0][2] >= 0.19 and seen[2][2] - seen[1][2] >= 0.19


def test_unknown_lanes_are_refused():
    with pytest.raises(ValueError):
        MemoryJobQueue().consume(lambda d: None, threading.Event(), lanes=("urgent",))
