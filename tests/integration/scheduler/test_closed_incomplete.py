"""A dose cancelled when no replacement fits inside the course window, over the clinic's
HTTP API and real Kafka and Redis: the course is closed as incomplete, every session
still ahead is released, and nothing is booked after."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared import events as ev
from shared import topics
from tests.helpers import topic_messages
from tests.integration.scheduler.world import world

pytestmark = pytest.mark.integration

# Two doses at least 48 h apart, each with its integration a day or more after, every
# session on a day of its own, in a four-day window: the second dose falls on the window's
# third day, so once the first is held, a replacement given the 24 h notice leaves its
# integration no day inside the window. Completions need no check-in here (its rules:
# test_checkin_record.py).
TIGHT = {
    "medicine_sessions": 2,
    "course_window_days": 4,
    "checkin": {"completion_requires_checkin": False},
}


async def test_a_dose_the_window_can_no_longer_hold_closes_the_course_and_releases_the_rest(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w, w.http() as http:
        calendar = (await http.get("/calendar")).json()
        for read_only in ("clinic_id", "timezone"):
            calendar.pop(read_only)
        tight = {**calendar, "policy": {**calendar["policy"], **TIGHT}}
        put = await http.put("/calendar", json=tight)
        assert put.status_code == 200, put.text
        booked = await w.booked_client()
        client = booked.client_id
        assert booked.course is not None
        plan = sorted(booked.course.plan.appointments, key=lambda a: a.starts_at)
        first, second = [a for a in plan if a.kind is ev.AppointmentKind.MEDICINE]

        w.clock.advance(first.ends_at - w.clock.now())
        held = await http.post(
            f"/appointments/{first.appointment_id}/completion", json={"ride_home_confirmed": True}
        )
        assert held.status_code == 200, held.text

        # The morning of the second dose, the window's last day: the client cancels.
        w.clock.advance(second.starts_at - timedelta(hours=2) - w.clock.now())
        ahead = [a for a in plan if a.starts_at > w.clock.now()]
        assert second in ahead
        cancelled = await http.post(f"/appointments/{second.appointment_id}/cancellation")
        assert cancelled.status_code == 200, cancelled.text
        answer: dict[str, Any] = cancelled.json()

        key = str(client)
        [ended] = await topic_messages(kafka_bootstrap, topics.COURSE_ENDED.name, key=key)
        statuses = await topic_messages(
            kafka_bootstrap, topics.PUBLIC_APPOINTMENT_STATUS.name, key=key, expect=len(ahead)
        )
        scheduled = await topic_messages(
            kafka_bootstrap, topics.SESSION_SCHEDULED.name, key=key, wait_s=1
        )
        moved = await topic_messages(
            kafka_bootstrap, topics.SESSION_RESCHEDULED.name, key=key, wait_s=1
        )
        held_ids = {m.split("|")[2] for members in (await w.ledger()).values() for m in members}

    assert answer["replanned"] is False
    assert answer["problem"]
    assert (answer["course"]["standing"], answer["course"]["end_code"]) == (
        "ended",
        "closed_incomplete",
    )
    assert ended["value"]["reason"] == "closed_incomplete"
    assert ended["value"]["medicine_sessions_completed"] == 1
    # Every session still ahead was cancelled, on the public topic too; nothing booked.
    cancelled_ids = {
        m["value"]["appointment_id"] for m in statuses if m["value"]["status"] == "cancelled"
    }
    assert cancelled_ids == {str(a.appointment_id) for a in ahead}
    assert [m for m in statuses if m["value"]["status"] == "booked"] == []
    assert (scheduled, moved) == ([], [])
    assert held_ids.isdisjoint(str(a.appointment_id) for a in ahead)
