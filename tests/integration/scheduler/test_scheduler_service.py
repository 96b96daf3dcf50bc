"""The scheduler on real Kafka and Redis: from enrolment to boosters."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from redis.asyncio import Redis

from chassis.clock import FrozenClock
from chassis.events import EventPublisher
from shared import events as ev
from shared import topics
from shared.envelope import Envelope
from tests.builders.scheduler import PASSING_CHECKIN
from tests.helpers import auth, topic_messages

pytestmark = pytest.mark.integration
LISBON = ZoneInfo("Europe/Lisbon")


def enrolment(clock: FrozenClock, clinic: str = "lisbon") -> ev.ClientEnrolled:
    return ev.ClientEnrolled(
        clinic_id=clinic,
        client_id=uuid.uuid4(),
        occurred_at=clock.now(),
        consent_recorded_at=clock.now(),
        phq9_total=14,
        phq9_band=ev.Phq9Band.MODERATE,
        gad7_total=9,
    )


async def enrol(
    intake_events: EventPublisher, clock: FrozenClock, clinic: str = "lisbon"
) -> tuple[str, Envelope]:
    event = enrolment(clock, clinic)
    envelope = intake_events.envelope_for(event)
    await intake_events.publish(event, envelope)
    return str(event.client_id), envelope


async def booked_course(kafka_bootstrap: str, client: str) -> dict[str, Any]:
    [message] = await topic_messages(
        kafka_bootstrap, topics.COURSE_BOOKED.name, key=client, wait_s=20
    )
    return message


async def test_enrolment_books_a_whole_course_in_clinic_hours(
    scheduler: httpx.AsyncClient,
    intake_events: EventPublisher,
    clock: FrozenClock,
    kafka_bootstrap: str,
    redis_client: Redis,
) -> None:
    client, envelope = await enrol(intake_events, clock)
    message = await booked_course(kafka_bootstrap, client)
    course = message["value"]
    kinds = [a["kind"] for a in course["appointments"]]
    assert kinds.count("preparation") == 1
    assert kinds.count("medicine") == 6
    assert kinds.count("integration") == 6
    assert message["headers"]["ce_causationid"] == envelope.id
    assert message["headers"]["ce_correlationid"] == envelope.correlation_id
    for appointment in course["appointments"]:
        starts = ev.Appointment.model_validate(appointment).starts_at.astimezone(LISBON)
        ends = ev.Appointment.model_validate(appointment).ends_at.astimezone(LISBON)
        assert starts.weekday() < 5
        assert starts.hour >= 8
        assert (ends.hour, ends.minute) <= (19, 0)
    assert course["therapist_id"] in ("t-ana", "t-bea")
    view = await scheduler.get(
        f"/v1/clinics/lisbon/clients/{client}/schedule", headers=auth("lisbon")
    )
    assert len(view.json()["course"]["appointments"]) == 13
    stages = await topic_messages(
        kafka_bootstrap, topics.PUBLIC_STAGE_REACHED.name, key=client, expect=2
    )
    assert [m["value"]["stage"] for m in stages] == ["enrolled", "course_booked"]


async def test_a_redelivered_enrolment_books_nothing_twice(
    scheduler: httpx.AsyncClient,
    intake_events: EventPublisher,
    clock: FrozenClock,
    kafka_bootstrap: str,
    redis_client: Redis,
) -> None:
    event = enrolment(clock)
    envelope = intake_events.envelope_for(event)
    await intake_events.publish(event, envelope)
    client = str(event.client_id)
    first = await booked_course(kafka_bootstrap, client)
    await intake_events.publish(event, envelope)  # the same event, the same id, again
    await asyncio.sleep(1.0)
    again = await topic_messages(kafka_bootstrap, topics.COURSE_BOOKED.name, key=client, wait_s=3)
    assert len(again) == 1
    assert again[0]["headers"]["ce_id"] == first["headers"]["ce_id"]
    taken = await redis_client.zrange(f"sched:{{lisbon}}:booked:client:{client}", 0, -1)
    assert len(taken) == 13  # the client's appointments, held once


async def test_a_consultation_is_booked_inside_the_preferred_times(
    scheduler: httpx.AsyncClient,
    intake_events: EventPublisher,
    clock: FrozenClock,
    kafka_bootstrap: str,
) -> None:
    event = ev.ConsultationRequested(
        clinic_id="lisbon",
        client_id=uuid.uuid4(),
        occurred_at=clock.now(),
        contact=ev.Contact(name="Ada", email="ada@example.org"),
        preferred_times=(
            ev.PreferredTime.model_validate({"weekday": 3, "start": "14:00", "end": "16:00"}),
        ),
    )
    await intake_events.publish(event, intake_events.envelope_for(event))
    [booked] = await topic_messages(
        kafka_bootstrap, topics.CONSULTATION_BOOKED.name, key=str(event.client_id), wait_s=20
    )
    starts = ev.Appointment.model_validate(booked["value"]["appointment"]).starts_at.astimezone(
        LISBON
    )
    assert starts.weekday() == 3
    assert 14 <= starts.hour < 16


async def test_six_completions_complete_the_course_and_boosters_fall_due_once_each_across_a_restart(
    scheduler_app: Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]],
    intake_events: EventPublisher,
    clock: FrozenClock,
    kafka_bootstrap: str,
) -> None:
    async with scheduler_app() as scheduler:
        client, _ = await enrol(intake_events, clock)
        course = (await booked_course(kafka_bootstrap, client))["value"]
        doses = [a for a in course["appointments"] if a["kind"] == "medicine"]
        first = ev.Appointment.model_validate(doses[0])
        early = await scheduler.post(
            f"/v1/clinics/lisbon/appointments/{first.appointment_id}/completion",
            json={"ride_home_confirmed": True},
            headers=auth("lisbon"),
        )
        assert early.status_code == 409
        for dose in doses:
            appointment = ev.Appointment.model_validate(dose)
            clock.advance(appointment.starts_at - clock.now())
            checked_in = await scheduler.post(
                f"/v1/clinics/lisbon/appointments/{appointment.appointment_id}/check-in",
                json=PASSING_CHECKIN.model_dump(mode="json"),
                headers=auth("lisbon"),
            )
            assert checked_in.status_code == 200, checked_in.text
            clock.advance(appointment.ends_at - clock.now())
            no_ride = await scheduler.post(
                f"/v1/clinics/lisbon/appointments/{appointment.appointment_id}/completion",
                json={"ride_home_confirmed": False},
                headers=auth("lisbon"),
            )
            assert no_ride.status_code == 409
            done = await scheduler.post(
                f"/v1/clinics/lisbon/appointments/{appointment.appointment_id}/completion",
                json={"ride_home_confirmed": True, "phq9_total": 8},
                headers=auth("lisbon"),
            )
            assert done.status_code == 200, done.text
        view = done.json()["course"]
        assert view["completed_at"] is not None
        [completed] = await topic_messages(
            kafka_bootstrap, topics.COURSE_COMPLETED.name, key=client
        )
        assert completed["value"]["medicine_sessions_completed"] == 6

        # The first booster: 14 clinic days after completion, at 09:00 Lisbon time.
        due_1 = ev.BoosterPlanSet.model_validate(
            (await topic_messages(kafka_bootstrap, topics.BOOSTER_PLAN_SET.name, key=client))[0][
                "value"
            ]
        ).first_due_at
        assert due_1 is not None
        local = due_1.astimezone(LISBON)
        assert (local.hour, local.minute) == (9, 0)
        completed_on = clock.now().astimezone(LISBON).date()
        assert local.date() == completed_on + timedelta(days=14)
        clock.advance(due_1 - clock.now() + timedelta(minutes=1))
        [booster_1] = await topic_messages(
            kafka_bootstrap, topics.BOOSTER_DUE.name, key=client, wait_s=20
        )
        assert booster_1["value"]["booster_number"] == 1

    # The scheduler is down while boosters 2 and 3 fall due; a new one announces each once.
    clock.advance(timedelta(days=29))
    async with scheduler_app():
        boosters = await topic_messages(
            kafka_bootstrap, topics.BOOSTER_DUE.name, key=client, expect=3, wait_s=20
        )
        await asyncio.sleep(0.5)
        boosters = await topic_messages(
            kafka_bootstrap, topics.BOOSTER_DUE.name, key=client, expect=3, wait_s=5
        )
    numbers = [m["value"]["booster_number"] for m in boosters]
    assert numbers == [1, 2, 3]
    due = [ev.BoosterDue.model_validate(m["value"]).due_at.astimezone(LISBON) for m in boosters]
    assert [d.date() - due[0].date() for d in due] == [
        timedelta(0),
        timedelta(days=14),
        timedelta(days=28),
    ]
    assert {(d.hour, d.minute) for d in due} == {(9, 0)}
    assert len({m["headers"]["ce_id"] for m in boosters}) == 3


async def test_clinic_requests_that_make_no_sense_are_refused_and_change_nothing(
    scheduler: httpx.AsyncClient,
    intake_events: EventPublisher,
    clock: FrozenClock,
    kafka_bootstrap: str,
) -> None:
    client, _ = await enrol(intake_events, clock)
    course = (await booked_course(kafka_bootstrap, client))["value"]
    doses = [
        ev.Appointment.model_validate(a) for a in course["appointments"] if a["kind"] == "medicine"
    ]
    dose = doses[1]
    unknown = await scheduler.post(
        f"/v1/clinics/lisbon/appointments/{uuid.uuid4()}/completion",
        json={"ride_home_confirmed": True},
        headers=auth("lisbon"),
    )
    assert unknown.status_code == 404
    foreign = await scheduler.post(
        f"/v1/clinics/boston/appointments/{dose.appointment_id}/completion",
        json={"ride_home_confirmed": True},
        headers=auth("boston"),
    )
    assert foreign.status_code == 404
    clock.advance(doses[0].starts_at - clock.now())
    checked_in = await scheduler.post(
        f"/v1/clinics/lisbon/appointments/{doses[0].appointment_id}/check-in",
        json=PASSING_CHECKIN.model_dump(mode="json"),
        headers=auth("lisbon"),
    )
    assert checked_in.status_code == 200
    clock.advance(doses[0].ends_at - clock.now())
    held = await scheduler.post(
        f"/v1/clinics/lisbon/appointments/{doses[0].appointment_id}/completion",
        json={"ride_home_confirmed": True},
        headers=auth("lisbon"),
    )
    assert held.status_code == 200
    # With the first dose held the window is fixed: two months later is outside it.
    far = await scheduler.post(
        f"/v1/clinics/lisbon/appointments/{dose.appointment_id}/reschedule",
        # Same weekday and wall time nine weeks on: inside hours, outside the window.
        json={
            "new_starts_at": (dose.starts_at.astimezone(LISBON) + timedelta(weeks=9)).isoformat()
        },
        headers=auth("lisbon"),
    )
    assert far.status_code == 409
    assert "window" in far.json()["detail"]
    bad = await scheduler.post(
        f"/v1/clinics/lisbon/appointments/{dose.appointment_id}/completion",
        json={"ride_home_confirmed": "maybe"},
        headers=auth("lisbon"),
    )
    assert bad.status_code == 422
    assert "ride_home_confirmed" in bad.text
    view = await scheduler.get(
        f"/v1/clinics/lisbon/clients/{client}/schedule", headers=auth("lisbon")
    )
    statuses = {a["appointment_id"]: a["status"] for a in view.json()["course"]["appointments"]}
    assert statuses[str(dose.appointment_id)] == "booked"
    assert list(statuses.values()).count("fulfilled") == 1
    assert (
        await topic_messages(kafka_bootstrap, topics.SESSION_RESCHEDULED.name, key=client, wait_s=1)
        == []
    )


async def test_an_enrolment_for_an_unknown_clinic_is_dead_lettered_with_the_reason(
    scheduler: httpx.AsyncClient,
    intake_events: EventPublisher,
    clock: FrozenClock,
    kafka_bootstrap: str,
) -> None:
    client, _ = await enrol(intake_events, clock, clinic="atlantis")
    [dead] = await topic_messages(
        kafka_bootstrap, topics.CLIENT_ENROLLED.dead_letters, key=client, wait_s=20
    )
    assert "unknown clinic" in dead["headers"]["kap_dlq_error"]
    assert dead["headers"]["kap_dlq_service"] == "scheduler"
    assert dead["headers"]["kap_dlq_topic"] == topics.CLIENT_ENROLLED.name
    # ...and the scheduler keeps consuming.
    other, _ = await enrol(intake_events, clock)
    assert (await booked_course(kafka_bootstrap, other))["key"] == other


async def test_a_consultation_held_that_was_never_booked_is_dead_lettered(
    scheduler: httpx.AsyncClient,
    intake_events: EventPublisher,
    clock: FrozenClock,
    kafka_bootstrap: str,
) -> None:
    event = ev.ConsultationHeld(
        clinic_id="lisbon", client_id=uuid.uuid4(), occurred_at=clock.now(), outcome="no_show"
    )
    await intake_events.publish(event, intake_events.envelope_for(event))
    dead = await topic_messages(
        kafka_bootstrap, topics.CONSULTATION_HELD.dead_letters, key=str(event.client_id), wait_s=20
    )
    reasons = [
        d["headers"]["kap_dlq_error"]
        for d in dead
        if d["headers"]["kap_dlq_service"] == "scheduler"
    ]
    assert reasons
    assert "never booked" in reasons[0]


async def test_an_event_whose_envelope_names_another_clinic_is_dead_lettered_and_writes_nothing(
    scheduler: httpx.AsyncClient,
    intake_events: EventPublisher,
    clock: FrozenClock,
    kafka_bootstrap: str,
    redis_url: str,
) -> None:
    # The payload says lisbon, the envelope sydney: locking one clinic's keys and marking
    # the event handled under the other's would span two slots (issue 18).
    event = enrolment(clock, "lisbon")
    envelope = intake_events.envelope_for(event).model_copy(update={"clinic_id": "sydney"})
    await intake_events.publish(event, envelope)
    client = str(event.client_id)
    [dead] = await topic_messages(
        kafka_bootstrap, topics.CLIENT_ENROLLED.dead_letters, key=client, wait_s=20
    )
    assert dead["headers"]["kap_dlq_service"] == "scheduler"
    assert (
        "the envelope names clinic 'sydney', the event 'lisbon'"
        in (dead["headers"]["kap_dlq_error"])
    )
    redis = Redis.from_url(redis_url)
    try:
        written = [k async for k in redis.scan_iter(match=f"*{client}*")]
        written += [
            k async for k in redis.scan_iter(match=f"scheduler:{{*}}:handled:{envelope.id}")
        ]
        written += [k async for k in redis.scan_iter(match=f"scheduler:{{*}}:marks:{client}")]
    finally:
        await redis.aclose()
    assert written == []
    assert await topic_messages(kafka_bootstrap, topics.COURSE_BOOKED.name, key=client) == []
