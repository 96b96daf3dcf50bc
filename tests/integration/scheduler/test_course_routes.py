"""The course's HTTP routes over real Kafka and Redis: pause, resume, withdraw, discharge
and a booster's decline answer 404 for what does not exist, 409 with the reason for a
course that has ended, and 422 naming the field for a bad body; none of them changes
anything then."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.scheduler.domain.schedule import ClientSchedule
from shared import events as ev
from shared import topics
from tests.helpers import topic_messages
from tests.integration.scheduler.world import World, world

pytestmark = pytest.mark.integration

ENDINGS = ("pause", "resume", "withdrawal", "discharge")


def names(response: httpx.Response, field: str) -> bool:
    """The 422's detail points at `field`."""
    return any(field in [str(p) for p in e["loc"]] for e in response.json()["detail"])


async def view(http: httpx.AsyncClient, client: uuid.UUID) -> dict[str, Any]:
    response = await http.get(f"/clients/{client}/schedule")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def booked_booster(w: World) -> tuple[ClientSchedule, ev.Appointment]:
    """A completed course whose first booster fell due and was booked: its dose."""
    completed = await w.completed_client()
    assert completed.course is not None
    due = completed.course.next_booster_due_at
    assert due is not None
    w.clock.advance(due - w.clock.now() + timedelta(minutes=1))
    fired, _ = await w.scheduler.fire_due_boosters(w.clinic)
    assert fired == 1
    schedule = await w.load(completed.client_id)
    assert schedule.course is not None
    [booster] = schedule.course.booster_sessions
    return schedule, booster.appointments[0]


@pytest.mark.parametrize("action", ENDINGS)
async def test_an_unknown_client_or_one_without_a_course_is_a_404(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, action: str
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w, w.http() as http:
        unknown = await http.post(f"/clients/{uuid.uuid4()}/course/{action}")
        assert unknown.status_code == 404, unknown.text

        # Known (a consultation was asked for), but no course was ever booked.
        client = uuid.uuid4()
        await w.save(ClientSchedule(clinic_id=w.clinic, client_id=client, correlation_id="c"))
        no_course = await http.post(f"/clients/{client}/course/{action}")
        assert no_course.status_code == 404, no_course.text
        assert "no course" in no_course.json()["detail"]


@pytest.mark.parametrize("action", ENDINGS)
async def test_acting_on_an_ended_course_is_a_409_saying_it_ended_and_changes_nothing(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, action: str
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w, w.http() as http:
        client = (await w.booked_client()).client_id
        withdrawn = await http.post(f"/clients/{client}/course/withdrawal")
        assert withdrawn.status_code == 200, withdrawn.text
        assert withdrawn.json()["course"]["standing"] == "ended"

        again = await http.post(f"/clients/{client}/course/{action}")
        assert again.status_code == 409, again.text
        assert "ended" in again.json()["detail"]
        assert await view(http, client) == withdrawn.json()
        ended = await topic_messages(kafka_bootstrap, topics.COURSE_ENDED.name, key=str(client))
    assert len(ended) == 1  # the withdrawal's; the refused request published nothing


@pytest.mark.parametrize("action", ENDINGS)
async def test_a_body_the_route_does_not_take_is_a_422_naming_the_field(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, action: str
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w, w.http() as http:
        client = (await w.booked_client()).client_id
        before = await view(http, client)
        response = await http.post(f"/clients/{client}/course/{action}", json={"reason": "x"})
        assert response.status_code == 422, response.text
        assert names(response, "reason"), response.text
        bad_id = await http.post(f"/clients/not-a-client/course/{action}")
        assert bad_id.status_code == 422, bad_id.text
        assert names(bad_id, "client_id"), bad_id.text
        assert await view(http, client) == before


async def test_declining_an_unknown_appointment_is_a_404(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w, w.http() as http:
        response = await http.post(f"/appointments/{uuid.uuid4()}/decline")
        assert response.status_code == 404, response.text


async def test_declining_a_booster_of_an_ended_course_is_a_409_saying_it_ended(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w, w.http() as http:
        schedule, dose = await booked_booster(w)
        discharged = await http.post(f"/clients/{schedule.client_id}/course/discharge")
        assert discharged.status_code == 200, discharged.text

        response = await http.post(f"/appointments/{dose.appointment_id}/decline")
        assert response.status_code == 409, response.text
        assert "ended" in response.json()["detail"]
        assert await view(http, schedule.client_id) == discharged.json()
        declined = await topic_messages(
            kafka_bootstrap, topics.BOOSTER_DECLINED.name, key=str(schedule.client_id), wait_s=1
        )
    assert declined == []


@pytest.mark.parametrize(
    ("body", "field"), [({"declined_by": "robot"}, "declined_by"), ({"why": "busy"}, "why")]
)
async def test_a_bad_decline_body_is_a_422_naming_the_field_and_declines_nothing(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, body: dict[str, str], field: str
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w, w.http() as http:
        schedule, dose = await booked_booster(w)
        before = await view(http, schedule.client_id)
        response = await http.post(f"/appointments/{dose.appointment_id}/decline", json=body)
        assert response.status_code == 422, response.text
        assert names(response, field), response.text
        assert await view(http, schedule.client_id) == before
        declined = await http.post(
            f"/appointments/{dose.appointment_id}/decline", json={"declined_by": "staff"}
        )
        assert declined.status_code == 200, declined.text
