"""Handle each event's effects once, and publish what they cause at least once.

A handler computes its new state and the events it causes, then commits the
state together with a record of the handled event and those outputs in one
Redis transaction, then publishes the outputs. If the process dies after the
commit, the redelivered event finds its record and the outputs are published
again with the same ids (derived ids are deterministic), which readers drop as
duplicates. Nothing is applied twice; nothing is lost.

Two deliveries of one event may be handled at once (a zombie consumer after a
rebalance): the caller checks `replayed` under its lock and watches the handled
key (`watch`) from before that check to its commit, and the record is written
only if absent, so of two racing handlers one records and the other's commit
fails; neither overwrites the other's outputs.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from chassis.events import EventPublisher
from chassis.outbox import Output as Output
from shared.envelope import Envelope
from shared.topics import BY_NAME, topic_for

# How long a handled event is remembered: longer than any redelivery.
REMEMBER_S = 14 * 24 * 60 * 60


class EffectLog:
    def __init__(self, redis: Redis, service: str, publisher: EventPublisher) -> None:
        self._redis = redis
        self._service = service
        self._publisher = publisher

    def _key(self, envelope: Envelope) -> str:
        return self._handled_key(envelope.clinic_id, envelope.id)

    def _handled_key(self, clinic_id: str, event_id: str) -> str:
        return f"{self._service}:{{{clinic_id}}}:handled:{event_id}"

    async def watch(self, tx: Pipeline, cause: Envelope) -> None:
        """Make `tx` fail should anyone record `cause` as handled before it executes."""
        await tx.watch(self._key(cause))

    async def handled(self, causes: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (clinic id, event id) were handled: their effects are applied."""
        wanted = list(causes)
        if not wanted:
            return set()
        # One round trip; not one MGET, since the keys are in their clinics' own slots.
        async with self._redis.pipeline(transaction=False) as reads:
            for clinic_id, event_id in wanted:
                reads.exists(self._handled_key(clinic_id, event_id))
            found = await reads.execute()
        return {cause for cause, exists in zip(wanted, found, strict=True) if exists}

    async def replayed(self, cause: Envelope) -> bool:
        """True when `cause` was handled before; outputs not yet confirmed are published again."""
        key = self._key(cause)
        raw, published = await self._redis.mget(key, key + ":published")
        if raw is None:
            return False
        if published is None:
            outputs = []
            for item in json.loads(raw):
                event = BY_NAME[item["topic"]].event.model_validate(item["event"])
                outputs.append(Output(event, Envelope.model_validate(item["envelope"])))
            await self.publish(cause, outputs)
        return True

    def record(self, tx: Pipeline, cause: Envelope, outputs: Sequence[Output]) -> None:
        """Add the 'handled, with these outputs' record to the caller's transaction."""
        payload = [
            {
                "topic": topic_for(o.event).name,
                "event": o.event.model_dump(mode="json"),
                "envelope": o.envelope.model_dump(mode="json"),
            }
            for o in outputs
        ]
        # Only if absent: a record, once written, is the outputs every replay publishes.
        tx.set(self._key(cause), json.dumps(payload), ex=REMEMBER_S, nx=True)

    async def publish(self, cause: Envelope, outputs: Sequence[Output]) -> None:
        await self._publisher.publish_all([(o.event, o.envelope) for o in outputs])
        # Only a crash before this line makes a redelivery publish the outputs again.
        await self._redis.set(self._key(cause) + ":published", "1", ex=REMEMBER_S)
