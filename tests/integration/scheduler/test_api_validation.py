"""The scheduler's HTTP API refuses well-typed but impossible input with a 422 that
names the field, before acting: never a 500, and nothing changed."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from chassis.clock import FrozenClock
from chassis.events import EventPublisher
from shared import events as ev
from shared import topics
from tests.helpers import auth, topic_messages
from tests.integration.scheduler.conftest import CALENDAR

pytestmark = pytest.mark.integration


def names(response: httpx.Response, field: str) -> bool:
    """The 422's detail points at `field` (in a location or in its message)."""
    detail = response.json()["detail"]
    if isinstance(detail, str):
        return field in detail
    return any(field in [str(p) for p in e.get("loc", [])] or field in e["msg"] for e in detail)


@pytest.mark.parametrize("resource", ["therapists", "rooms"])
async def test_duplicate_ids_in_a_calendar_are_a_422_naming_the_field(
    scheduler: httpx.AsyncClient, redis_client: Redis, resource: str
) -> None:
    before = await scheduler.get("/v1/clinics/lisbon/calendar", headers=auth("lisbon"))
    calendar: dict[str, Any] = copy.deepcopy(CALENDAR)
    calendar[resource] = [calendar[resource][0], calendar[resource][0]]
    response = await scheduler.put(
        "/v1/clinics/lisbon/calendar", json=calendar, headers=auth("lisbon")
    )
    assert response.status_code == 422, response.text
    assert names(response, resource), response.text
    after = await scheduler.get("/v1/clinics/lisbon/calendar", headers=auth("lisbon"))
    assert after.json() == before.json()


@pytest.mark.parametrize(
    "instant",
    ["0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59+00:00", "9999-12-31T23:59:59-12:00"],
)
async def test_a_therapists_time_off_beyond_any_sane_date_is_a_422(
    scheduler: httpx.AsyncClient, instant: str
) -> None:
    calendar: dict[str, Any] = copy.deepcopy(CALENDAR)
    calendar["therapists"][0]["time_off"] = [
        {"starts_at": "2027-01-01T00:00:00+00:00", "ends_at": instant}
        if instant.startswith("9")
        else {"starts_at": instant, "ends_at": "2027-01-01T00:00:00+00:00"}
    ]
    response = await scheduler.put(
        "/v1/clinics/lisbon/calendar", json=calendar, headers=auth("lisbon")
    )
    assert response.status_code == 422, response.text
    assert names(response, "time_off"), response.text


@pytest.mark.parametrize(
    "since", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-12:00"]
)
async def test_availability_from_beyond_any_sane_date_is_a_422_naming_from(
    scheduler: httpx.AsyncClient, since: str
) -> None:
    response = await scheduler.get(
        "/v1/clinics/lisbon/availability", params={"from": since}, headers=auth("lisbon")
    )
    assert response.status_code == 422, response.text
    assert names(response, "from"), response.text


async def test_a_reschedule_beyond_any_sane_date_is_a_422_and_changes_nothing(
    scheduler: httpx.AsyncClient,
    intake_events: EventPublisher,
    clock: FrozenClock,
    kafka_bootstrap: str,
) -> None:
    enrolled = ev.ClientEnrolled(
        clinic_id="lisbon",
        client_id=uuid.uuid4(),
        occurred_at=clock.now(),
        consent_recorded_at=clock.now(),
        phq9_total=14,
        phq9_band=ev.Phq9Band.MODERATE,
        gad7_total=9,
    )
    await intake_events.publish(enrolled, intake_events.envelope_for(enrolled))
    client = str(enrolled.client_id)
    [booked] = await topic_messages(
        kafka_bootstrap, topics.COURSE_BOOKED.name, key=client, wait_s=20
    )
    dose = next(a for a in booked["value"]["appointments"] if a["kind"] == "medicine")
    before = await scheduler.get(
        f"/v1/clinics/lisbon/clients/{client}/schedule", headers=auth("lisbon")
    )
    for instant in ("9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00"):
        response = await scheduler.post(
            f"/v1/clinics/lisbon/appointments/{dose['appointment_id']}/reschedule",
            json={"new_starts_at": instant},
            headers=auth("lisbon"),
        )
        assert response.status_code == 422, response.text
        assert names(response, "new_starts_at"), response.text
    after = await scheduler.get(
        f"/v1/clinics/lisbon/clients/{client}/schedule", headers=auth("lisbon")
    )
    assert after.json() == before.json()
