"""Boosters falling due together are fired as a batch: one busy client holds up no other."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from chassis.clock import SystemClock
from chassis.service import ServiceRuntime
from ops import demo_clinics
from services.scheduler.config import Settings
from services.scheduler.main import SERVICE, scheduler_for
from services.scheduler.store import key
from tests.builders.scheduler import completed_course, due_at

pytestmark = pytest.mark.integration


async def test_a_client_busy_elsewhere_keeps_its_booster_and_the_others_fire(
    kafka_bootstrap: str, redis_url: str, redis_client: Redis, tmp_path: Path
) -> None:
    clinic = f"batch-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        REDIS_URL=redis_url,
        KAP_CLINICS_FILE=demo_clinics.write(
            tmp_path / "clinics.json", {clinic: {"name": "Batch", "timezone": "Europe/Lisbon"}}
        ),
    )
    runtime = ServiceRuntime.create(SERVICE, settings, SystemClock())
    scheduler = scheduler_for(runtime)
    await runtime.start()
    try:
        now = datetime.now(UTC)
        template = completed_course(await scheduler.calendar(clinic), now - timedelta(days=15))
        busy, free = uuid.uuid4(), uuid.uuid4()
        async with scheduler.store.transaction() as tx:
            for client in (busy, free):
                scheduler.store.save(tx, due_at(template, client, now - timedelta(seconds=1)))
            await tx.execute()

        # The API holds the busy client's lock for the whole round.
        async with scheduler.store.locked(clinic, busy):
            fired, more_due = await scheduler.fire_due_boosters(clinic)

        assert (fired, more_due) == (1, False)
        free_now, busy_now = await scheduler.store.load_many(clinic, [free, busy])
        assert free_now is not None
        assert free_now.course is not None
        assert busy_now is not None
        assert busy_now.course is not None
        assert free_now.course.next_booster == 2
        assert busy_now.course.next_booster == 1  # untouched, its claim still in flight
        inflight = await redis_client.zrange(key(clinic, "boosters", "inflight"), 0, -1)
        assert inflight == [f"{busy}|1"]
    finally:
        await runtime.stop()
        await demo_clinics.reset(redis_url, [clinic])
