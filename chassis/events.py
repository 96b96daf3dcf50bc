"""Publishing events with their envelope, and reading the envelope back.

Every message is keyed by client id and carries CloudEvents headers. An event
caused by another gets a deterministic id (see shared.envelope.derived_event_id),
so a redelivered cause republishes the same ids, which consumers deduplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Annotated, Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from faststream import Depends
from faststream.kafka import KafkaBroker

from shared.envelope import HEADER_CONTENT_TYPE, Envelope, EnvelopeError, new_event_id
from shared.events import Event
from shared.topics import Topic, topic_for

if TYPE_CHECKING:
    from faststream.kafka.publisher.usecase import DefaultPublisher

    from chassis.metrics import ServiceMetrics


log = logging.getLogger(__name__)


def request_timeout_s(broker: KafkaBroker) -> float:
    """The broker's Kafka request timeout, in seconds (`make_broker`'s `request_timeout_ms`)."""
    kwargs: dict[str, Any] = getattr(broker, "_connection_kwargs", {})
    return float(kwargs.get("request_timeout_ms", 40_000)) / 1000


# --- the broker's producer: replaced, never reused, once a publish failed ---------
#
# aiokafka's idempotent producer never expires a batch: with the broker away it
# retries for as long as the outage lasts and delivers the batch once the broker
# is back, whatever became of the request that handed it over. Cancelling the
# wait does not take the batch back. So a publish that fails or outlives its
# deadline takes its producer out of service (batches failed, sender stopped)
# and a fresh one is started in its place. FastStream keeps
# the producer in `broker.config.producer`; the replacement goes in there, so
# every publisher of the broker (and its dead-letter middleware) uses it.

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


class EventPublisher:
    """Publishes the events of the topics a service declares it produces.

    Declaring each topic as a FastStream publisher (with its event as schema) is
    what puts it in the AsyncAPI document.

    Every publish has one deadline, `timeout_s` (by default the broker's request
    timeout), around all of it: metadata, connection, hand-over and
    acknowledgement. A publish that fails or misses it takes the producer out
    of service, so nothing it handed over is delivered later (`abort_producer`):
    a caller told "failed" may safely report failure, and its retry is the only
    copy. (An answer lost after a reachable broker stored the batch stays
    ambiguous, as with any producer; a retry then carries the same event ids
    wherever they are derived, e.g. from an Idempotency-Key, and readers drop it.)
    """

    def __init__(
        self,
        broker: KafkaBroker,
        service: str,
        produces: Iterable[Topic],
        metrics: ServiceMetrics | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self._broker = broker
        self._source = f"/kap/{service}"
        self._metrics = metrics
        self._timeout_s = timeout_s if timeout_s is not None else request_timeout_s(broker)
        self._publishers: dict[str, DefaultPublisher] = {
            topic.name: broker.publisher(
                topic.name,
                title=f"{topic.name}:publish",
                description=topic.description,
                schema=topic.event,
            )
            for topic in produces
        }

    def envelope_for(
        self,
        event: Event,
        *,
        cause: Envelope | None = None,
        role: str = "",
        event_id: str | None = None,
        correlation_id: str | None = None,
    ) -> Envelope:
        """The envelope of `event`: derived from its cause, or the root of a journey."""
        topic = topic_for(event)
        type_ = f"kap.{topic.name}"
        if cause is not None:
            return cause.caused(
                role=f"{topic.name}#{role}" if role else topic.name,
                source=self._source,
                type=type_,
                time=event.occurred_at,
            )
        id_ = event_id or new_event_id()
        return Envelope(
            id=id_,
            source=self._source,
            type=type_,
            time=event.occurred_at,
            subject=str(event.client_id),
            clinic_id=event.clinic_id,
            correlation_id=correlation_id or id_,
        )

    async def publish(self, event: Event, envelope: Envelope) -> None:
        """Publish and wait for the broker's acknowledgement (acks=all)."""
        await self.publish_all([(event, envelope)])

    async def publish_all(self, items: Sequence[tuple[Event, Envelope]]) -> None:
        """Publish several events and wait until the broker acknowledged every one.

        All are handed to the producer first and their acknowledgements awaited
        together: one round trip instead of one per event. The idempotent
        producer keeps each partition's order, and nothing here returns before
        every event is stored, so the caller's guarantees are those of `publish`.
        """
        confirmations: list[asyncio.Future[Any]] = []
        producer = None
        try:
            async with asyncio.timeout(self._timeout_s):
                producer = await usable_producer(self._broker)
                for event, envelope in items:
                    confirmations.append(await self._send(event, envelope))
                await asyncio.gather(*confirmations)
        except (TimeoutError, asyncio.CancelledError) as stopped:
            # An event may sit in the producer's buffer (even one whose hand-over
            # was cut short): only dropping the producer keeps it from going out.
            abort_producer(self._broker, producer)
            if isinstance(stopped, asyncio.CancelledError):
                raise
            raise KafkaTimeoutError(
                f"events not acknowledged within {self._timeout_s:g} s"
            ) from stopped
        except BaseException:
            if any(not confirmation.done() for confirmation in confirmations):
                abort_producer(self._broker, producer)
            raise
        for event, envelope in items:
            self._published(event, envelope)

    async def _send(self, event: Event, envelope: Envelope) -> asyncio.Future[Any]:
        topic = topic_for(event)
        publisher = self._publishers.get(topic.name)
        if publisher is None:
            raise LookupError(f"{self._source} does not declare {topic.name} among its topics")
        headers = {
            name: value.decode()
            for name, value in envelope.to_headers()
            if name != HEADER_CONTENT_TYPE
        }
        return await publisher.publish(
            event,
            key=str(event.client_id).encode(),
            headers=headers,
            correlation_id=envelope.correlation_id,
            no_confirm=True,
        )

    def _published(self, event: Event, envelope: Envelope) -> None:
        topic = topic_for(event)
        log.info(
            "published %s",
            topic.name,
            extra={
                "clinic_id": event.clinic_id,
                "client_id": str(event.client_id),
                "event_id": envelope.id,
                "correlation_id": envelope.correlation_id,
                "causation_id": envelope.causation_id,
            },
        )
        if self._metrics is not None:
            channel = getattr(event, "channel", "")
            self._metrics.published(topic.name, event.clinic_id, str(channel or ""))


consumed_record: ContextVar[Any] = ContextVar("consumed_record", default=None)
"""The Kafka record being handled; set by the consuming middleware (chassis.dead_letters)."""


# Async and without FastStream's Context(): FastDepends runs a plain function, and
# resolves a Context() field, in a worker thread: a thread hop per message
# (measured: a fifth of the notifier's busy samples went to those hand-offs).
async def _envelope_of() -> Envelope:
    record = consumed_record.get()
    if record is None:
        raise EnvelopeError("no Kafka message is being handled")
    envelope = Envelope.from_headers(record.headers or ())
    topic = getattr(record, "topic", None)
    # One event type per topic: anything else on it is not for this handler.
    if topic and envelope.type != f"kap.{topic}":
        raise EnvelopeError(f"event type {envelope.type!r} does not belong on {topic}")
    return envelope


CurrentEnvelope = Annotated[Envelope, Depends(_envelope_of)]
"""Handler parameter: the envelope of the message being handled (bad -> dead letter)."""
