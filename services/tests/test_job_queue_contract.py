"""JobQueue contract, run against every adapter: the in-process queue and RabbitMQ (the real broker, a unique
namespace per test whose queues and exchange are deleted afterwards).

RabbitMQ settles asynchronously (an ack travels to the broker, dead-lettering is a hop away), so checks of queue
state go through `JobsUnderTest`, which waits for the expected state on the broker and returns immediately on the
in-process queue.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from services.adapters.memory_jobs import MemoryJobQueue
from services.ports.jobs import Delivery, JobQueue
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


def eventually(read: Callable[[], object], expected: object, timeout: float = TIMEOUT) -> object:
    """`read()` once it returns `expected`, or its last value when the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if value == expected or time.monotonic() >= deadline:
            return value
        time.sleep(0.05)


class JobsUnderTest:
    def __init__(self, queue: JobQueue, kind: str):
        self.queue, self.kind = queue, kind

    def pending(self, expected: int | None = None) -> int:
        return self.queue.pending() if expected is None else eventually(self.queue.pending, expected)

    def dead_letters(self, expected: list[dict] | None = None) -> list[dict]:
        if self.kind == "memory":
            return list(self.queue.dead_letters)
        return eventually(self._broker_dead_letters, expected) if expected is not None else \
            self._broker_dead_letters()

    def _broker_dead_letters(self) -> list[dict]:
        """Browse the dead-letter queue: get everything unacknowledged, then close the channel (all requeued)."""
        import json

        import pika

        connection = pika.BlockingConnection(pika.URLParameters(self.queue.url))
        try:
            channel = connection.channel()
            bodies = []
            while True:
                method, _properties, body = channel.basic_get(self.queue.dead_letter_queue, auto_ack=False)
                if method is None:
                    return bodies
                bodies.append(json.loads(body))
        finally:
            connection.close()


def open_rabbit_jobs(**options):
    from services.adapters.rabbitmq_jobs import RabbitJobQueue

    if not broker_reachable():
        require_infra(f"RabbitMQ on {urlsplit(RABBITMQ_URL).netloc}")
    return RabbitJobQueue(RABBITMQ_URL, namespace=f"test-{uuid.uuid4().hex[:12]}", **options)


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.infra)])
def jobs(request):
    if request.param == "memory":
        yield JobsUnderTest(MemoryJobQueue(), "memory")
        return
    queue = open_rabbit_jobs()
    try:
        yield JobsUnderTest(queue, "rabbitmq")
    finally:
        queue.delete_topology()
        queue.close()


@pytest.fixture
def queue(jobs) -> JobQueue:
    return jobs.queue


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


def test_publish_then_consume(jobs, queue):
    queue.publish({"video_id": "v1", "n": 1})
    queue.publish({"video_id": "v2", "n": 2})
    assert jobs.pending(2) == 2
    seen = consume_n(queue, 2)
    assert [d.body for d in seen] == [{"video_id": "v1", "n": 1}, {"video_id": "v2", "n": 2}]
    assert [d.redelivered for d in seen] == [False, False]
    assert [d.lane for d in seen] == ["express", "express"]
    assert [d.attempt for d in seen] == [1, 1]
    assert jobs.pending(0) == 0


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


def test_unknown_lane_is_rejected(jobs, queue):
    with pytest.raises(ValueError):
        queue.publish({"x": 1}, lane="turbo")
    assert jobs.pending() == 0


def test_published_body_is_a_copy(queue):
    body = {"video_id": "v1", "renditions": [360]}
    queue.publish(body)
    body["video_id"] = "changed"
    body["renditions"].append(1080)
    (delivery,) = consume_n(queue, 1)
    assert delivery.body == {"video_id": "v1", "renditions": [360]}


def test_body_must_be_json(jobs, queue):
    with pytest.raises(TypeError):
        queue.publish({"when": object()})
    assert jobs.pending() == 0


def test_nack_requeue_redelivers_with_redelivered_flag(jobs, queue):
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
    assert [d.attempt for d in seen] == [1, 2, 1]
    assert seen[1].lane == "bulk"  # requeued into its own lane
    assert jobs.pending(0) == 0
    assert jobs.dead_letters() == []


def test_release_hands_back_without_spending_an_attempt(jobs, queue):
    queue.publish({"id": "job"}, lane="bulk")
    calls = {"n": 0}

    def action(delivery):
        calls["n"] += 1
        if calls["n"] <= 3:
            delivery.release()  # three graceful shutdowns in a row
        else:
            delivery.ack()

    seen = consume_n(queue, 4, action)
    assert [(d.body["id"], d.attempt, d.lane) for d in seen] == [("job", 1, "bulk")] * 4
    assert all(d.redelivered for d in seen[1:])
    assert jobs.pending(0) == 0
    assert jobs.dead_letters() == []


def test_nack_without_requeue_dead_letters(jobs, queue):
    queue.publish({"id": "poison"})
    queue.publish({"id": "fine"})
    seen = consume_n(queue, 2, lambda d: d.nack(requeue=False) if d.body["id"] == "poison" else d.ack())
    assert [d.body["id"] for d in seen] == ["poison", "fine"]
    assert jobs.dead_letters([{"id": "poison"}]) == [{"id": "poison"}]
    assert jobs.pending(0) == 0


@pytest.mark.parametrize(("first", "second"), [("ack", "ack"), ("ack", "nack"), ("nack", "ack"),
                                               ("nack", "nack"), ("ack", "retry")])
def test_double_settle_raises(jobs, queue, first, second):
    queue.publish({"id": "once"})
    errors: list[BaseException] = []

    def action(delivery):
        if first == "ack":
            delivery.ack()
        else:
            delivery.nack(requeue=False)
        try:
            if second == "retry":
                delivery.retry(0)
            else:
                getattr(delivery, second)()
        except RuntimeError as error:
            errors.append(error)

    consume_n(queue, 1, action)
    assert len(errors) == 1
    # The second call changed nothing: no redelivery, at most the one dead letter from the first nack.
    expected = [{"id": "once"}] if first == "nack" else []
    assert jobs.dead_letters(expected) == expected
    assert jobs.pending(0) == 0


def test_stop_event_ends_an_idle_consume(queue):
    stop = threading.Event()
    thread = threading.Thread(target=queue.consume, args=(lambda d: d.ack(), stop), daemon=True)
    thread.start()
    thread.join(0.3)
    assert thread.is_alive()  # blocks while there is nothing to do
    stop.set()
    thread.join(TIMEOUT)
    assert not thread.is_alive()


def test_stop_set_before_consume_delivers_nothing(jobs, queue):
    queue.publish({"id": "left"})
    stop = threading.Event()
    stop.set()
    handled: list[Delivery] = []
    queue.consume(handled.append, stop)
    assert handled == []
    assert jobs.pending(1) == 1


def test_stop_waits_for_the_running_job(jobs, queue):
    queue.publish({"id": "long"})
    queue.publish({"id": "next"})
    stop, started, finished = threading.Event(), threading.Event(), threading.Event()
    handled: list[str] = []

    def handler(delivery):
        handled.append(delivery.body["id"])
        started.set()
        time.sleep(0.5)  # still running when stop is set
        delivery.ack()
        finished.set()

    thread = threading.Thread(target=queue.consume, args=(handler, stop), daemon=True)
    thread.start()
    assert started.wait(TIMEOUT)
    stop.set()
    thread.join(TIMEOUT)
    assert not thread.is_alive() and finished.is_set()
    assert handled == ["long"]  # nothing new was taken after stop
    assert jobs.pending(1) == 1


def test_handler_exception_requeues_the_job(jobs, queue):
    queue.publish({"id": "flaky"})

    def explode(delivery):
        raise RuntimeError("worker crashed")

    with pytest.raises(RuntimeError, match="worker crashed"):
        queue.consume(explode, threading.Event())
    assert jobs.pending(1) == 1
    (again,) = consume_n(queue, 1)
    assert again.body == {"id": "flaky"}
    assert again.redelivered is True
    assert again.attempt == 2
    assert jobs.dead_letters() == []


def test_handler_returning_without_settling_hands_the_job_back(jobs, queue):
    queue.publish({"id": "forgotten"})
    seen = consume_n(queue, 2, lambda d: d.ack() if d.redelivered else None)
    assert [(d.body["id"], d.redelivered) for d in seen] == [("forgotten", False), ("forgotten", True)]
    assert jobs.pending(0) == 0


def test_handler_exception_after_settling_does_not_requeue(jobs, queue):
    queue.publish({"id": "done"})

    def ack_then_explode(delivery):
        delivery.ack()
        raise RuntimeError("after ack")

    with pytest.raises(RuntimeError):
        queue.consume(ack_then_explode, threading.Event())
    time.sleep(0.1 if jobs.kind == "rabbitmq" else 0)
    assert jobs.pending() == 0


def test_settling_from_another_thread(jobs, queue):
    queue.publish({"id": "handed-off"})

    def action(delivery):
        helper = threading.Thread(target=delivery.ack)
        helper.start()
        helper.join()

    (delivery,) = consume_n(queue, 1, action)
    assert delivery.body == {"id": "handed-off"}
    assert jobs.pending(0) == 0


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
        t.join(TIMEOUT * 2)
    stop.set()
    for t in threads:
        t.join(TIMEOUT)
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


def test_consumers_can_be_limited_to_lanes(queue):
    queue.publish({"n": "long"}, lane="bulk")
    assert _one(queue, lanes=("express",), timeout=0.5) is None  # an express-only consumer leaves bulk alone
    queue.publish({"n": "short"}, lane="express")
    assert _one(queue, lanes=("express",)).body == {"n": "short"}
    assert _one(queue, lanes=("bulk",)).body == {"n": "long"}


def test_retry_redelivers_after_the_delay_with_the_next_attempt(jobs, queue):
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
    worker.join(TIMEOUT)
    stop.set()
    worker.join(TIMEOUT)
    assert [(a, r) for a, r, _ in seen] == [(1, False), (2, True), (3, True)]
    assert seen[1][2] - seen[0][2] >= 0.19 and seen[2][2] - seen[1][2] >= 0.19
    assert jobs.pending(0) == 0
    assert jobs.dead_letters() == []


def test_retry_keeps_the_lane(queue):
    queue.publish({"n": "b"}, lane="bulk")
    seen = consume_n(queue, 2, lambda d: d.retry(0.05) if d.attempt == 1 else d.ack())
    assert [(d.lane, d.attempt) for d in seen] == [("bulk", 1), ("bulk", 2)]


def test_unknown_lanes_are_refused(queue):
    with pytest.raises(ValueError):
        queue.consume(lambda d: None, threading.Event(), lanes=("urgent",))
