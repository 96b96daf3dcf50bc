"""Issue 16 on real Redis: a booked booster tells the client as any booking does, a
confirmation now, reminders and the session instructions before it."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from chassis.events import EventPublisher
from services.notifier import handlers
from shared import events as ev
from tests.integration.notifier.support import ManualClock, OwnClinic, at, planner_deps

pytestmark = pytest.mark.integration


async def test_a_booked_booster_is_confirmed_reminded_and_instructed(
    redis_client: Redis, notifier_publisher: EventPublisher, own_clinic: OwnClinic
) -> None:
    clock = ManualClock(at("2026-06-01T09:00+01:00"))
    planner = handlers.Planner(
        planner_deps(redis_client, notifier_publisher, own_clinic.directory, clock)
    )
    course, client = uuid.uuid4(), uuid.uuid4()
    starts = at("2026-06-03T10:00+01:00")

    def session(kind: ev.AppointmentKind, day: int, minutes: int) -> ev.Appointment:
        return ev.Appointment(
            appointment_id=uuid.uuid4(),
            kind=kind,
            starts_at=starts + timedelta(days=day),
            ends_at=starts + timedelta(days=day, minutes=minutes),
            therapist_id="t-ana",
        )

    dose = session(ev.AppointmentKind.BOOSTER, 0, 180)
    talk = session(ev.AppointmentKind.INTEGRATION, 1, 60)
    booked = ev.BoosterSessionBooked(
        clinic_id=own_clinic.id,
        client_id=client,
        occurred_at=clock.now(),
        course_id=course,
        booster_number=1,
        due_at=clock.now(),
        appointments=(dose, talk),
    )

    await planner.plan(booked, notifier_publisher.envelope_for(booked))

    planned = await planner_deps(
        redis_client, notifier_publisher, own_clinic.directory, clock
    ).plans.notifications(own_clinic.id, client)
    plans = [json.loads(m["plan"]) for m in planned]
    kinds = {(p["kind"], p["appointment_id"]) for p in plans}
    assert ("booster_session_booked", None) in kinds
    assert ("session_instructions", str(dose.appointment_id)) in kinds
    assert ("reminder_24h", str(dose.appointment_id)) in kinds
    assert ("reminder_24h", str(talk.appointment_id)) in kinds
    assert all(m["state"] == "planned" for m in planned)
    [confirmation] = [p for p in plans if p["kind"] == "booster_session_booked"]
    assert confirmation["send_at"] == "2026-06-01T08:00:00Z"  # at once, as any booking
    assert confirmation["context"]["number"] == 1
