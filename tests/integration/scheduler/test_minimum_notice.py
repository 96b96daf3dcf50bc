"""A missed dose is rebooked with at least the minimum notice (default 24 h), or sooner when
staff say so, over the real Kafka and Redis (issue 16, rule 20)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from chassis.clock import FrozenClock
from chassis.events import EventPublisher
from shared import events as ev
from shared import topics
from tests.helpers import auth, topic_messages
from tests.integration.scheduler.test_scheduler_service import booked_course, enrol

pytestmark = pytest.mark.integration


async def _miss_the_third_dose(
    scheduler: httpx.AsyncClient,
    intake_events: EventPublisher,
    clock: FrozenClock,
    kafka_bootstrap: str,
    body: dict[str, Any] | None,
) -> tuple[str, datetime, ev.Appointment, dict[str, Any]]:
    """Enrol, then report dose 3 missed half an hour after it should have started."""
    client, _ = await enrol(intake_events, clock)
    course = (await booked_course(kafka_bootstrap, client))["value"]
    doses = [
        ev.Appointment.model_validate(a) for a in course["appointments"] if a["kind"] == "medicine"
    ]
    third = doses[2]
    clock.advance(third.starts_at + timedelta(minutes=30) - clock.now())
    response = await scheduler.post(
        f"/v1/clinics/lisbon/appointments/{third.appointment_id}/missed",
        json=body,
        headers=auth("lisbon"),
    )
    assert response.status_code == 200, response.text
    return client, clock.now(), third, response.json()


async def _rebooked(kafka_bootstrap: str, client: str) -> ev.Appointment:
    [scheduled] = await topic_messages(
        kafka_bootstrap, topics.SESSION_SCHEDULED.name, key=client, wait_s=20
    )
    return ev.Appointment.model_validate(scheduled["value"]["appointment"])


async def test_a_missed_dose_is_rebooked_at_least_a_day_after_it_was_reported(
    scheduler: httpx.AsyncClient,
    intake_events: EventPublisher,
    clock: FrozenClock,
    kafka_bootstrap: str,
) -> None:
    client, reported_at, missed, answer = await _miss_the_third_dose(
        scheduler, intake_events, clock, kafka_bootstrap, None
    )
    assert answer["replanned"] is True, answer
    rebooked = await _rebooked(kafka_bootstrap, client)
    assert rebooked.dose_number == missed.dose_number
    assert rebooked.starts_at >= reported_at + timedelta(hours=24)
    moved = await topic_messages(
        kafka_bootstrap, topics.SESSION_RESCHEDULED.name, key=client, wait_s=2, expect=0
    )
    for message in moved:
        starts_at = ev.Appointment.model_validate(message["value"]["appointment"]).starts_at
        assert starts_at >= reported_at + timedelta(hours=24)


async def test_staff_may_rebook_a_missed_dose_at_short_notice(
    scheduler: httpx.AsyncClient,
    intake_events: EventPublisher,
    clock: FrozenClock,
    kafka_bootstrap: str,
) -> None:
    client, reported_at, missed, answer = await _miss_the_third_dose(
        scheduler, intake_events, clock, kafka_bootstrap, {"allow_short_notice": True}
    )
    assert answer["replanned"] is True, answer
    rebooked = await _rebooked(kafka_bootstrap, client)
    assert rebooked.dose_number == missed.dose_number
    assert reported_at <= rebooked.starts_at < reported_at + timedelta(hours=24)


async def test_moving_a_session_to_less_than_a_days_notice_is_refused_with_the_reason(
    scheduler: httpx.AsyncClient,
    intake_events: EventPublisher,
    clock: FrozenClock,
    kafka_bootstrap: str,
) -> None:
    client, _ = await enrol(intake_events, clock)
    course = (await booked_course(kafka_bootstrap, client))["value"]
    first = ev.Appointment.model_validate(course["appointments"][0])
    clock.advance(first.starts_at - timedelta(hours=30) - clock.now())
    soon = first.starts_at - timedelta(hours=12)
    response = await scheduler.post(
        f"/v1/clinics/lisbon/appointments/{first.appointment_id}/reschedule",
        json={"new_starts_at": soon.isoformat()},
        headers=auth("lisbon"),
    )
    assert response.status_code == 409, response.text
    assert "minimum notice" in response.json()["detail"]
