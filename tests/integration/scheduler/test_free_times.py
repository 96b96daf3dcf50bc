"""The times offered for moving a session are the times the reschedule accepts, over the
real Kafka and Redis (issue 21: reschedule offering the free times)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from chassis.clock import FrozenClock
from chassis.events import EventPublisher
from shared import events as ev
from shared import topics
from tests.helpers import auth, topic_messages
from tests.integration.scheduler.test_scheduler_service import booked_course, enrol

pytestmark = pytest.mark.integration
LISBON = ZoneInfo("Europe/Lisbon")


async def booked_doses(
    intake_events: EventPublisher, clock: FrozenClock, kafka_bootstrap: str
) -> tuple[str, list[ev.Appointment]]:
    """A client enrolled, and the medicine sessions of the course the scheduler booked."""
    client, _ = await enrol(intake_events, clock)
    course = (await booked_course(kafka_bootstrap, client))["value"]
    doses = [a for a in course["appointments"] if a["kind"] == "medicine"]
    return client, [ev.Appointment.model_validate(a) for a in doses]


async def _offered(
    scheduler: httpx.AsyncClient, appointment_id: object, day: str
) -> list[dict[str, object]]:
    response = await scheduler.get(
        f"/v1/clinics/lisbon/appointments/{appointment_id}/free-times",
        params={"date": day},
        headers=auth("lisbon"),
    )
    assert response.status_code == 200, response.text
    assert response.json()["timezone"] == "Europe/Lisbon"
    times: list[dict[str, object]] = response.json()["times"]
    return times


async def test_an_offered_time_is_accepted_and_no_time_inside_the_notice_is_offered(
    scheduler: httpx.AsyncClient,
    intake_events: EventPublisher,
    clock: FrozenClock,
    kafka_bootstrap: str,
) -> None:
    client, doses = await booked_doses(intake_events, clock, kafka_bootstrap)
    second = doses[1]
    day = second.starts_at.astimezone(LISBON).date()
    offered = await _offered(scheduler, second.appointment_id, day.isoformat())
    assert offered, "a dose's own day has other free times"
    starts = [datetime.fromisoformat(str(t["starts_at"])) for t in offered]
    assert starts == sorted(starts)
    assert all(s.astimezone(LISBON).date() == day for s in starts)
    assert second.starts_at not in starts  # where it already is
    assert all(s >= clock.now() + timedelta(hours=24) for s in starts)

    # Today: nothing sooner than the minimum notice is offered, and a time inside it that
    # the short-notice override would offer is refused by the reschedule without it.
    today = clock.now().astimezone(LISBON).date()
    soon = await _offered(scheduler, second.appointment_id, today.isoformat())
    assert all(
        datetime.fromisoformat(str(t["starts_at"])) >= clock.now() + timedelta(hours=24)
        for t in soon
    )

    chosen = starts[len(starts) // 2]
    moved = await scheduler.post(
        f"/v1/clinics/lisbon/appointments/{second.appointment_id}/reschedule",
        json={"new_starts_at": chosen.isoformat()},
        headers=auth("lisbon"),
    )
    assert moved.status_code == 200, moved.text
    published = await topic_messages(
        kafka_bootstrap, topics.SESSION_RESCHEDULED.name, key=client, wait_s=20
    )
    starts_published = {
        ev.Appointment.model_validate(m["value"]["appointment"]).starts_at for m in published
    }
    assert chosen in starts_published
    again = await _offered(scheduler, second.appointment_id, day.isoformat())
    assert chosen not in [datetime.fromisoformat(str(t["starts_at"])) for t in again]


async def test_a_time_not_offered_is_refused_by_the_reschedule(
    scheduler: httpx.AsyncClient,
    intake_events: EventPublisher,
    clock: FrozenClock,
    kafka_bootstrap: str,
) -> None:
    _, doses = await booked_doses(intake_events, clock, kafka_bootstrap)
    third = doses[2]
    day = third.starts_at.astimezone(LISBON).date()
    offered = {
        datetime.fromisoformat(str(t["starts_at"]))
        for t in await _offered(scheduler, third.appointment_id, day.isoformat())
    }
    midnight = datetime.combine(day, datetime.min.time(), tzinfo=LISBON)
    grid = [midnight + timedelta(minutes=15 * n) for n in range(96)]
    refused = [t for t in grid if t not in offered and t != third.starts_at]
    # The night and any taken slot are not offered; each such time asked for is refused.
    for when in (refused[0], refused[-1]):
        answer = await scheduler.post(
            f"/v1/clinics/lisbon/appointments/{third.appointment_id}/reschedule",
            json={"new_starts_at": when.isoformat()},
            headers=auth("lisbon"),
        )
        assert answer.status_code == 409, (when, answer.text)


async def test_free_times_name_a_bad_date_and_an_unknown_session(
    scheduler: httpx.AsyncClient,
) -> None:
    unknown = "00000000-0000-4000-8000-000000000001"
    bad = await scheduler.get(
        f"/v1/clinics/lisbon/appointments/{unknown}/free-times",
        params={"date": "2026-02-30"},
        headers=auth("lisbon"),
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"][-1] == "date"
    missing = await scheduler.get(
        f"/v1/clinics/lisbon/appointments/{unknown}/free-times",
        params={"date": "2026-02-03"},
        headers=auth("lisbon"),
    )
    assert missing.status_code == 404
