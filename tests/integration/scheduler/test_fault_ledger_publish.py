"""Issue 14, fault 3: a publish that fails leaves the ledger as the saved schedule says.

`drop` and `_replan` released and reserved booking-ledger slots before
publishing and saving; when the publish failed, the ledger held the new times
while the saved schedule kept the old ones (and a dropped session's slot was
free in the ledger while the schedule still booked it). Since issue 15 the
change, its ledger moves and its events are recorded in one write before any
publish: a broker that fails after it leaves the events in the outbox, and
the relay publishes them once the broker answers.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from shared import events as ev
from shared import topics
from tests.helpers import topic_messages
from tests.integration.scheduler.world import ledger_of, world

pytestmark = pytest.mark.integration

TOPIC = {
    "reschedule": topics.SESSION_RESCHEDULED.name,
    "cancel": topics.SESSION_CANCELLED.name,
    "miss": topics.SESSION_MISSED.name,
}


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
        assert before == ledger_of(w.clinic, schedule)  # saved by the test: untrimmed

        async def attempt() -> None:
            if change == "reschedule":
                moved_to = session.starts_at + timedelta(days=1)
                await w.scheduler.reschedule(w.clinic, session.appointment_id, moved_to)
            else:
                await w.scheduler.drop(w.clinic, session.appointment_id, missed=change == "miss")

        w.publisher.fail = True
        await attempt()  # recorded; answered; its events wait in the outbox

        changed = await w.load(schedule.client_id)
        assert changed.course != schedule.course
        assert await w.ledger() == ledger_of(w.clinic, changed, w.clock.now())
        assert await w.scheduler.unit_of_work.pending(w.clinic) > 0
        client = str(schedule.client_id)
        assert await topic_messages(kafka_bootstrap, TOPIC[change], key=client, wait_s=1) == []

        # Once the broker answers, the relay publishes them: exactly once on the topic.
        w.publisher.fail = False
        assert await w.scheduler.unit_of_work.relay_once([w.clinic], grace_ms=0) > 0
        assert await w.scheduler.unit_of_work.pending(w.clinic) == 0
        assert len(await topic_messages(kafka_bootstrap, TOPIC[change], key=client)) == 1
