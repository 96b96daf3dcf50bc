"""Issue 14, fault 3: a publish that fails leaves the ledger as the saved schedule says.

`drop` and `_replan` released and reserved booking-ledger slots before
publishing and saving; when the publish failed, the ledger held the new times
while the saved schedule kept the old ones (and a dropped session's slot was
free in the ledger while the schedule still booked it).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from shared import events as ev
from tests.integration.scheduler.world import ledger_of, world

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("change", ["reschedule", "cancel", "miss"])
async def test_a_failed_publish_leaves_the_ledger_matching_the_saved_schedule(
    change: str, kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        schedule = await w.booked_client()
        assert schedule.course is not None
        doses = [
            a for a in schedule.course.plan.appointments if a.kind == ev.AppointmentKind.MEDICINE
        ]
        session = doses[1] if change != "reschedule" else schedule.course.plan.appointments[-1]
        if change == "miss":
            w.clock.advance(session.ends_at - w.clock.now())
        before = await w.ledger()
        assert before == ledger_of(w.clinic, schedule)

        async def attempt() -> None:
            if change == "reschedule":
                moved_to = session.starts_at + timedelta(days=1)
                await w.scheduler.reschedule(w.clinic, session.appointment_id, moved_to)
            else:
                await w.scheduler.drop(w.clinic, session.appointment_id, missed=change == "miss")

        w.publisher.fail = True
        with pytest.raises(ConnectionError):
            await attempt()

        saved = await w.load(schedule.client_id)
        assert saved.course == schedule.course  # nothing was saved
        assert await w.ledger() == ledger_of(w.clinic, saved)

        # Once the broker answers, the same request goes through and the ledger follows.
        w.publisher.fail = False
        await attempt()
        changed = await w.load(schedule.client_id)
        assert changed.course != schedule.course
        assert await w.ledger() == ledger_of(w.clinic, changed)
