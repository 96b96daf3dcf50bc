"""The outbox: a write step's events, recorded with it, published after, relayed if lost.

Per clinic, in its slot: `{service}:{clinic}:outbox` (a hash: event id -> the event,
its envelope and topic) and `...:outbox:written` (a sorted set: event id -> when it
was written, ms). The unit of work queues a step's outputs here in its MULTI
(`queue`), then publishes them (acks=all) and takes them out (`publish`). What a
writer did not get to publish, because it died or the broker was away, is
published by the relay (`relay`, a loop every replica runs) once it has waited
`grace_ms`: the writer had its chance. Published twice at worst (a relay racing a
slow writer), always with the same ids, which readers drop.

The relay finds those outboxes through a due index (chassis.due_index, kind
`<service>-outbox`): a write that queues outputs marks its clinic due at written +
grace (`mark_due`, ZADD LT: an earlier mark wins). On one Redis node the mark is in
the write's MULTI, so no crash leaves an output the index does not know; on a
cluster the index bucket is another slot, so it is written right after the commit,
and one lost to a crash between the two is found by the sweep (chassis.due_work).
A round of the relay reads the buckets this replica owns (chassis.buckets), relays
the clinics found due and settles each (out of the index once its outbox is empty,
else at its oldest entry + grace); the sweep's share of clinics costs one read each.
So a round costs a read per owned bucket and a few commands per due clinic, not a
read per clinic, and the replicas split the buckets instead of repeating the walk.
An outbox is due only when a writer failed to publish, or `grace_ms` after a write
whose writer did (its mark is then settled away by one look).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from chassis.buckets import BucketOwners
from chassis.due_index import DueIndex
from chassis.due_work import DueWork
from chassis.events import EventPublisher
from chassis.metrics import ServiceMetrics
from chassis.redis_client import fresh_slot_map, transaction
from chassis.workers import Worker
from shared.envelope import Envelope
from shared.events import Event
from shared.topics import BY_NAME, topic_for

log = logging.getLogger(__name__)

GRACE_MS = 30_000  # an output this old, still in the outbox, lost its publisher
RELAY_BATCH = 100
RELAY_EVERY_S = 5.0
DUE_BUCKETS = 16  # the services pass KAP_DUE_BUCKETS


@dataclass(frozen=True)
class Output:
    """An event a write step causes, with its envelope (its id derived, so a replay
    repeats it)."""

    event: Event
    envelope: Envelope


class Outbox:
    def __init__(
        self,
        redis: Redis,
        service: str,
        publisher: EventPublisher,
        grace_ms: int = GRACE_MS,
        buckets: int = DUE_BUCKETS,
    ) -> None:
        self._redis = redis
        self._service = service
        self._publisher = publisher
        self.grace_ms = grace_ms
        # Clinics by when their outbox is due to the relay (epoch s, wall clock, as `written`).
        self.index = DueIndex(redis, f"{service}-outbox", buckets)

    def _keys(self, clinic_id: str) -> tuple[str, str]:
        base = f"{self._service}:{{{clinic_id}}}:outbox"
        return base, f"{base}:written"

    def queue(self, tx: Pipeline, clinic_id: str, outputs: Sequence[Output]) -> list[str]:
        """Queue `outputs` on a write step's MULTI; their ids."""
        if not outputs:
            return []
        box, written = self._keys(clinic_id)
        now_ms = time.time() * 1000
        payloads = {o.envelope.id: _payload(o) for o in outputs}
        tx.hset(box, mapping=payloads)  # type: ignore[arg-type]
        tx.zadd(written, dict.fromkeys(payloads, now_ms))
        return list(payloads)

    def mark_due(self, tx: Pipeline, clinic_id: str) -> float | None:
        """After `queue` (and the slot check: the index is another slot's): the clinic is due
        to the relay once this write's outputs waited `grace_ms`. On one node the mark joins
        the MULTI and None comes back; on a cluster, where a MULTI holds one slot, the time
        comes back, for the caller to `index.hint` right after the commit."""
        return self.index.hint_within(tx, clinic_id, time.time() + self.grace_ms / 1000)

    async def next_due(self, clinic_id: str) -> float | None:
        """When the clinic's outbox is next due to the relay: its oldest entry + grace (epoch
        s); None: empty. What `settle` scores the clinic's index entry by."""
        _, written = self._keys(clinic_id)
        oldest = await self._redis.zrange(written, 0, 0, withscores=True)
        return float(oldest[0][1]) / 1000 + self.grace_ms / 1000 if oldest else None

    # --- after the write ---------------------------------------------------------

    async def publish(self, clinic_id: str, outputs: Sequence[Output]) -> None:
        """Publish `outputs` (acks=all), then take them out of the outbox."""
        if not outputs:
            return
        await self._publisher.publish_all([(o.event, o.envelope) for o in outputs])
        await self._clear(clinic_id, [o.envelope.id for o in outputs])

    async def _clear(self, clinic_id: str, ids: Sequence[str]) -> None:
        box, written = self._keys(clinic_id)
        await fresh_slot_map(self._redis)
        async with transaction(self._redis) as tx:
            tx.hdel(box, *ids)
            tx.zrem(written, *ids)
            await tx.execute()

    def relay_work(
        self,
        clinic_ids: Callable[[], Iterable[str]],
        lease_ms: int,
        sweep_s: float,
        metrics: ServiceMetrics | None = None,
    ) -> DueWork:
        """One replica's share of the relay: this outbox's index, its buckets leased among
        the replicas, and the sweep over `clinic_ids()` (every clinic)."""
        owners = BucketOwners(self._redis, self.index.kind, self.index.buckets, lease_ms)
        return DueWork(self.index, owners, clinic_ids, self.next_due, sweep_s, metrics)

    async def relay_due(self, work: DueWork) -> int:
        """One round of the relay: the outboxes found due in this replica's buckets relayed
        and settled; the sweep's share put back in the index if not empty. How many
        outputs were published."""
        due, swept = await work.found(time.time())
        published = 0
        for clinic_id in due:
            published += await self.relay_once([clinic_id])
            # After the relay: settle reads what it left (none, or younger, or past a batch).
            await work.settle(clinic_id)
        for clinic_id in swept:
            at = await self.next_due(clinic_id)
            if at is not None:  # an outbox whose mark was lost: the next round finds it
                await self.index.hint(clinic_id, at)
        return published

    async def relay_once(self, clinic_ids: Iterable[str], grace_ms: int | None = None) -> int:
        """Publish every output of these clinics that has waited in their outbox longer than
        `grace_ms` (the unit's `relay_grace_ms` by default); how many."""
        grace_ms = self.grace_ms if grace_ms is None else grace_ms
        published = 0
        before = time.time() * 1000 - grace_ms
        for clinic_id in clinic_ids:
            box, written = self._keys(clinic_id)
            ids = await self._redis.zrangebyscore(written, 0, before, start=0, num=RELAY_BATCH)
            if not ids:
                continue
            names = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
            raw = await self._redis.hmget(box, names)
            outputs = [_output(r) for r in raw if r is not None]
            gone = [n for n, r in zip(names, raw, strict=True) if r is None]
            if gone:  # cleared meanwhile by their publisher
                await self._redis.zrem(written, *gone)
            if outputs:
                log.warning(
                    "relay: %d output(s) of clinic %s were left unpublished; publishing",
                    len(outputs),
                    clinic_id,
                )
                await self.publish(clinic_id, outputs)
                published += len(outputs)
        return published

    async def pending(self, clinic_id: str) -> int:
        """How many outputs wait in the clinic's outbox (a gauge for dashboards)."""
        _, written = self._keys(clinic_id)
        return int(await self._redis.zcard(written))

    def relay(
        self, work: DueWork, stopping: asyncio.Event, every_s: float = RELAY_EVERY_S
    ) -> Worker:
        """A background loop (for the service's Supervisor) publishing what dead writers
        left in the outboxes `work` finds due, every `every_s` until `stopping`. An error
        (Kafka away) ends the loop, for the Supervisor to restart it after a backoff."""

        async def outbox_relay() -> None:
            try:
                while not stopping.is_set():
                    await self.relay_due(work)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), every_s)
            finally:
                with contextlib.suppress(Exception):  # else the others take them when leases end
                    await work.owners.release()

        return outbox_relay


def _payload(output: Output) -> str:
    """The output as one JSON object: its topic, event and envelope (each model serialised
    by pydantic's own encoder, at a fraction of json.dumps of its dump's cost)."""
    topic = orjson.dumps(topic_for(output.event).name).decode()
    event = output.event.model_dump_json()
    envelope = output.envelope.model_dump_json()
    return f'{{"topic":{topic},"event":{event},"envelope":{envelope}}}'


def _output(raw: bytes | str) -> Output:
    item = orjson.loads(raw)
    event = BY_NAME[item["topic"]].event.model_validate(item["event"])
    return Output(event, Envelope.model_validate(item["envelope"]))
