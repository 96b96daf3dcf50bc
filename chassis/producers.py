"""The broker's producer: replaced, never reused, once a publish failed.

aiokafka's idempotent producer never expires a batch: with the broker away it
retries for as long as the outage lasts and delivers the batch once the broker
is back, whatever became of the request that handed it over. Cancelling the
wait does not take the batch back. So a publish that fails or outlives its
deadline takes its producer out of service (`abort_producer`: batches failed,
sender stopped) and a fresh one is started in its place (`usable_producer`).
Every write records its events before publishing them (chassis.unit_of_work),
so a late copy would carry the same id and be dropped by its readers; the
relay publishes them again anyway, and one copy is what partners should see.
FastStream keeps the producer in `broker.config.producer`; the replacement goes
in there, so every publisher of the broker (and its dead-letter middleware)
uses it. It reaches into aiokafka's and FastStream's internals (pinned versions;
tests/integration cover it against real Kafka).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from faststream.kafka import KafkaBroker

log = logging.getLogger(__name__)


def request_timeout_s(broker: KafkaBroker) -> float:
    """The broker's Kafka request timeout, in seconds (`make_broker`'s `request_timeout_ms`)."""
    kwargs: dict[str, Any] = getattr(broker, "_connection_kwargs", {})
    return float(kwargs.get("request_timeout_ms", 40_000)) / 1000


_replacing: weakref.WeakKeyDictionary[KafkaBroker, asyncio.Lock] = weakref.WeakKeyDictionary()


def _installed(broker: KafkaBroker) -> AIOKafkaProducer | None:
    state = getattr(broker.config.producer, "_producer", None)
    return getattr(state, "producer", None) if state else None


def _usable(producer: AIOKafkaProducer) -> bool:
    sender = producer._sender.sender_task
    return (
        not producer._closed
        and producer._message_accumulator._exception is None
        and sender is not None
        and not sender.done()
    )


async def usable_producer(broker: KafkaBroker) -> AIOKafkaProducer | None:
    """The broker's producer, started afresh if the last one was taken out of service.

    None when the broker was never started (nothing to publish with). Raises a
    KafkaError when no connection can be made (the broker is down).
    """
    producer = _installed(broker)
    if producer is None or _usable(producer):
        return producer
    lock = _replacing.setdefault(broker, asyncio.Lock())
    async with lock:
        producer = _installed(broker)
        if producer is None or _usable(producer):
            return producer
        fresh = AIOKafkaProducer(**broker._connection_kwargs)
        try:
            await fresh.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await fresh.stop()
            raise
        # Imported here: FastStream's producer state is internal (pinned version).
        from faststream.kafka.publisher.state import RealProducer

        broker.config.producer._producer = RealProducer(fresh)  # type: ignore[attr-defined]
        log.info("started a fresh Kafka producer")
        return fresh


def abort_producer(broker: KafkaBroker, *producers: AIOKafkaProducer | None) -> None:
    """Take these producers (and the broker's current one) out of service, now.

    Nothing they hold is sent afterwards: every batch not yet acknowledged fails
    (its waiters see KafkaTimeoutError), and the sender task that would retry it
    is cancelled with the produce requests it has in flight. A fresh producer
    replaces it as soon as Kafka answers. Other publishes in flight on the same
    producer fail too; their callers still hold them and retry (or answer 503).
    """
    for producer in {p for p in (*producers, _installed(broker)) if p is not None}:
        if producer._closed:
            continue
        producer._closed = True  # FastStream's later stop() must not flush it
        producer._message_accumulator.fail_all(
            KafkaTimeoutError("the producer was taken out of service after a failed publish")
        )
        sender = producer._sender
        if sender.sender_task is not None:
            # Its batches are failed above already; its own failure hook would
            # fail them again, and trips over the idempotent producer's state.
            sender.sender_task.remove_done_callback(sender._fail_all)
            sender.sender_task.cancel()
        # The produce requests it has in flight, too: each would make one more
        # attempt, which a broker back by then would take.
        for in_flight in asyncio.all_tasks():
            coro = in_flight.get_coro()
            frame = getattr(coro, "cr_frame", None)
            if (
                getattr(coro, "__qualname__", "") == "Sender._send_produce_req"
                and frame is not None
                and frame.f_locals.get("self") is sender
            ):
                in_flight.cancel()
        retiring = asyncio.get_running_loop().create_task(_retire(broker, producer))
        _retiring.add(retiring)
        retiring.add_done_callback(_retiring.discard)
        log.warning("took the Kafka producer out of service after a failed publish")


_retiring: set[asyncio.Task[None]] = set()
REPLACE_BACKOFF_S = (0.5, 5.0)


async def _retire(broker: KafkaBroker, producer: AIOKafkaProducer) -> None:
    """Put a fresh producer in its place as soon as Kafka answers, then close it.

    Its client stays open until then: a publish through FastStream directly (the
    dead-letter middleware) fails at once on its failed buffer, where a closed
    client would leave it waiting for topic metadata for good.
    """
    backoff, most = REPLACE_BACKOFF_S
    while _installed(broker) is producer:
        try:
            await usable_producer(broker)
        except Exception:
            await asyncio.sleep(backoff)
            backoff = min(2 * backoff, most)
    with contextlib.suppress(Exception):
        await producer.client.close()
    sender = producer._sender.sender_task
    with contextlib.suppress(BaseException):
        if sender is not None:
            await sender
