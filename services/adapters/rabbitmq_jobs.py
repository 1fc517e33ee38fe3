"""RabbitMQ job queue for distributed mode (pika, DESIGN §6).

Topology, per namespace `ns` (all durable):

- `ns.jobs.express`, `ns.jobs.bulk`: quorum queues (RabbitMQ 3.10 quorum queues refuse `x-max-priority`, so the two
  lanes are two queues) with `x-delivery-limit`, dead-lettering to the fanout exchange `ns.jobs.dlx` with
  `x-dead-letter-strategy: at-least-once` (which needs `x-overflow: reject-publish`) and `x-consumer-timeout`.
- `ns.jobs.dead`: quorum queue bound to `ns.jobs.dlx`; jobs nacked without requeue or past the delivery limit.
- `ns.jobs.retry.<lane>.<ms>`: classic queues, one per lane and delay, created on demand, whose queue-wide
  `x-message-ttl` dead-letters each message back to its lane queue through the default exchange. One queue per
  delay, not one per lane with a per-message `expiration`, because RabbitMQ expires messages only at the head of a
  queue: a 10-minute retry would hold back every 5-second retry queued behind it. Delays are rounded *up* to two
  significant digits (so a jittered backoff does not create a queue per job) and the queues delete themselves
  (`x-expires`) once idle for their delay plus a minute.

Messages are persistent JSON with a message id and an `x-attempt` header (1 on publish, +1 per retry); the attempt
a consumer sees adds the quorum queue's `x-delivery-count` (the number of earlier deliveries handed back: nack with
requeue, a consumer that died or lost its connection). Publishing waits for the publisher confirm. A retry is
confirmed before the original is acked, so a lost ack means a duplicate, never a lost job (handlers are idempotent).

RabbitMQ 3.10 accepts `x-consumer-timeout` on quorum queues but ignores it (checked: a delivery held 80 s past a
3 s timeout kept its channel); the broker-wide `consumer_timeout` (30 min by default) is what applies there, so the
broker's configuration must set it above the longest job. The argument is declared for newer brokers. A channel
the broker closes for that reason is treated like a lost connection: reconnect, and the job is redelivered.

Express before bulk: a consumer of a single lane uses `basic_consume` (pushed, `prefetch_count=1`). A consumer of
both lanes polls with `basic_get`, express first, then bulk, so it never holds a bulk job while express work is
waiting (two `basic_consume`s would each get a message: quorum queues have no channel-wide prefetch). It polls
every 50 ms after work, slowing to every 0.5 s when idle. The worker runs at least one express-only consumer when
its concurrency is 2 or more, so a short job starts at once even while every shared consumer is busy with bulk.

pika is not thread-safe: each consume() call owns one BlockingConnection and is its I/O thread. The handler runs
in a separate thread while the I/O thread keeps calling `process_data_events` (heartbeats never lapse); acks and
nacks from the handler thread are passed to the I/O thread with `add_callback_threadsafe`. publish() and the copy
a retry publishes use a separate connection behind a lock.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from services.ports.jobs import LANES, Delivery, JobQueue

log = logging.getLogger(__name__)

RECONNECT_MIN, RECONNECT_MAX = 0.5, 10.0
POLL_MIN, POLL_MAX = 0.05, 0.5
TICK = 0.2
DEFAULT_CONSUMER_TIMEOUT_MS = 6 * 3600 * 1000  # above the worker's longest job (its limit follows the duration)


class BrokerUnavailable(ConnectionError):
    """The broker could not be reached (or the connection broke twice in a row); the caller answers 503."""


class TopologyMismatch(RuntimeError):
    """The namespace's queues exist with other arguments (delivery limit, consumer timeout) than ours."""


class PublishRejected(RuntimeError):
    """The broker received the message but did not take it: unroutable (its queue is gone) or nacked (full)."""


# Errors after which a fresh connection may work. Unroutable and nacked publishes are not among them.
TRANSIENT = (pika.exceptions.AMQPConnectionError, pika.exceptions.ChannelClosed,
             pika.exceptions.ChannelWrongStateError, pika.exceptions.ConsumerCancelled, OSError)

_connection_numbers = itertools.count(1)


def connection_parameters(url: str, name: str, *, heartbeat: int) -> pika.URLParameters:
    """The URL's parameters with our heartbeat, short connect timeouts and a `connection_name` the broker shows
    (`rabbitmqctl list_connections name client_properties`)."""
    params = pika.URLParameters(url)
    params.heartbeat = heartbeat
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.stack_timeout = 10
    params.blocked_connection_timeout = 60  # a broker under a resource alarm makes publishes fail, not hang
    params.client_properties = {"connection_name": name}
    return params


def connection_name(namespace: str, role: str) -> str:
    return f"{namespace} {role} {socket.gethostname()}:{os.getpid()}:{next(_connection_numbers)}"


def close_quietly(connection: BlockingConnection | None) -> None:
    if connection is None:
        return
    try:
        if connection.is_open:
            connection.close()
    except Exception:  # noqa: S110 - already broken: nothing left to close
        pass


class Publisher:
    """One lazily opened connection with a confirm-mode channel, shared by threads behind a lock.

    An idle BlockingConnection answers no heartbeats, so the broker may have dropped it: any operation that fails
    on a broken connection is tried once more on a fresh one (which re-runs `setup`); failing again raises
    BrokerUnavailable."""

    def __init__(self, url: str, name: Callable[[], str], setup: Callable[[BlockingChannel], None], *,
                 heartbeat: int):
        self._url, self._name, self._setup, self._heartbeat = url, name, setup, heartbeat
        self._lock = threading.Lock()
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self.connects = 0

    def _open(self) -> BlockingChannel:
        if self._channel is not None and self._channel.is_open and self._connection.is_open:
            return self._channel
        self._reset()
        self._connection = BlockingConnection(connection_parameters(self._url, self._name(),
                                                                    heartbeat=self._heartbeat))
        self.connects += 1
        channel = self._connection.channel()
        channel.confirm_delivery()
        self._setup(channel)
        self._channel = channel
        return channel

    def _reset(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        close_quietly(connection)

    def run(self, operation: Callable[[BlockingChannel], Any], what: str) -> Any:
        with self._lock:
            for attempt in (1, 2):
                try:
                    return operation(self._open())
                except pika.exceptions.UnroutableError as error:
                    raise PublishRejected(f"{what}: the broker could not route the message (is its queue gone?)"
                                          ) from error
                except pika.exceptions.NackError as error:
                    raise PublishRejected(f"{what}: the broker refused the message (queue full?)") from error
                except pika.exceptions.ChannelClosedByBroker as error:
                    self._reset()
                    if error.reply_code != 406:
                        if attempt == 2:
                            raise BrokerUnavailable(f"{what}: RabbitMQ is unavailable ({error!r})") from error
                        continue
                    raise TopologyMismatch(f"{what}: the broker refused it ({error.reply_text}); queues or "
                                           "exchanges exist with other arguments than this configuration's "
                                           "(they cannot change: use a policy or a new BROKER_NAMESPACE)"
                                           ) from error
                except TRANSIENT as error:
                    self._reset()
                    if attempt == 2:
                        raise BrokerUnavailable(f"{what}: RabbitMQ is unavailable ({error!r})") from error
                    log.info("broker connection lost, reconnecting once", extra={"error": repr(error)})
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._reset()


class _Session:
    """One consumer connection and its channel, used only from the consume() thread (the I/O thread)."""

    def __init__(self, connection: BlockingConnection, channel: BlockingChannel):
        self.connection, self.channel = connection, channel
        self.io_thread = threading.get_ident()

    def call(self, fn: Callable[[], None], what: str) -> None:
        """Run fn on the I/O thread: now when called there, else at its next process_data_events."""
        try:
            if threading.get_ident() == self.io_thread:
                fn()
            else:
                self.connection.add_callback_threadsafe(fn)
        except TRANSIENT as error:
            log.warning("could not %s: the broker connection is gone; the broker will redeliver the job", what,
                        extra={"error": repr(error)})

    def wake(self) -> None:
        """End the I/O thread's current process_data_events wait (when a handler has finished)."""
        try:
            self.connection.add_callback_threadsafe(lambda: None)
        except TRANSIENT:
            pass  # that connection is gone; the consume loop no longer waits on it


class RabbitDelivery(Delivery):
    def __init__(self, queue: RabbitJobQueue, session: _Session, lane: str, method, properties, body: bytes):
        headers = properties.headers or {}
        self.queue, self.session, self.lane = queue, session, lane
        self.delivery_tag = method.delivery_tag
        self.properties, self.raw = properties, body
        self.body = json.loads(body)
        self.message_id = properties.message_id
        self.attempt = int(headers.get("x-attempt", 1)) + int(headers.get("x-delivery-count", 0))
        self.redelivered = bool(method.redelivered) or self.attempt > 1 or bool(headers.get("x-released"))
        self.settled = False
        self._lock = threading.Lock()

    def _claim(self) -> None:
        if self.settled:
            raise RuntimeError("delivery already settled")
        self.settled = True

    def _send(self, what: str, fn: Callable[[BlockingChannel], None]) -> None:
        channel = self.session.channel

        def on_io_thread() -> None:
            if channel.is_open:
                fn(channel)
            else:
                log.warning("could not %s: the channel is closed; the broker will redeliver the job", what)

        self.session.call(on_io_thread, what)

    def ack(self) -> None:
        with self._lock:
            self._claim()
            self._send("ack", lambda ch: ch.basic_ack(self.delivery_tag))

    def nack(self, requeue: bool = True) -> None:
        with self._lock:
            self._claim()
            self._send("nack", lambda ch: ch.basic_nack(self.delivery_tag, requeue=requeue))

    def retry(self, delay: float) -> None:
        """Publish a copy (attempt + 1) to the lane's delay queue, wait for its confirm, then ack this one.
        If the copy cannot be published the delivery stays unsettled and the error propagates."""
        with self._lock:
            if self.settled:
                raise RuntimeError("delivery already settled")
            self.queue._publish_retry(self, delay)
            self._claim()
            self._send("ack", lambda ch: ch.basic_ack(self.delivery_tag))


    def release(self) -> None:
        """A copy with the same attempt back into the lane queue (confirmed), then ack this one: unlike a nack,
        this does not raise the quorum queue's delivery count, so a scale-in never uses up a job's attempts."""
        with self._lock:
            if self.settled:
                raise RuntimeError("delivery already settled")
            self.queue._publish_retry(self, 0, attempt=self.attempt)
            self._claim()
            self._send("ack", lambda ch: ch.basic_ack(self.delivery_tag))


class _Running:
    """The handler thread of the job in progress."""

    def __init__(self, handler: Callable[[Delivery], None], delivery: RabbitDelivery):
        self.delivery = delivery
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(handler,), daemon=True,
                                       name=f"job-{delivery.lane}-{delivery.message_id}")
        self.thread.start()

    def _run(self, handler: Callable[[Delivery], None]) -> None:
        try:
            handler(self.delivery)
        except BaseException as error:  # noqa: BLE001 - re-raised by consume() on its own thread
            self.error = error
        finally:
            self.delivery.session.wake()

    def finish(self) -> BaseException | None:
        """After the thread ended: hand back a job the handler left unsettled; the handler's exception."""
        self.thread.join()
        with self.delivery._lock:
            if not self.delivery.settled:
                self.delivery._claim()
                self.delivery._send("nack", lambda ch: ch.basic_nack(self.delivery.delivery_tag, requeue=True))
        return self.error


class RabbitJobQueue(JobQueue):
    def __init__(self, url: str, *, namespace: str = "reelhouse", heartbeat: int = 30,
                 consumer_timeout_ms: int = DEFAULT_CONSUMER_TIMEOUT_MS, delivery_limit: int = 5):
        if delivery_limit < 0:
            raise ValueError("delivery_limit must be 0 or more")
        self.url, self.namespace, self.heartbeat = url, namespace, heartbeat
        self.consumer_timeout_ms, self.delivery_limit = consumer_timeout_ms, delivery_limit
        self.dead_letter_exchange = f"{namespace}.jobs.dlx"
        self.dead_letter_queue = f"{namespace}.jobs.dead"
        self.consumer_connects = 0  # consumer connections opened (reconnects included)
        self._retry_queues: set[str] = set()  # names declared by this instance, for delete_topology()
        self._publisher = Publisher(url, lambda: connection_name(namespace, "jobs-publisher"), self.declare,
                                    heartbeat=heartbeat)

    @property
    def publisher_connects(self) -> int:
        """Publisher connections opened (reconnects included)."""
        return self._publisher.connects

    # -- names and topology ---------------------------------------------------------------------------------
    def queue_name(self, lane: str) -> str:
        return f"{self.namespace}.jobs.{lane}"

    def retry_queue_name(self, lane: str, delay_ms: int) -> str:
        return f"{self.namespace}.jobs.retry.{lane}.{delay_ms}"

    def lane_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": self.dead_letter_exchange,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-consumer-timeout": self.consumer_timeout_ms,
        }

    def declare(self, channel: BlockingChannel) -> None:
        channel.exchange_declare(self.dead_letter_exchange, "fanout", durable=True)
        channel.queue_declare(self.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_bind(self.dead_letter_queue, self.dead_letter_exchange)
        for lane in LANES:
            channel.queue_declare(self.queue_name(lane), durable=True, arguments=self.lane_arguments())

    def _declare_retry_queue(self, channel: BlockingChannel, lane: str, delay_ms: int) -> str:
        name = self.retry_queue_name(lane, delay_ms)
        # Re-declared on every use: that also restarts its x-expires clock.
        channel.queue_declare(name, durable=True, arguments={
            "x-queue-type": "classic",
            "x-message-ttl": delay_ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.queue_name(lane),
            "x-expires": delay_ms + max(delay_ms, 60_000),
        })
        self._retry_queues.add(name)
        return name

    # -- publishing -----------------------------------------------------------------------------------------
    @staticmethod
    def _check_lane(lane: str) -> None:
        if lane not in LANES:
            raise ValueError(f"unknown lane {lane!r}")

    def publish(self, body: dict[str, Any], *, lane: str = "express") -> None:
        self._check_lane(lane)
        payload = json.dumps(body).encode()
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent, content_type="application/json",
            message_id=uuid.uuid4().hex, timestamp=int(time.time()), headers={"x-attempt": 1})
        self._publish_confirmed(lambda ch: ch.basic_publish("", self.queue_name(lane), payload, properties,
                                                            mandatory=True), "publish job")

    def _publish_confirmed(self, operation: Callable[[BlockingChannel], Any], what: str) -> None:
        """A nack means the broker did not store the message (e.g. a quorum queue whose leader is still being
        elected right after it was declared): publishing it again cannot duplicate it, so try a few times."""
        for delay in (0.2, 0.5, 1.0, 2.0):
            try:
                self._publisher.run(operation, what)
                return
            except PublishRejected as error:
                if not isinstance(error.__cause__, pika.exceptions.NackError):
                    raise
                log.warning("%s: nacked by the broker, trying again in %.1f s", what, delay)
                time.sleep(delay)
        self._publisher.run(operation, what)

    def _publish_retry(self, delivery: RabbitDelivery, delay: float, attempt: int | None = None) -> None:
        if not delay >= 0:
            raise ValueError("delay must be 0 or more seconds")
        headers = {k: v for k, v in (delivery.properties.headers or {}).items()
                   if not k.startswith("x-") or k == "x-attempt"}
        headers["x-attempt"] = delivery.attempt + 1 if attempt is None else attempt
        if attempt is not None:
            headers["x-released"] = 1  # handed back: a redelivery, though its attempt count did not move
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent, content_type="application/json",
            message_id=delivery.message_id or uuid.uuid4().hex, timestamp=int(time.time()), headers=headers)
        delay_ms = _round_up(delay * 1000)

        def send(channel: BlockingChannel) -> None:
            target = self.queue_name(delivery.lane)
            if delay_ms > 0:
                target = self._declare_retry_queue(channel, delivery.lane, delay_ms)
            channel.basic_publish("", target, delivery.raw, properties, mandatory=True)

        self._publisher.run(send, "retry job")

    # -- consuming ------------------------------------------------------------------------------------------
    def _connect_consumer(self) -> tuple[BlockingConnection, BlockingChannel]:
        connection = BlockingConnection(connection_parameters(
            self.url, connection_name(self.namespace, "jobs-consumer"), heartbeat=self.heartbeat))
        self.consumer_connects += 1
        try:
            channel = connection.channel()
            self.declare(channel)
            channel.basic_qos(prefetch_count=1)
        except pika.exceptions.ChannelClosedByBroker as error:
            close_quietly(connection)
            if error.reply_code == 406:  # retrying cannot help: the settings differ from the existing queues'
                raise TopologyMismatch(
                    f"the queues of namespace {self.namespace!r} exist with other arguments than "
                    f"{self.lane_arguments()} ({error.reply_text}); quorum queue arguments cannot change: use the "
                    "same settings everywhere, or a policy, or a new BROKER_NAMESPACE") from error
            raise
        except BaseException:
            close_quietly(connection)
            raise
        return connection, channel

    def consume(self, handler: Callable[[Delivery], None], stop: threading.Event,
                lanes: Sequence[str] = LANES) -> None:
        unknown = set(lanes) - set(LANES)
        if unknown:
            raise ValueError(f"unknown lanes {sorted(unknown)}")
        ordered = [lane for lane in LANES if lane in lanes]
        if not ordered:
            raise ValueError("no lanes to consume")
        box: dict[str, _Running | None] = {"running": None}
        backoff = RECONNECT_MIN
        while not stop.is_set():
            connection = None
            try:
                connection, channel = self._connect_consumer()
                backoff = RECONNECT_MIN
                error = self._serve(_Session(connection, channel), handler, stop, ordered, box)
            except TRANSIENT as lost:
                log.warning("job consumer lost its broker connection; reconnecting in %.1f s", backoff,
                            extra={"error": repr(lost), "namespace": self.namespace})
            else:
                if error is not None:
                    raise error
                return
            finally:
                close_quietly(connection)
            # A job in progress keeps running (one job at a time: nothing new is taken meanwhile); its ack will
            # fail and the broker redelivers it, which is fine as handlers are idempotent.
            running, box["running"] = box["running"], None
            if running is not None:
                error = running.finish()
                if error is not None:
                    raise error
            if stop.wait(backoff):
                return
            backoff = min(backoff * 2, RECONNECT_MAX)

    def _serve(self, session: _Session, handler: Callable[[Delivery], None], stop: threading.Event,
               lanes: list[str], box: dict[str, _Running | None]) -> BaseException | None:
        """Runs jobs until stop is set and none is running; returns the exception a handler raised, if any."""
        connection, channel = session.connection, session.channel
        inbox: deque[tuple[str, Any, Any, bytes]] = deque()
        cancelled: list[Any] = []
        tag = None
        if len(lanes) == 1 and not stop.is_set():
            lane = lanes[0]
            channel.add_on_cancel_callback(cancelled.append)  # e.g. the queue was deleted
            tag = channel.basic_consume(self.queue_name(lane), lambda _ch, method, properties, body:
                                        inbox.append((lane, method, properties, body)))
        idle = POLL_MIN
        while True:
            # A channel the broker closed (say, a delivery past the global consumer_timeout) or a cancelled consumer
            # leaves the connection open: start over on a new connection, as after a lost one.
            if not channel.is_open:
                raise pika.exceptions.ChannelWrongStateError("the broker closed the consumer's channel")
            if cancelled:
                raise pika.exceptions.ConsumerCancelled("the broker cancelled the consumer")
            if stop.is_set() and tag is not None:
                channel.basic_cancel(tag)  # nothing new is pushed; undispatched messages go back
                tag = None
            running = box["running"]
            if running is not None:
                if running.thread.is_alive():
                    connection.process_data_events(time_limit=TICK)
                    continue
                box["running"] = None
                error = running.finish()
                connection.process_data_events(time_limit=0)  # send the ack/nack now
                if error is not None:
                    return error
                idle = POLL_MIN
                continue
            if stop.is_set():
                while inbox:
                    _lane, method, _properties, _body = inbox.popleft()
                    channel.basic_nack(method.delivery_tag, requeue=True)
                connection.process_data_events(time_limit=0)
                return None
            message = inbox.popleft() if inbox else None
            if message is None and tag is None:
                message = self._poll(channel, lanes)
            if message is None:
                connection.process_data_events(time_limit=TICK if tag is not None else idle)
                idle = min(idle * 2, POLL_MAX)
                continue
            lane, method, properties, body = message
            try:
                delivery = RabbitDelivery(self, session, lane, method, properties, body)
            except ValueError:
                log.error("dead-lettering a job that is not JSON", extra={"lane": lane})
                channel.basic_nack(method.delivery_tag, requeue=False)
                continue
            box["running"] = _Running(handler, delivery)

    def _poll(self, channel: BlockingChannel, lanes: list[str]):
        for lane in lanes:
            method, properties, body = channel.basic_get(self.queue_name(lane), auto_ack=False)
            if method is not None:
                return lane, method, properties, body
        return None

    # -- operations -----------------------------------------------------------------------------------------
    def pending(self) -> int:
        """Jobs waiting in the lane queues (not in flight, not waiting for a retry)."""
        def count(channel: BlockingChannel) -> int:
            return sum(channel.queue_declare(self.queue_name(lane), passive=True).method.message_count
                       for lane in LANES)

        return self._publisher.run(count, "count jobs")

    def ping(self) -> None:
        self._publisher.run(lambda ch: ch.queue_declare(self.queue_name("express"), passive=True), "ping")

    def delete_topology(self) -> None:
        """Delete this namespace's queues (jobs in them are lost) and exchange: for tests and decommissioning.
        Retry queues are found by the names this instance declared; the rest expire by themselves."""
        def delete(channel: BlockingChannel) -> None:
            for name in [*(self.queue_name(lane) for lane in LANES), self.dead_letter_queue, *self._retry_queues]:
                channel.queue_delete(name)
            channel.exchange_delete(self.dead_letter_exchange)

        self._publisher.run(delete, "delete topology")
        self._publisher.close()

    def close(self) -> None:
        self._publisher.close()


def _round_up(ms: float) -> int:
    """Up to two significant digits: 1234 → 1300, 95.2 → 96, 0 → 0."""
    if ms <= 0:
        return 0
    value = math.ceil(ms)
    step = 10 ** max(0, len(str(value)) - 2)
    return -(-value // step) * step
