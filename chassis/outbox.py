"""The outbox: a write step's events, recorded with it, published after, relayed if lost.

Per clinic, in its slot: `{service}:{clinic}:outbox` (a hash: event id -> the event,
its envelope and topic) and `...:outbox:written` (a sorted set: event id -> when it
was written, ms). The unit of work queues a step's outputs here in its MULTI
(`queue`), then publishes them (acks=all) and takes them out (`publish`). What a
writer did not get to publish, because it died or the broker was away, is
published by the relay (`relay_once`, a loop every replica runs) once it has
waited `grace_ms`: the writer had its chance. Published twice at worst (a relay
racing a slow writer), always with the same ids, which readers drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from chassis.events import EventPublisher
from chassis.workers import Worker
from shared.envelope import Envelope
from shared.events import Event
from shared.topics import BY_NAME, topic_for

log = logging.getLogger(__name__)

GRACE_MS = 30_000  # an output this old, still in the outbox, lost its publisher
RELAY_BATCH = 100
RELAY_EVERY_S = 5.0


@dataclass(frozen=True)
class Output:
    """An event a write step causes, with its envelope (its id derived, so a replay
    repeats it)."""

    event: Event
    envelope: Envelope


class Outbox:
    def __init__(
        self, redis: Redis, service: str, publisher: EventPublisher, grace_ms: int = GRACE_MS
    ) -> None:
        self._redis = redis
        self._service = service
        self._publisher = publisher
        self.grace_ms = grace_ms

    def _keys(self, clinic_id: str) -> tuple[str, str]:
        base = f"{self._service}:{{{clinic_id}}}:outbox"
        return base, f"{base}:written"

    def queue(self, tx: Pipeline, clinic_id: str, outputs: Sequence[Output]) -> list[str]:
        """Queue `outputs` on a write step's MULTI; their ids."""
        if not outputs:
            return []
        box, written = self._keys(clinic_id)
        now_ms = time.time() * 1000
        payloads = {o.envelope.id: json.dumps(_payload(o)) for o in outputs}
        tx.hset(box, mapping=payloads)  # type: ignore[arg-type]
        tx.zadd(written, dict.fromkeys(payloads, now_ms))
        return list(payloads)

    # --- after the write ---------------------------------------------------------

    async def publish(self, clinic_id: str, outputs: Sequence[Output]) -> None:
        """Publish `outputs` (acks=all), then take them out of the outbox."""
        if not outputs:
            return
        await self._publisher.publish_all([(o.event, o.envelope) for o in outputs])
        await self._clear(clinic_id, [o.envelope.id for o in outputs])

    async def _clear(self, clinic_id: str, ids: Sequence[str]) -> None:
        box, written = self._keys(clinic_id)
        async with self._redis.pipeline(transaction=True) as tx:
            tx.hdel(box, *ids)
            tx.zrem(written, *ids)
            await tx.execute()

    async def publish_due(self, clinic_id: str, ids: Sequence[str]) -> None:
        """Those of `ids` still in the outbox whose writer had its time to publish them
        (`relay_grace_ms`), published now: a redelivered input's. Younger ones are left to
        their writer, perhaps publishing them right now (a duplicate delivery handled
        concurrently), and to the relay should it have died."""
        if not ids:
            return
        box, written = self._keys(clinic_id)
        before = time.time() * 1000 - self.grace_ms
        scores = await self._redis.zmscore(written, list(ids))
        due = [i for i, at in zip(ids, scores, strict=True) if at is not None and at <= before]
        if due:
            raw = await self._redis.hmget(box, due)
            await self.publish(clinic_id, [_output(r) for r in raw if r is not None])

    async def relay_once(self, clinic_ids: Iterable[str], grace_ms: int | None = None) -> int:
        """Publish every output that has waited in an outbox longer than `grace_ms` (the
        unit's `relay_grace_ms` by default); how many."""
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
        self,
        clinic_ids: Callable[[], Iterable[str]],
        stopping: asyncio.Event,
        every_s: float = RELAY_EVERY_S,
    ) -> Worker:
        """A background loop (for the service's Supervisor) publishing what dead writers
        left in the outboxes of `clinic_ids()`, every `every_s` until `stopping`."""

        async def outbox_relay() -> None:
            while not stopping.is_set():
                await self.relay_once(list(clinic_ids()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), every_s)

        return outbox_relay


def _payload(output: Output) -> dict[str, Any]:
    return {
        "topic": topic_for(output.event).name,
        "event": output.event.model_dump(mode="json"),
        "envelope": output.envelope.model_dump(mode="json"),
    }


def _output(raw: bytes | str) -> Output:
    item = json.loads(raw)
    event = BY_NAME[item["topic"]].event.model_validate(item["event"])
    return Output(event, Envelope.model_validate(item["envelope"]))


def output_ids(raw: bytes | str) -> list[str]:
    """The output ids a handled mark lists (one written before the unit of work: payloads)."""
    listed = json.loads(raw)
    if not isinstance(listed, list):
        return []
    return [i if isinstance(i, str) else i["envelope"]["id"] for i in listed]
