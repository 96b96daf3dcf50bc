"""Issue 14, fault 4: a change whose client lock expired mid-publish cannot overwrite a newer one.

The lock lives a fixed time while a Kafka request may take longer; the save that
followed the publish was not fenced, so a slow holder wrote back the schedule it
had loaded, undoing a change another replica made after the lock expired.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from services.scheduler import store
from services.scheduler.store import ClientBusy
from shared import events as ev
from tests.integration.scheduler.world import ledger_of, world

pytestmark = pytest.mark.integration


async def test_a_slow_holder_whose_lock_expired_does_not_overwrite_a_newer_change(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "LOCK_TIMEOUT_S", 1.0)  # a lock that expires within the test
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        schedule = await w.booked_client()
        assert schedule.course is not None
        last = schedule.course.plan.appointments[-1]
        dose_2 = [
            a for a in schedule.course.plan.appointments if a.kind == ev.AppointmentKind.MEDICINE
        ][1]

        w.publisher.stall_s = 2.5  # the slow holder's publish outlives its lock
        slow = asyncio.create_task(
            w.scheduler.reschedule(
                w.clinic, last.appointment_id, last.starts_at + timedelta(days=1)
            )
        )
        await w.publisher.stalled.wait()
        await asyncio.sleep(1.3)  # its lock has expired: another replica gets in
        await w.replica().drop(w.clinic, dose_2.appointment_id, missed=False)
        newer = await w.load(schedule.client_id)
        assert newer.course is not None
        assert newer.course.status_of(dose_2.appointment_id) == ev.AppointmentStatus.CANCELLED

        with pytest.raises(ClientBusy):
            await slow

        final = await w.load(schedule.client_id)
        assert final == newer  # the newer change stands
        assert await w.ledger() == ledger_of(w.clinic, final)
