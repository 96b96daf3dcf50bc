"""Publishing events with their envelope, and reading the envelope back.

Every message is keyed by client id and carries CloudEvents headers. An event
caused by another gets a deterministic id (see shared.envelope.derived_event_id),
so a redelivered cause republishes byte-identical ids that consumers deduplicate.
"""

from __future__ import annotations

from typing import Annotated

from faststream import Context, Depends
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage

from shared.envelope import HEADER_CONTENT_TYPE, Envelope, new_event_id
from shared.events import Event
from shared.topics import topic_for


class EventPublisher:
    def __init__(self, broker: KafkaBroker, service: str) -> None:
        self._broker = broker
        self._source = f"/kap/{service}"

    def envelope_for(
        self,
        event: Event,
        *,
        cause: Envelope | None = None,
        role: str = "",
        event_id: str | None = None,
        correlation_id: str | None = None,
    ) -> Envelope:
        topic = topic_for(event)
        if cause is not None:
            return cause.caused(
                role=f"{topic.name}#{role}" if role else topic.name,
                source=self._source,
                type=f"kap.{topic.name}",
                time=event.occurred_at,
            )
        id_ = event_id or new_event_id()
        return Envelope(
            id=id_,
            source=self._source,
            type=f"kap.{topic.name}",
            time=event.occurred_at,
            subject=str(event.client_id),
            clinic_id=event.clinic_id,
            correlation_id=correlation_id or id_,
        )

    async def publish(self, event: Event, envelope: Envelope) -> None:
        """Publish and wait for the broker's acknowledgement (acks=all)."""
        headers = {
            name: value.decode()
            for name, value in envelope.to_headers()
            if name != HEADER_CONTENT_TYPE
        }
        await self._broker.publish(
            event,
            topic=topic_for(event).name,
            key=str(event.client_id).encode(),
            headers=headers,
            correlation_id=envelope.correlation_id,
        )


def _envelope_of(message: KafkaMessage = Context("message")) -> Envelope:
    return Envelope.from_headers(message.headers)


CurrentEnvelope = Annotated[Envelope, Depends(_envelope_of)]
"""Handler parameter: the envelope of the message being handled (bad -> dead letter)."""
