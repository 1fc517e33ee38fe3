"""RabbitMQ adapters against the real broker: what the contract suites cannot show.

A consumer process killed mid-job, poison jobs, heartbeats through a long job, connections closed by the server
(`rabbitmqctl close_connection`), publisher confirms, express jobs beside busy bulk consumers, delayed retries,
fan-out of events to several replicas. Each test works in its own namespace and deletes its queues and exchanges.
The wiring and config tests at the end need no broker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pika
import pytest

from services.adapters.rabbitmq_events import RabbitEventBus
from services.adapters.rabbitmq_jobs import (
    BrokerUnavailable,
    PublishRejected,
    RabbitJobQueue,
    TopologyMismatch,
    _round_up,
)
from services.bootstrap import events_from_config, jobs_from_config
from services.config import ConfigError
from services.ports.events import topic_matches
from services.ports.jobs import LANES
from services.testing import require_infra

RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
UNREACHABLE_URL = "amqp://guest:guest@127.0.0.1:1/%2F"
REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 10
infra = pytest.mark.infra


def _reachable() -> bool:
    parts = urlsplit(RABBITMQ_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), timeout=1):
            return True
    except OSError:
        return False


BROKER_UP = _reachable()


@pytest.fixture(autouse=True)
def _broker(request):
    if request.node.get_closest_marker("infra") and not BROKER_UP:
        require_infra(f"RabbitMQ on {urlsplit(RABBITMQ_URL).netloc}")


def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_queue():
    """RabbitJobQueue instances; the first of each namespace deletes that namespace's topology afterwards."""
    made: list[RabbitJobQueue] = []

    def make(ns: str | None = None, **options) -> RabbitJobQueue:
        queue = RabbitJobQueue(RABBITMQ_URL, namespace=ns or namespace(), **options)
        made.append(queue)
        return queue

    yield make
    cleaned: set[str] = set()
    for queue in made:
        if queue.namespace not in cleaned:
            cleaned.add(queue.namespace)
            queue.delete_topology()
        queue.close()


@pytest.fixture
def make_bus():
    made: list[RabbitEventBus] = []

    def make(ns: str | None = None, **options) -> RabbitEventBus:
        bus = RabbitEventBus(RABBITMQ_URL, namespace=ns or namespace(), **options)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        bus.close()
    for ns in {bus.namespace for bus in made}:
        RabbitEventBus(RABBITMQ_URL, namespace=ns).delete_topology()


class Consumer:
    """queue.consume(handler, stop, lanes) on a thread; remembers what consume raised."""

    def __init__(self, queue: RabbitJobQueue, handler, lanes=LANES):
        self.stop = threading.Event()
        self.error: BaseException | None = None

        def run() -> None:
            try:
                queue.consume(handler, self.stop, lanes)
            except BaseException as error:  # noqa: BLE001 - reported by the test
                self.error = error

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def close(self, timeout: float = TIMEOUT) -> None:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "consume did not return after stop"
        assert self.error is None, self.error


class Seen:
    """A thread-safe list with waiting."""

    def __init__(self):
        self.items: list = []
        self._cond = threading.Condition()

    def add(self, item) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait(self, predicate, timeout: float = TIMEOUT) -> list:
        with self._cond:
            assert self._cond.wait_for(lambda: predicate(self.items), timeout), f"timed out; seen {self.items}"
            return list(self.items)


def broker_channel():
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    return connection, connection.channel()


def message_count(queue_name: str) -> int:
    connection, channel = broker_channel()
    try:
        return channel.queue_declare(queue_name, passive=True).method.message_count
    finally:
        connection.close()


def dead_letters(queue: RabbitJobQueue, expected: int, timeout: float = TIMEOUT) -> list[tuple[dict, dict]]:
    """(body, headers) of the dead-lettered jobs once there are `expected` of them; browsed, not removed."""
    deadline = time.monotonic() + timeout
    while True:
        connection, channel = broker_channel()
        try:
            found = []
            while (got := channel.basic_get(queue.dead_letter_queue))[0] is not None:
                found.append((json.loads(got[2]), got[1].headers or {}))
        finally:
            connection.close()  # unacknowledged: all requeued
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def rabbitmqctl(*args: str) -> str:
    if shutil.which("rabbitmqctl") is None:
        require_infra("rabbitmqctl")
    result = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        require_infra(f"rabbitmqctl {args[0]} ({result.stderr.strip()[:200]})")
    return result.stdout


def close_connections(name_fragment: str) -> int:
    """Close, from the server side, every connection whose connection_name contains the fragment."""
    closed = 0
    for line in rabbitmqctl("list_connections", "--no-table-headers", "pid", "client_properties").splitlines():
        pid, _, properties = line.partition("\t")
        if name_fragment in properties:
            rabbitmqctl("close_connection", pid.strip(), "test: closed by the server")
            closed += 1
    return closed


# -- jobs ------------------------------------------------------------------------------------------------------

CHILD_CONSUMER = """
import sys, threading, time
from services.adapters.rabbitmq_jobs import RabbitJobQueue

def handler(delivery):
    print("started", delivery.body["id"], delivery.attempt, flush=True)
    time.sleep(120)  # killed long before this ends
    delivery.ack()

RabbitJobQueue(sys.argv[1], namespace=sys.argv[2]).consume(handler, threading.Event())
"""


@infra
def test_consumer_process_killed_mid_job_the_job_goes_to_another_consumer(make_queue):
    queue = make_queue()
    queue.publish({"id": "transcode-1"}, lane="bulk")
    child = subprocess.Popen([sys.executable, "-c", CHILD_CONSUMER, RABBITMQ_URL, queue.namespace], cwd=REPO,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(child.stdout.readline()), daemon=True)
        reader.start()
        reader.join(TIMEOUT)
        assert lines == ["started transcode-1 1\n"], lines
    finally:
        child.kill()  # SIGKILL mid-job: no ack, no nack, the socket just goes
        child.wait(TIMEOUT)
        child.stdout.close()

    seen = Seen()

    def handler(delivery):
        seen.add((delivery.body, delivery.redelivered, delivery.attempt, delivery.lane))
        delivery.ack()

    consumer = Consumer(queue, handler)
    try:
        assert seen.wait(lambda items: items) == [({"id": "transcode-1"}, True, 2, "bulk")]
    finally:
        consumer.close()
    assert queue.pending() == 0
    assert dead_letters(queue, 0, timeout=0) == []


@infra
@pytest.mark.parametrize("failure", ["nack", "raise"])
def test_poison_job_is_dead_lettered_after_the_delivery_limit(make_queue, failure):
    queue = make_queue(delivery_limit=2)
    queue.publish({"id": "poison"})
    attempts: list[int] = []

    def handler(delivery):
        attempts.append(delivery.attempt)
        if failure == "nack":
            delivery.nack(requeue=True)
        else:
            raise RuntimeError("ffmpeg crashed")

    if failure == "nack":
        consumer = Consumer(queue, handler)
        try:
            found = dead_letters(queue, 1)
        finally:
            consumer.close()
    else:  # consume() re-raises the handler's exception (after handing the job back); the worker calls it again
        for _ in range(3):
            with pytest.raises(RuntimeError, match="ffmpeg crashed"):
                queue.consume(handler, threading.Event())
        found = dead_letters(queue, 1)
    assert attempts == [1, 2, 3]  # first delivery + delivery_limit redeliveries
    assert [body for body, _ in found] == [{"id": "poison"}]
    headers = found[0][1]
    assert headers["x-first-death-reason"] == "delivery_limit"
    assert headers["x-first-death-queue"] == queue.queue_name("express")
    assert queue.pending() == 0


@infra
def test_heartbeats_go_on_while_a_job_outlasts_the_heartbeat_interval(make_queue):
    queue = make_queue(heartbeat=2)
    queue.publish({"id": "long"})
    seen = Seen()

    def handler(delivery):
        if delivery.body["id"] == "long":
            time.sleep(8)  # four heartbeat intervals without a word from this thread
            seen.add(("long", delivery.attempt, delivery.session.connection.is_open))
        else:
            seen.add((delivery.body["id"], delivery.attempt, delivery.session.connection.is_open))
        delivery.ack()

    consumer = Consumer(queue, handler)
    try:
        seen.wait(lambda items: len(items) == 1, timeout=15)
        # The publisher's connection sat idle for those 8 s: the broker dropped it for missed heartbeats, and the
        # next publish reconnects once, transparently.
        queue.publish({"id": "next"})
        items = seen.wait(lambda items: len(items) == 2)
    finally:
        consumer.close()
    assert items == [("long", 1, True), ("next", 1, True)]  # acked, never redelivered, same connection
    assert queue.consumer_connects == 1
    assert queue.publisher_connects == 2  # the control: a connection nobody pumps does not survive this long
    assert queue.pending() == 0
    assert dead_letters(queue, 0, timeout=0) == []


@infra
def test_connections_closed_by_the_server_are_reopened(make_queue):
    queue = make_queue()
    seen = Seen()
    started, release = threading.Event(), threading.Event()

    def handler(delivery):
        seen.add((delivery.body["id"], delivery.attempt, delivery.redelivered))
        if delivery.body["id"] == "first" and delivery.attempt == 1:
            started.set()
            release.wait(TIMEOUT)
        delivery.ack()  # the first time, on a connection that is gone: logged, and the broker redelivers

    consumer = Consumer(queue, handler)
    try:
        queue.publish({"id": "first"})
        assert started.wait(TIMEOUT)
        assert close_connections(f"{queue.namespace} jobs-consumer") == 1
        assert close_connections(f"{queue.namespace} jobs-publisher") == 1
        release.set()
        queue.publish({"id": "second"})  # on a new publisher connection
        items = seen.wait(lambda items: len(items) == 3)
    finally:
        release.set()
        consumer.close()
    assert items == [("first", 1, False), ("first", 2, True), ("second", 1, False)]
    assert queue.consumer_connects == 2
    assert queue.publisher_connects == 2
    assert queue.pending() == 0


@infra
def test_publish_waits_for_the_confirm_and_raises_when_the_broker_does_not_take_the_job(make_queue):
    queue = make_queue()
    queue.publish({"id": 1})
    assert message_count(queue.queue_name("express")) == 1  # stored once publish() returned

    # Unroutable: the lane's queue is gone.
    connection, channel = broker_channel()
    channel.queue_delete(queue.queue_name("bulk"))
    connection.close()
    with pytest.raises(PublishRejected, match="route"):
        queue.publish({"id": 2}, lane="bulk")

    # Nacked: the queue is full (x-overflow reject-publish) under a max-length policy.
    policy = f"{queue.namespace}-full"
    rabbitmqctl("set_policy", "--apply-to", "queues", policy, f"^{re.escape(queue.queue_name('express'))}$",
                '{"max-length": 1}')
    accepted = 0
    try:
        with pytest.raises(PublishRejected, match="refused"):
            for _ in range(50):  # the policy reaches the queue a moment after set_policy returns
                queue.publish({"id": 3})
                accepted += 1
                time.sleep(0.1)
    finally:
        rabbitmqctl("clear_policy", policy)
    assert message_count(queue.queue_name("express")) == 1 + accepted  # every confirmed job is there


@infra
def test_unreachable_broker_raises_a_clear_error():
    queue = RabbitJobQueue(UNREACHABLE_URL, namespace=namespace())
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="RabbitMQ is unavailable"):
        queue.publish({"id": 1})
    with pytest.raises(BrokerUnavailable):
        queue.ping()
    bus = RabbitEventBus(UNREACHABLE_URL, namespace=namespace())
    with pytest.raises(BrokerUnavailable):
        bus.publish("video.ready", {})
    with pytest.raises(BrokerUnavailable):
        bus.subscribe(lambda topic, event: None)
    assert time.monotonic() - started < 5


@infra
def test_ping(make_queue, make_bus):
    make_queue().ping()
    make_bus().ping()


@infra
def test_express_job_is_not_stuck_behind_bulk_jobs(make_queue):
    queue = make_queue()
    for i in range(3):
        queue.publish({"id": f"bulk-{i}"}, lane="bulk")
    done = Seen()
    bulk_started = threading.Event()

    def handler(delivery):
        if delivery.lane == "bulk":
            bulk_started.set()
            time.sleep(2)
        delivery.ack()
        done.add((delivery.body["id"], time.monotonic()))

    shared = Consumer(queue, handler)  # both lanes, express first
    express_only = Consumer(queue, handler, lanes=("express",))
    try:
        assert bulk_started.wait(TIMEOUT)
        published = time.monotonic()
        queue.publish({"id": "express"})
        done.wait(lambda items: items)
    finally:
        express_only.close()
        shared.close()
    items = done.items
    first_id, finished = items[0]
    assert first_id == "express"
    assert finished - published < 1.0
    assert [i for i, _ in items] == ["express", "bulk-0"]  # stop let bulk-0 finish; nothing new was taken
    assert queue.pending() == 2


@infra
def test_retry_delays_are_independent_of_each_other(make_queue):
    """A long retry does not hold back a short one (one delay queue per delay, not one queue with per-message
    TTLs, which RabbitMQ only expires at the head)."""
    queue = make_queue()
    queue.publish({"id": "slow"})
    queue.publish({"id": "fast"})
    seen = Seen()

    def handler(delivery):
        seen.add((delivery.body["id"], delivery.attempt, delivery.redelivered, time.monotonic()))
        if delivery.attempt == 1:
            delivery.retry(30 if delivery.body["id"] == "slow" else 0.3)
        else:
            delivery.ack()

    consumer = Consumer(queue, handler)
    try:
        items = seen.wait(lambda items: len(items) == 3)
    finally:
        consumer.close()
    assert [(i, a, r) for i, a, r, _ in items] == [("slow", 1, False), ("fast", 1, False), ("fast", 2, True)]
    assert 0.28 <= items[2][3] - items[1][3] < 2.0
    assert message_count(queue.retry_queue_name("express", 30_000)) == 1  # still waiting
    assert message_count(queue.retry_queue_name("express", 300)) == 0


def test_retry_delays_are_rounded_up_to_two_significant_digits():
    assert [_round_up(ms) for ms in (0, 0.4, 95.2, 200, 1234, 30_000, 61_001)] == [0, 1, 96, 200, 1300, 30_000,
                                                                                    62_000]


@infra
def test_topology_arguments(make_queue):
    queue = make_queue(delivery_limit=4, consumer_timeout_ms=3_600_000)
    queue.ping()
    arguments = queue.lane_arguments()
    assert arguments == {"x-queue-type": "quorum", "x-delivery-limit": 4,
                         "x-dead-letter-exchange": f"{queue.namespace}.jobs.dlx",
                         "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish",
                         "x-consumer-timeout": 3_600_000}
    connection, channel = broker_channel()
    try:
        for lane in LANES:  # re-declaring with the same arguments is accepted: they are what the broker has
            channel.queue_declare(queue.queue_name(lane), durable=True, arguments=arguments)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as raised:  # and durable quorum queues
            channel.queue_declare(queue.queue_name("express"), durable=True, arguments={"x-queue-type": "classic"})
        assert raised.value.reply_code == 406
    finally:
        connection.close()


@infra
def test_settings_that_contradict_the_existing_queues_fail_loudly(make_queue):
    queue = make_queue(delivery_limit=5)
    queue.ping()
    other = make_queue(queue.namespace, delivery_limit=3)
    with pytest.raises(TopologyMismatch, match="other arguments"):
        other.publish({"id": 1})
    with pytest.raises(TopologyMismatch, match="delivery-limit"):
        other.consume(lambda delivery: delivery.ack(), threading.Event())


@infra
def test_express_consumer_recovers_when_its_queue_is_deleted(make_queue):
    queue = make_queue()
    seen = Seen()

    def handler(delivery):
        seen.add(delivery.body["id"])
        delivery.ack()

    consumer = Consumer(queue, handler, lanes=("express",))
    try:
        queue.publish({"id": "before"})
        seen.wait(lambda items: items == ["before"])
        connection, channel = broker_channel()
        channel.queue_delete(queue.queue_name("express"))  # the broker cancels the consumer
        connection.close()
        deadline = time.monotonic() + TIMEOUT
        while True:  # unroutable until the consumer's new connection has declared the queue again
            try:
                queue.publish({"id": "after"})
                break
            except PublishRejected:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert seen.wait(lambda items: len(items) == 2) == ["before", "after"]
    finally:
        consumer.close()
    assert queue.consumer_connects == 2


# -- events ----------------------------------------------------------------------------------------------------

class Recorder:
    def __init__(self):
        self.seen = Seen()

    def __call__(self, topic, event):
        self.seen.add((topic, event))

    def wait(self, n: int) -> list:
        return self.seen.wait(lambda items: len(items) >= n)


@infra
def test_every_replica_gets_every_event_and_close_stops_delivery(make_bus):
    ns = namespace()
    replica_a, replica_b, publisher = make_bus(ns), make_bus(ns), make_bus(ns)  # e.g. two notify replicas
    got_a, got_b, got_ready = Recorder(), Recorder(), Recorder()
    subscription_a = replica_a.subscribe(got_a, "tenant.*.video.#")
    replica_b.subscribe(got_b, "tenant.*.video.#")
    replica_b.subscribe(got_ready, "#.ready")
    events = [("tenant.t1.video.progress", {"p": 10}), ("tenant.t1.user.created", {}),
              ("tenant.t2.video.ready", {"v": 2}), ("system.ready", {})]
    for topic, event in events:
        publisher.publish(topic, event)
    expected = [e for e in events if topic_matches("tenant.*.video.#", e[0])]
    assert got_a.wait(2) == expected
    assert got_b.wait(2) == expected
    assert got_ready.wait(2) == [("tenant.t2.video.ready", {"v": 2}), ("system.ready", {})]

    queue_a = subscription_a.queue
    subscription_a.close()
    connection, channel = broker_channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):  # its queue is gone
        channel.queue_declare(queue_a, passive=True)
    connection.close()
    publisher.publish("tenant.t1.video.failed", {"v": 3})
    assert got_b.wait(3)[2] == ("tenant.t1.video.failed", {"v": 3})
    assert len(got_a.seen.items) == 2


@infra
def test_topic_routing_on_the_broker_matches_topic_matches(make_bus):
    patterns = ["#", "video.*", "video.#", "*.ready", "#.ready", "a.#.z", "#.b.#", "*.#", "*", "tenant.*.video.*"]
    topics = ["video", "video.ready", "video.ready.hd", "ready", "a.z", "a.b.c.z", "a.b.c", "b",
              "tenant.t1.video.progress", "videos.ready"]
    bus = make_bus()
    recorders = {pattern: Recorder() for pattern in patterns}
    for pattern, recorder in recorders.items():
        bus.subscribe(recorder, pattern)
    for topic in topics:
        bus.publish(topic, {"topic": topic})
    for pattern, recorder in recorders.items():
        expected = [t for t in topics if topic_matches(pattern, t)]
        recorder.wait(len(expected))
    time.sleep(0.3)  # room for anything unexpected to arrive
    for pattern, recorder in recorders.items():
        assert [t for t, _ in recorder.seen.items] == [t for t in topics if topic_matches(pattern, t)], pattern


@infra
def test_subscription_survives_a_connection_closed_by_the_server(make_bus):
    bus = make_bus()
    recorder = Recorder()
    subscription = bus.subscribe(recorder, "video.*")
    bus.publish("video.ready", {"n": 0})
    recorder.wait(1)
    assert close_connections(f"{bus.namespace} events-subscriber") == 1
    deadline = time.monotonic() + TIMEOUT
    n = 0
    while len(recorder.seen.items) < 2 and time.monotonic() < deadline:  # events sent while it is away are lost
        n += 1
        bus.publish("video.ready", {"n": n})
        time.sleep(0.1)
    assert len(recorder.seen.items) >= 2
    assert subscription.connects == 2


# -- wiring (no broker needed) ---------------------------------------------------------------------------------

def test_amqp_broker_url_selects_the_rabbitmq_adapters(make_config):
    config = make_config(BROKER_URL="amqp://guest:guest@rabbitmq.invalid:5672/%2F", BROKER_NAMESPACE="acme.prod")
    jobs = jobs_from_config(config)  # nothing connects before first use
    events = events_from_config(config)
    assert isinstance(jobs, RabbitJobQueue) and isinstance(events, RabbitEventBus)
    assert jobs.queue_name("express") == "acme.prod.jobs.express"
    assert jobs.dead_letter_queue == "acme.prod.jobs.dead"
    assert events.exchange == "acme.prod.events"
    assert isinstance(jobs_from_config(make_config(BROKER_URL="amqps://u:p@host/vh")), RabbitJobQueue)


def test_broker_namespace_setting(make_config):
    assert make_config().broker_namespace == "reelhouse"
    assert make_config(BROKER_NAMESPACE="").broker_namespace == "reelhouse"
    assert make_config(BROKER_NAMESPACE="staging_2.eu-west").broker_namespace == "staging_2.eu-west"
    for bad in ("Prod", "a b", "jobs/x", "x" * 101, "é"):
        with pytest.raises(ConfigError, match="BROKER_NAMESPACE"):
            make_config(BROKER_NAMESPACE=bad)
