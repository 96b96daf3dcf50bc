"""The course is planned inside the availability the clinic recorded for the client, over
the real Kafka and Redis (issue 16)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from chassis.clock import FrozenClock
from chassis.events import EventPublisher
from shared import events as ev
from shared import topics
from tests.helpers import auth, topic_messages

pytestmark = pytest.mark.integration
LISBON = ZoneInfo("Europe/Lisbon")


async def _requested(intake_events: EventPublisher, clock: FrozenClock, kafka: str) -> str:
    event = ev.ConsultationRequested(
        clinic_id="lisbon",
        client_id=uuid.uuid4(),
        occurred_at=clock.now(),
        contact=ev.Contact(name="Ada", email="ada@example.org"),
    )
    await intake_events.publish(event, intake_events.envelope_for(event))
    client = str(event.client_id)
    assert await topic_messages(kafka, topics.CONSULTATION_BOOKED.name, key=client, wait_s=20)
    return client


async def _enrolled(intake_events: EventPublisher, clock: FrozenClock, client: str) -> None:
    event = ev.ClientEnrolled(
        clinic_id="lisbon",
        client_id=uuid.UUID(client),
        occurred_at=clock.now(),
        consent_recorded_at=clock.now(),
        phq9_total=14,
        phq9_band=ev.Phq9Band.MODERATE,
        gad7_total=9,
    )
    await intake_events.publish(event, intake_events.envelope_for(event))


async def test_the_course_is_booked_inside_the_clients_afternoons_and_around_blocked_dates(
    scheduler: httpx.AsyncClient,
    intake_events: EventPublisher,
    clock: FrozenClock,
    kafka_bootstrap: str,
) -> None:
    client = await _requested(intake_events, clock, kafka_bootstrap)
    today = clock.now().astimezone(LISBON).date()
    blocked = [today + timedelta(days=n) for n in range(1, 8)]  # away next week
    response = await scheduler.put(
        f"/v1/clinics/lisbon/clients/{client}/availability",
        json={
            "weekly": [{"weekday": d, "start": "13:00", "end": "18:30"} for d in range(5)],
            "blocked_dates": [d.isoformat() for d in blocked],
        },
        headers=auth("lisbon"),
    )
    assert response.status_code == 200, response.text

    await _enrolled(intake_events, clock, client)
    [booked] = await topic_messages(
        kafka_bootstrap, topics.COURSE_BOOKED.name, key=client, wait_s=20
    )
    appointments = [ev.Appointment.model_validate(a) for a in booked["value"]["appointments"]]
    assert len(appointments) == 13
    for appointment in appointments:
        starts = appointment.starts_at.astimezone(LISBON)
        ends = appointment.ends_at.astimezone(LISBON)
        assert starts.date() not in blocked
        assert starts.hour >= 13
        assert (ends.hour, ends.minute) <= (18, 30)


async def test_a_course_that_cannot_fit_the_clients_availability_fails_saying_so(
    scheduler: httpx.AsyncClient,
    intake_events: EventPublisher,
    clock: FrozenClock,
    kafka_bootstrap: str,
) -> None:
    client = await _requested(intake_events, clock, kafka_bootstrap)
    response = await scheduler.put(
        f"/v1/clinics/lisbon/clients/{client}/availability",
        json={"weekly": [{"weekday": 1, "start": "09:00", "end": "11:00"}]},
        headers=auth("lisbon"),
    )
    assert response.status_code == 200, response.text

    await _enrolled(intake_events, clock, client)
    [failed] = await topic_messages(
        kafka_bootstrap, topics.COURSE_BOOKING_FAILED.name, key=client, wait_s=20
    )
    assert "the client's availability" in failed["value"]["reason"]


async def test_availability_for_an_unknown_client_is_a_404_and_a_bad_window_a_422(
    scheduler: httpx.AsyncClient,
) -> None:
    unknown = await scheduler.put(
        f"/v1/clinics/lisbon/clients/{uuid.uuid4()}/availability",
        json={"weekly": []},
        headers=auth("lisbon"),
    )
    assert unknown.status_code == 404, unknown.text
    backwards = await scheduler.put(
        f"/v1/clinics/lisbon/clients/{uuid.uuid4()}/availability",
        json={"weekly": [{"weekday": 1, "start": "11:00", "end": "09:00"}]},
        headers=auth("lisbon"),
    )
    assert backwards.status_code == 422, backwards.text
    assert "weekly" in backwards.text
