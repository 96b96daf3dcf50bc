"""Issue 14, fault 4: a slow change cannot overwrite a newer one.

The lock lived a fixed time while a Kafka request could take longer; the save
that followed the publish was not fenced, so a slow holder wrote back the
schedule it had loaded, undoing a change another replica made after the lock
expired. Since issue 15 there is no lock: the schedule is watched from the
step's read to its write, so a change made meanwhile makes the slow step decide
again, on the newer schedule.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from chassis.unit_of_work import Transaction
from services.scheduler.domain.schedule import ClientSchedule
from services.scheduler.store import SchedulerStore
from shared import events as ev
from tests.integration.scheduler.world import ledger_of, world

pytestmark = pytest.mark.integration


class SlowFirstLoad(SchedulerStore):
    """Real Redis; the first read of a schedule takes a while."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis)
        self.loaded = asyncio.Event()
        self.proceed = asyncio.Event()
        self.loads = 0

    async def load_watched(
        self, tx: Transaction, clinic_id: str, client_id: uuid.UUID
    ) -> ClientSchedule | None:
        schedule = await super().load_watched(tx, clinic_id, client_id)
        self.loads += 1
        if self.loads == 1:
            self.loaded.set()
            await self.proceed.wait()
        return schedule


async def test_a_slow_change_decides_again_on_a_newer_one_instead_of_overwriting_it(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        schedule = await w.booked_client()
        assert schedule.course is not None
        last = schedule.course.plan.appointments[-1]
        dose_2 = [
            a for a in schedule.course.plan.appointments if a.kind == ev.AppointmentKind.MEDICINE
        ][1]
        slow_replica = w.replica()
        slow_replica.store = slow = SlowFirstLoad(w.runtime.redis)

        moved_to = last.starts_at + timedelta(days=1)
        slow_change = asyncio.create_task(
            slow_replica.reschedule(w.clinic, last.appointment_id, moved_to)
        )
        await slow.loaded.wait()  # it has read the schedule; another replica gets in
        await w.scheduler.drop(w.clinic, dose_2.appointment_id, missed=False)
        slow.proceed.set()
        await slow_change

        final = await w.load(schedule.client_id)
        assert final.course is not None
        assert slow.loads == 2  # it decided again, on what the other had saved
        assert final.course.status_of(dose_2.appointment_id) == ev.AppointmentStatus.CANCELLED
        assert final.course.appointment(last.appointment_id).starts_at == moved_to
        assert await w.ledger() == ledger_of(w.clinic, final, w.clock.now())
