"""Boosters falling due together are fired as a batch, in one write step: a change to
one of its clients between the step's read and its write makes it decide again from what
is there now (the change is kept, and every booster is still announced once)."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from chassis.clock import SystemClock
from chassis.service import ServiceRuntime
from ops import demo_clinics
from services.scheduler.config import Settings
from services.scheduler.main import SERVICE, scheduler_for
from services.scheduler.scheduler import Scheduler
from services.scheduler.store import key
from services.scheduler.timers import BoostersFired
from shared import topics
from tests.builders.scheduler import completed_course, due_at
from tests.helpers import topic_messages

pytestmark = pytest.mark.integration


async def test_a_change_made_during_the_batch_is_kept_and_every_booster_fires_once(
    kafka_bootstrap: str, redis_url: str, redis_client: Redis, tmp_path: Path
) -> None:
    async with _scheduler(kafka_bootstrap, redis_url, tmp_path, "batch") as (clinic, scheduler):
        now = datetime.now(UTC)
        template = completed_course(await scheduler.calendar(clinic), now - timedelta(days=15))
        busy, free = uuid.uuid4(), uuid.uuid4()
        for client in (busy, free):
            await _save(
                redis_client, scheduler, due_at(template, client, now - timedelta(seconds=1))
            )

        reads = 0
        load_many = scheduler.store.load_many

        async def changed_meanwhile(clinic_id: str, clients: Sequence[uuid.UUID]) -> Any:
            nonlocal reads
            found = await load_many(clinic_id, clients)
            reads += 1
            if reads == 1:  # another writer changes the busy client after the read
                schedule = await load_many(clinic_id, [busy])
                assert schedule[0] is not None
                changed = schedule[0].model_copy(update={"correlation_id": "changed-meanwhile"})
                await redis_client.set(key(clinic, "client", str(busy)), changed.model_dump_json())
            return found

        scheduler.store.load_many = changed_meanwhile  # type: ignore[method-assign]
        fired, more_due = await scheduler.fire_due_boosters(clinic)

        assert (fired, more_due) == (2, False)
        assert reads == 3  # the announcing step decided again, then the bookings' step
        free_now, busy_now = await load_many(clinic, [free, busy])
        assert free_now is not None
        assert free_now.course is not None
        assert busy_now is not None
        assert busy_now.course is not None
        assert free_now.course.next_booster == 2
        assert busy_now.course.next_booster == 2
        assert busy_now.correlation_id == "changed-meanwhile"  # not overwritten
        for course in (free_now.course, busy_now.course):  # each booked once, none owed
            assert [b.number for b in course.booster_sessions] == [1]
            assert course.boosters_to_book == ()
        assert await redis_client.zcard(key(clinic, "boosters", "inflight")) == 0


@asynccontextmanager
async def _scheduler(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, name: str
) -> AsyncIterator[tuple[str, Scheduler]]:
    """A scheduler of its own on a fresh clinic (its keys removed afterwards)."""
    clinic = f"{name}-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        REDIS_URL=redis_url,
        KAP_CLINICS_FILE=demo_clinics.write(
            tmp_path / "clinics.json", {clinic: {"name": name, "timezone": "Europe/Lisbon"}}
        ),
    )
    runtime = ServiceRuntime.create(SERVICE, settings, SystemClock())
    await runtime.start()
    try:
        yield clinic, scheduler_for(runtime)
    finally:
        await runtime.stop()
        await demo_clinics.reset(redis_url, [clinic])


async def _save(redis: Redis, scheduler: Any, schedule: Any) -> None:
    async with redis.pipeline(transaction=True) as tx:
        scheduler.store.save(tx, schedule)
        await tx.execute()


async def test_a_replica_whose_leases_were_taken_over_announces_nothing(
    kafka_bootstrap: str, redis_url: str, redis_client: Redis, tmp_path: Path
) -> None:
    async with _scheduler(kafka_bootstrap, redis_url, tmp_path, "fence") as (clinic, scheduler):
        now = datetime.now(UTC)
        calendar = await scheduler.calendar(clinic)
        template = completed_course(calendar, now - timedelta(days=15))
        clients = [uuid.uuid4(), uuid.uuid4()]
        for client in clients:
            await _save(
                redis_client, scheduler, due_at(template, client, now - timedelta(seconds=1))
            )

        # A replica claims the batch, then stalls past its lease: another takes it over.
        stale = await scheduler.store.boosters.claim(clinic, now, lease_ms=1, limit=50)
        assert len(stale) == 2
        await asyncio.sleep(0.05)
        assert await scheduler.fire_due_boosters(clinic) == (2, False)

        late = await scheduler.unit_of_work.run(
            clinic, [], functools.partial(scheduler._fire, calendar, now, stale)
        )
        assert late == BoostersFired()  # fenced out: it wrote and published nothing
        announced = [
            m
            for c in clients
            for m in await topic_messages(kafka_bootstrap, topics.BOOSTER_DUE.name, key=str(c))
        ]
        assert len(announced) == 2  # one per client, counted on the topic
