"""Publishing events with their envelope, and reading the envelope back.

Every message is keyed by client id and carries CloudEvents headers. An event
caused by another gets a deterministic id (see shared.envelope.derived_event_id),
so a redelivered cause republishes the same ids, which consumers deduplicate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from aiokafka.errors import KafkaTimeoutError
from faststream.kafka import KafkaBroker

from chassis.producers import abort_producer, request_timeout_s, usable_producer
from chassis.staff_tokens import acting
from shared.envelope import HEADER_CONTENT_TYPE, Envelope, EnvelopeError, new_event_id
from shared.events import Event
from shared.topics import Topic, topic_for

if TYPE_CHECKING:
    from faststream.kafka.publisher.usecase import DefaultPublisher

    from chassis.metrics import ServiceMetrics


log = logging.getLogger(__name__)


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
        actor = acting.get()
        return Envelope(
            id=id_,
            source=self._source,
            type=type_,
            time=event.occurred_at,
            subject=str(event.client_id),
            clinic_id=event.clinic_id,
            correlation_id=correlation_id or id_,
            # Who asked, on the clinic's own records; partners' feeds name no one.
            actor=actor.named if actor is not None and not topic.public else None,
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
        if self._metrics is not None:
            channel = getattr(event, "channel", "")
            self._metrics.published(topic.name, event.clinic_id, str(channel or ""))
        if not log.isEnabledFor(logging.DEBUG):
            return
        # DEBUG: one line per event cost the services CPU on every event (issue 19);
        # the topics are the record of what was published.
        log.debug(
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


def envelope_of(record: Any) -> Envelope:
    """A consumed record's envelope (EnvelopeError: dead-lettered)."""
    envelope = Envelope.from_headers(record.headers or ())
    topic = getattr(record, "topic", None)
    # One event type per topic: anything else on it is not for this handler.
    if topic and envelope.type != f"kap.{topic}":
        raise EnvelopeError(f"event type {envelope.type!r} does not belong on {topic}")
    return envelope
