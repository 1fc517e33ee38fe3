"""RabbitMQ event bus for distributed mode: a durable topic exchange `<namespace>.events`.

Every subscription has its own connection, consumer thread and exclusive, auto-deleted, server-named queue bound
with its pattern, so every subscriber (each notify replica, say) gets every matching event. Events are JSON and
not persistent: a subscriber that is away misses them (it reloads state when it comes back). publish() waits for
the publisher confirm on a shared connection behind a lock and reconnects once when that connection has died.
A subscription survives a lost connection: it reconnects with backoff (0.5 s … 10 s) and declares and binds a new
queue; events published while it was away are lost.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from services.adapters.rabbitmq_jobs import (
    RECONNECT_MAX,
    RECONNECT_MIN,
    TICK,
    TRANSIENT,
    BrokerUnavailable,
    Publisher,
    close_quietly,
    connection_name,
    connection_parameters,
)
from services.ports.events import EventBus, Handler, Subscription

log = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT = 10.0


class RabbitSubscription(Subscription):
    def __init__(self, bus: RabbitEventBus, handler: Handler, pattern: str):
        self.bus, self.handler, self.pattern = bus, handler, pattern
        self.queue: str | None = None  # the current server-named queue
        self.connects = 0
        self._closing = threading.Event()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._connection: BlockingConnection | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"events-{pattern}")

    def start(self, timeout: float) -> None:
        """Returns once the queue is bound, so every event published afterwards reaches the handler."""
        self._thread.start()
        if not self._ready.wait(timeout) or self._failure is not None:
            self.close()
            raise BrokerUnavailable(f"could not subscribe to {self.pattern!r}: RabbitMQ is unavailable "
                                    f"({self._failure!r})") from self._failure

    def _run(self) -> None:
        backoff = RECONNECT_MIN
        while not self._closing.is_set():
            connection = None
            try:
                connection = BlockingConnection(connection_parameters(
                    self.bus.url, connection_name(self.bus.namespace, "events-subscriber"),
                    heartbeat=self.bus.heartbeat))
                self.connects += 1
                self._connection = connection
                channel = connection.channel()
                self.bus.declare(channel)
                self.queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
                channel.queue_bind(self.queue, self.bus.exchange, routing_key=self.pattern)
                channel.basic_consume(self.queue, self._on_message, auto_ack=True)
                self._ready.set()
                backoff = RECONNECT_MIN
                while not self._closing.is_set():
                    connection.process_data_events(time_limit=TICK)
                channel.queue_delete(self.queue)
                return
            except TRANSIENT as error:
                if not self._ready.is_set():  # the first attempt: subscribe() reports it
                    self._failure = error
                    self._ready.set()
                    return
                if not self._closing.is_set():
                    log.warning("event subscription lost its broker connection; reconnecting in %.1f s", backoff,
                                extra={"pattern": self.pattern, "error": repr(error)})
            finally:
                close_quietly(connection)
            if self._closing.wait(backoff):
                return
            backoff = min(backoff * 2, RECONNECT_MAX)

    def _on_message(self, _channel, method, _properties, body: bytes) -> None:
        if self._closing.is_set():
            return
        try:
            event = json.loads(body)
        except ValueError:
            log.error("dropping an event that is not JSON", extra={"topic": method.routing_key})
            return
        try:
            self.handler(method.routing_key, event)
        except Exception:
            log.exception("event handler failed", extra={"topic": method.routing_key})

    def close(self) -> None:
        """No handler call starts after this returns (unless called from the handler itself); idempotent."""
        self._closing.set()
        self.bus._forget(self)
        connection = self._connection
        if connection is not None:
            try:
                connection.add_callback_threadsafe(lambda: None)  # ends the consumer thread's wait now
            except TRANSIENT:
                pass
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(SUBSCRIBE_TIMEOUT)


class RabbitEventBus(EventBus):
    def __init__(self, url: str, *, namespace: str = "reelhouse", heartbeat: int = 30):
        self.url, self.namespace, self.heartbeat = url, namespace, heartbeat
        self.exchange = f"{namespace}.events"
        self._lock = threading.Lock()
        self._subscriptions: list[RabbitSubscription] = []
        self._publisher = Publisher(url, lambda: connection_name(namespace, "events-publisher"), self.declare,
                                    heartbeat=heartbeat)

    def declare(self, channel: BlockingChannel) -> None:
        channel.exchange_declare(self.exchange, "topic", durable=True)

    def publish(self, topic: str, event: dict[str, Any]) -> None:
        payload = json.dumps(event).encode()
        properties = pika.BasicProperties(content_type="application/json")
        self._publisher.run(lambda ch: ch.basic_publish(self.exchange, topic, payload, properties),
                            "publish event")

    def subscribe(self, handler: Handler, pattern: str = "#") -> Subscription:
        subscription = RabbitSubscription(self, handler, pattern)
        with self._lock:
            self._subscriptions.append(subscription)
        subscription.start(SUBSCRIBE_TIMEOUT)
        return subscription

    def _forget(self, subscription: RabbitSubscription) -> None:
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

    def ping(self) -> None:
        self._publisher.run(lambda ch: ch.exchange_declare(self.exchange, "topic", passive=True), "ping")

    def delete_topology(self) -> None:
        """Delete the exchange: for tests and decommissioning."""
        self._publisher.run(lambda ch: ch.exchange_delete(self.exchange), "delete exchange")
        self._publisher.close()

    def close(self) -> None:
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.close()
        self._publisher.close()
