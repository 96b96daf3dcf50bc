"""The outbox relay as a service runs it, on real Kafka and Redis: a round's Redis commands
follow the outboxes due, not the clinics (counted from Redis's own command statistics)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from chassis.config import ServiceSettings
from chassis.kafka import apply_topics
from chassis.outbox import Output
from chassis.service import ServiceRuntime
from chassis.unit_of_work import Decision, Transaction, UnitOfWork
from shared import events as ev
from tests.helpers import write_clinics

pytestmark = pytest.mark.integration

CLINICS = 1000
DUE = 3  # outboxes a dead writer left
PUBLISHED = 10  # outboxes written and published since: marked, not yet due
GRACE_MS = 1000
BUCKETS = 4
# The relay's loop over what it owns: per bucket its lease taken and let go, its read;
# per due outbox its read, publish, clear and settle; a few connections' handshakes.
PER_BUCKET, PER_DUE, SPARE = 10, 15, 20
# The test's own probe, left out of the count (the relay never sends it).
PROBE = "hlen"


async def _write(uow: UnitOfWork, clinic: str, *, publish: bool) -> None:
    event = ev.ConsultationRequested(
        clinic_id=clinic,
        client_id=uuid.uuid4(),
        occurred_at=datetime.now(UTC),
        contact=ev.Contact(name="Relay Test", email="relay@example.org"),
    )
    envelope = uow.outbox._publisher.envelope_for(event)

    async def step(tx: Transaction) -> Decision[None]:
        return Decision(lambda p: None, [Output(event, envelope)])

    if publish:
        await uow.run(clinic, [], step)
        return

    async def died(clinic_id: str, outputs: Any) -> None:  # between the EXEC and the publish
        return None

    uow.publish = died  # type: ignore[method-assign]
    try:
        await uow.run(clinic, [], step)
    finally:
        del uow.publish


async def _calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    skipped = {"cmdstat_info", f"cmdstat_{PROBE}"}
    return sum(int(v["calls"]) for k, v in stats.items() if k not in skipped)


async def test_a_relay_round_costs_what_is_due_not_a_read_per_clinic(
    kafka_bootstrap: str, redis_url: str, redis_client: Redis, unique: str, tmp_path: Path
) -> None:
    await apply_topics(kafka_bootstrap)
    ids = [f"relay-{unique}-{n}" for n in range(CLINICS)]
    spec = {"name": "Relay", "timezone": "Europe/London", "key": "k"}
    settings = ServiceSettings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        REDIS_URL=redis_url,
        KAP_CLINICS_FILE=write_clinics(tmp_path / "clinics.json", dict.fromkeys(ids, spec)),
        KAP_RELAY_GRACE_MS=GRACE_MS,
        KAP_DUE_BUCKETS=BUCKETS,
    )
    runtime = ServiceRuntime.create("intake", settings)
    uow, relay = runtime.unit_of_work, runtime.workers[-1]
    due, published = ids[:DUE], ids[DUE : DUE + PUBLISHED]
    await runtime.broker.start()
    try:
        for clinic in due:
            await _write(uow, clinic, publish=False)
        await asyncio.sleep(GRACE_MS / 1000)
        for clinic in published:
            await _write(uow, clinic, publish=True)

        before = await _calls(redis_client)
        task = asyncio.create_task(relay())
        deadline = time.monotonic() + 10
        boxes = [f"intake:{{{c}}}:outbox" for c in due]
        while any([await redis_client.hlen(box) for box in boxes]):
            assert time.monotonic() < deadline, "the relay did not publish what was due"
            await asyncio.sleep(0.05)
        runtime.supervisor.stopping.set()
        await asyncio.wait_for(task, 10)
        spent = await _calls(redis_client) - before
    finally:
        await runtime.broker.stop()
        # The marks left (the published ones' are not due yet): not a later run's to meet.
        async for bucket in redis_client.scan_iter(match="kap:due:{intake-outbox-[0-9]*}"):
            await redis_client.zrem(bucket, *ids[: DUE + PUBLISHED])
        await runtime.redis.aclose()

    # The old relay read every clinic's outbox each round: over a thousand commands.
    assert spent <= PER_BUCKET * BUCKETS + PER_DUE * DUE + SPARE, spent
