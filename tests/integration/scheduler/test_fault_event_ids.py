"""Issue 14, fault 1: an id derived for an HTTP or timer change names that change alone.

Ids used to come from the action's text, so the same move made again later, or
booster 1 of a changed plan, reused an earlier id and the notifier dropped the
real change as one already handled.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from shared import events as ev
from shared import topics
from tests.helpers import topic_messages
from tests.integration.scheduler.world import world

pytestmark = pytest.mark.integration


async def test_moving_a_session_back_and_forth_gives_every_move_its_own_id(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        schedule = await w.booked_client()
        assert schedule.course is not None
        last = schedule.course.plan.appointments[-1]  # an integration session, 24 June
        there, back = last.starts_at + timedelta(days=1), last.starts_at
        for target in (there, back, there, back):
            await w.scheduler.reschedule(w.clinic, last.appointment_id, target)

        moves = await topic_messages(
            kafka_bootstrap,
            topics.SESSION_RESCHEDULED.name,
            key=str(schedule.client_id),
            expect=4,
            wait_s=15,
        )
    assert [m["value"]["appointment"]["starts_at"] for m in moves] == [
        t.isoformat().replace("+00:00", "Z") for t in (there, back, there, back)
    ]
    assert len({m["headers"]["ce_id"] for m in moves}) == 4


async def test_the_first_booster_of_a_changed_plan_is_not_the_earlier_booster_1(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        schedule = await w.completed_client()
        assert schedule.course is not None
        assert schedule.course.next_booster_due_at is not None
        w.clock.advance(schedule.course.next_booster_due_at - w.clock.now() + timedelta(minutes=1))
        assert (await w.scheduler.fire_due_boosters(w.clinic))[0] == 1

        # The care team changes the plan: its booster 1 is 20 days on (before the old booster 2).
        plan = ev.BoosterPlan(interval_days=20, count=2, then_monthly=False)
        changed = await w.scheduler.set_boosters(w.clinic, schedule.client_id, plan)
        assert changed.course is not None
        assert changed.course.next_booster == 2  # numbered on from the course's booster 1
        assert changed.course.next_booster_due_at is not None
        w.clock.advance(changed.course.next_booster_due_at - w.clock.now() + timedelta(minutes=1))
        assert (await w.scheduler.fire_due_boosters(w.clinic))[0] == 1

        due = await topic_messages(
            kafka_bootstrap, topics.BOOSTER_DUE.name, key=str(schedule.client_id), expect=2
        )
    assert [m["value"]["booster_number"] for m in due] == [1, 2]
    assert len({m["headers"]["ce_id"] for m in due}) == 2
