"""Issue 18 on real Redis: once a course is over the notifier keeps only what it still
acts on (services/notifier/tidy.py), and neither a redelivery nor late news brings back
what it took away."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from chassis.events import EventPublisher
from services.notifier import handlers
from services.notifier.keys import finished_fields, key, text
from shared import events as ev
from tests.integration.notifier.support import (
    ManualClock,
    OwnClinic,
    Rig,
    appointment,
    at,
    course,
    eventually,
    planner_deps,
)

pytestmark = pytest.mark.integration


async def keys_of(redis: Redis, clinic: str, family: str) -> list[str]:
    return sorted(
        [text(k) async for k in redis.scan_iter(match=f"notifier:{{{clinic}}}:{family}:*")]
    )


async def send_everything(redis: Redis, clinic: str) -> None:
    """What delivery writes once each planned message went (queue.DeliveryQueue.write)."""
    for name in await keys_of(redis, clinic, "msg"):
        stored = await redis.hgetall(name)
        plan = stored.get(b"plan") or stored.get("plan")
        if plan is None:
            continue
        await redis.delete(name)
        await redis.hset(name, mapping={"state": "sent", **finished_fields(text(plan), 1, {})})
        await redis.zrem(key(clinic, "due"), name.rsplit(":", 1)[1])


def planning(
    redis: Redis, publisher: EventPublisher, clinic: OwnClinic
) -> tuple[ManualClock, handlers.Deps, handlers.Planner]:
    """The notifier's planning on real Redis, its clock on 1 June 2026, 09:00 in Lisbon."""
    clock = ManualClock(at("2026-06-01T09:00+01:00"))
    deps = planner_deps(redis, publisher, clinic.directory, clock)
    return clock, deps, handlers.Planner(deps)


def booster_booked(
    clinic: str, client: uuid.UUID, course: uuid.UUID, clock: ManualClock, starts: str
) -> ev.BoosterSessionBooked:
    """The client's first booster, booked now: one three-hour session from `starts`."""
    session = ev.Appointment(
        appointment_id=uuid.uuid4(),
        kind=ev.AppointmentKind.BOOSTER,
        starts_at=at(starts),
        ends_at=at(starts) + timedelta(hours=3),
        therapist_id="t-ana",
    )
    return ev.BoosterSessionBooked(
        clinic_id=clinic,
        client_id=client,
        occurred_at=clock.now(),
        course_id=course,
        booster_number=1,
        due_at=clock.now(),
        appointments=(session,),
    )


async def test_a_finished_course_leaves_only_pending_messages_and_nothing_comes_back(
    redis_client: Redis, notifier_publisher: EventPublisher, own_clinic: OwnClinic
) -> None:
    clock, deps, planner = planning(redis_client, notifier_publisher, own_clinic)
    clinic, course, client = own_clinic.id, uuid.uuid4(), uuid.uuid4()
    booked = booster_booked(clinic, client, course, clock, "2026-06-03T10:00+01:00")
    [dose] = booked.appointments
    booked_envelope = notifier_publisher.envelope_for(booked)
    await planner.plan(booked, booked_envelope)
    assert await keys_of(redis_client, clinic, "slot")  # reminders, instructions: slots
    assert await keys_of(redis_client, clinic, "schedule")
    completed_dose = ev.SessionCompleted(
        clinic_id=clinic,
        client_id=client,
        occurred_at=dose.ends_at,
        course_id=course,
        appointment_id=dose.appointment_id,
        kind=ev.AppointmentKind.BOOSTER,
        dose_number=1,
        ride_home_confirmed=True,
    )
    await planner.plan(completed_dose, notifier_publisher.envelope_for(completed_dose))
    await send_everything(redis_client, clinic)

    clock.set(at("2026-06-12T09:00+01:00"))
    ended = ev.CourseCompleted(
        clinic_id=clinic,
        client_id=client,
        occurred_at=clock.now(),
        course_id=course,
        medicine_sessions_completed=1,
    )
    await planner.plan(ended, notifier_publisher.envelope_for(ended))

    # Only the course-completed message, still to be sent, and its client's set.
    [left] = await deps.plans.notifications(clinic, client)
    assert (left["state"], '"course_completed"' in left["plan"]) == ("planned", True)
    for family in ("slot", "appointment", "schedule"):
        assert await keys_of(redis_client, clinic, family) == [], family
    assert await keys_of(redis_client, clinic, "tidied") == [key(clinic, "tidied", str(client))]

    # A redelivery: its handled mark refuses it. Past the mark's 14 days (taken away
    # here): the tidy marker does, as the event is long before the course ended.
    await planner.plan(booked, booked_envelope)
    await redis_client.hdel(deps.unit_of_work.marks_key(clinic, str(client)), booked_envelope.id)
    await planner.plan(booked, booked_envelope)
    # Late news (a new id) of the appointment, sent in time: no fact brought back.
    missed = ev.SessionMissed(
        clinic_id=clinic,
        client_id=client,
        occurred_at=clock.now() - timedelta(days=1),
        course_id=course,
        appointment_id=dose.appointment_id,
        kind=ev.AppointmentKind.BOOSTER,
    )
    await planner.plan(missed, notifier_publisher.envelope_for(missed))

    kinds = sorted(
        m.get("kind") or m["plan"] for m in await deps.plans.notifications(clinic, client)
    )
    assert len(kinds) == 2  # the course-completed message and the late news's own
    assert not any("session_instructions" in k or "reminder" in k for k in kinds)
    assert await keys_of(redis_client, clinic, "schedule") == []


async def test_a_tidy_takes_the_handled_marks_it_refuses_and_a_redelivery_plans_nothing(
    redis_client: Redis, notifier_publisher: EventPublisher, own_clinic: OwnClinic
) -> None:
    clock, deps, planner = planning(redis_client, notifier_publisher, own_clinic)
    clinic, course, client = own_clinic.id, uuid.uuid4(), uuid.uuid4()

    def completed(when: str) -> ev.SessionCompleted:
        return ev.SessionCompleted(
            clinic_id=clinic,
            client_id=client,
            occurred_at=at(when),
            course_id=course,
            appointment_id=uuid.uuid4(),
            kind=ev.AppointmentKind.MEDICINE,
            dose_number=1,
            ride_home_confirmed=True,
        )

    early, late = completed("2026-06-01T13:00+01:00"), completed("2026-06-10T13:00+01:00")
    early_envelope, late_envelope = (notifier_publisher.envelope_for(e) for e in (early, late))
    for event, envelope in ((early, early_envelope), (late, late_envelope)):
        await planner.plan(event, envelope)
    await send_everything(redis_client, clinic)
    clock.set(at("2026-06-12T09:00+01:00"))
    ended = ev.CourseCompleted(
        clinic_id=clinic,
        client_id=client,
        occurred_at=clock.now(),
        course_id=course,
        medicine_sessions_completed=2,
    )
    ended_envelope = notifier_publisher.envelope_for(ended)
    await planner.plan(ended, ended_envelope)

    async def marked(envelope_id: str) -> bool:
        return await deps.unit_of_work.is_handled(clinic, envelope_id, str(client))

    # Over LATE (7 days) before the tidy: its mark goes; within it, and the tidy's own, stay.
    assert not await marked(early_envelope.id)
    assert await marked(late_envelope.id)
    assert await marked(ended_envelope.id)
    listed = await redis_client.zrange(key(clinic, "inputs", str(client)), 0, -1)
    assert sorted(text(i) for i in listed) == sorted([late_envelope.id, ended_envelope.id])

    # Delivered again without its mark: the tidy marker refuses it, nothing is planned.
    before = await deps.plans.notifications(clinic, client)
    await planner.plan(early, early_envelope)
    assert await deps.plans.notifications(clinic, client) == before


async def test_what_a_course_end_sets_off_is_tidied_as_it_finishes(rig: Rig) -> None:
    """A course ends (a tidy), then its released sessions' cancellations arrive: their
    reminders are cancelled and their notices sent after the tidy ran. Each delivery
    that ends within the tidy's aftermath tidies the client again, so what it set off
    does not stay for its TTLs (15 to 90 days): only the client's marker, contact and
    input list remain, and the facts of the cancelled sessions still ahead (what refuses
    a reminder planned from older news of them arriving late). The notices still reach
    the client."""
    rig.clock.set(at("2026-03-23T10:00+00:00"))
    ada = rig.person()
    client_id, _ = await rig.request(ada)
    sessions = [
        appointment(ev.AppointmentKind.INTEGRATION, at(f"2026-03-{day}T10:00+00:00"))
        for day in (26, 30)
    ]
    booked = course(rig, client_id, *sessions)
    await rig.publish(booked)
    await rig.mails(ada.email, 2)  # the request received, the course booked
    clinic = rig.clinic.id
    assert await keys_of(rig.redis, clinic, "slot")

    rig.clock.set(at("2026-03-24T09:00+00:00"))
    ended = ev.CourseEnded(
        **rig.fields(client_id),
        course_id=booked.course_id,
        reason=ev.CourseEndCode.WITHDRAWN,
        sessions_released=2,
        medicine_sessions_completed=0,
    )
    await rig.publish(ended)
    for session in sessions:
        await rig.publish(
            ev.SessionCancelled(
                **rig.fields(client_id),
                course_id=booked.course_id,
                appointment_id=session.appointment_id,
                kind=session.kind,
                late=False,
            )
        )
    await rig.step_to(at("2026-03-24T12:00+00:00"))  # past the notices' grace period
    subjects = [m["Subject"] for m in await rig.mails(ada.email, 5)]
    assert sum("cancelled" in s.lower() for s in subjects) == 2, subjects

    async def tidied() -> bool:
        left = {
            family: await keys_of(rig.redis, clinic, family)
            for family in ("msg", "slot", "appointment")
        }
        return not any(left.values())

    await eventually(tidied, "the aftermath of the tidy to be tidied")
    assert await keys_of(rig.redis, clinic, "tidied")
    facts = [await rig.redis.get(k) for k in await keys_of(rig.redis, clinic, "schedule")]
    assert sorted(json.loads(f)["status"] for f in facts if f) == ["cancelled", "cancelled"]


async def test_a_tidy_takes_the_facts_of_appointments_whose_messages_went_before_them(
    redis_client: Redis, notifier_publisher: EventPublisher, own_clinic: OwnClinic
) -> None:
    """A booster session's messages are sent, and tidied by the booster-due tidy that
    follows, before the session: nothing about it is then tidied again, yet its fact
    stays in Redis. The next tidy, the session long over, takes it all the same."""
    clock, _, planner = planning(redis_client, notifier_publisher, own_clinic)
    clinic, course, client = own_clinic.id, uuid.uuid4(), uuid.uuid4()
    booked = booster_booked(clinic, client, course, clock, "2026-06-20T10:00+01:00")
    [session] = booked.appointments
    await planner.plan(booked, notifier_publisher.envelope_for(booked))
    await send_everything(redis_client, clinic)

    def due(number: int, when: str) -> ev.BoosterDue:
        clock.set(at(when))
        return ev.BoosterDue(
            clinic_id=clinic,
            client_id=client,
            occurred_at=clock.now(),
            course_id=course,
            booster_number=number,
            due_at=clock.now(),
        )

    early = due(2, "2026-06-10T09:00+01:00")  # the session still ahead: its fact stays
    await planner.plan(early, notifier_publisher.envelope_for(early))
    fact = key(clinic, "schedule", str(session.appointment_id))
    assert await redis_client.exists(fact)
    assert not await keys_of(redis_client, clinic, "slot")  # its messages went

    later = due(3, "2026-07-01T09:00+01:00")  # the session over, no message about it
    await planner.plan(later, notifier_publisher.envelope_for(later))
    assert await keys_of(redis_client, clinic, "schedule") == []
    assert await keys_of(redis_client, clinic, "facts") == []
