"""In-process job queue specifics; the behaviour every adapter shares is in test_job_queue_contract.py."""

from __future__ import annotations

import threading
import time

from services.adapters.memory_jobs import MemoryJobQueue


def test_dead_letters_and_pending_are_inspectable():
    queue = MemoryJobQueue()
    queue.publish({"id": "poison"}, lane="bulk")
    queue.publish({"id": "fine"})
    assert queue.pending() == 2
    stop = threading.Event()

    def handler(delivery):
        if delivery.body["id"] == "poison":
            delivery.nack(requeue=False)
            stop.set()
        else:
            delivery.ack()

    queue.consume(handler, stop)
    assert queue.dead_letters == [{"id": "poison"}]
    assert queue.pending() == 0


def test_a_job_waiting_for_its_retry_is_not_pending():
    queue = MemoryJobQueue()
    queue.publish({"id": "later"})
    stop = threading.Event()

    def handler(delivery):
        delivery.retry(0.3)
        stop.set()

    queue.consume(handler, stop)
    assert queue.pending() == 0
    time.sleep(0.5)
    assert queue.pending() == 1
