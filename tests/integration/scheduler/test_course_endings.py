"""Issue 16 over real Kafka and Redis: pause and resume, withdraw, discharge, a review
hold after two no-shows, and a second course for a returning client."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from services.scheduler.domain.schedule import ClientSchedule
from shared import events as ev
from shared import topics
from tests.helpers import topic_messages
from tests.integration.scheduler.world import World, ledger_of, world

pytestmark = pytest.mark.integration


def course(schedule: ClientSchedule) -> ev.Appointment:
    assert schedule.course is not None
    return schedule.course.plan.appointments[0]


async def mine(w: World, schedule: ClientSchedule) -> set[str]:
    """The ledger's members that are this client's appointments."""
    ids = {str(a.appointment_id) for a in _all(schedule)}
    return {m for members in (await w.ledger()).values() for m in members if m.split("|")[2] in ids}


def _all(schedule: ClientSchedule) -> list[ev.Appointment]:
    assert schedule.course is not None
    return [*schedule.course.plan.appointments, *schedule.course.off_plan]


async def test_a_pause_frees_the_ledger_and_a_resume_holds_new_sessions(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        booked = await w.booked_client()
        client = booked.client_id
        assert await mine(w, booked)

        paused = await w.scheduler.pause(w.clinic, client)
        assert paused.course is not None
        assert paused.course.standing == "paused"
        assert await mine(w, paused) == set()  # every slot freed

        w.clock.advance(timedelta(days=2))
        resumed = await w.scheduler.resume(w.clinic, client)
        assert resumed.course is not None
        assert resumed.course.standing == "active"
        # Held again, new ids only.
        assert await w.ledger() == ledger_of(w.clinic, resumed, w.clock.now())
        assert all(a.starts_at > w.clock.now() for a in resumed.course.plan.appointments)

        key = str(client)
        paused_facts = await topic_messages(kafka_bootstrap, topics.COURSE_PAUSED.name, key=key)
        resumed_facts = await topic_messages(kafka_bootstrap, topics.COURSE_RESUMED.name, key=key)
        public = await topic_messages(
            kafka_bootstrap, topics.PUBLIC_COURSE_STATUS.name, key=key, expect=2
        )
        cancelled = await topic_messages(
            kafka_bootstrap, topics.SESSION_CANCELLED.name, key=key, expect=len(_all(booked))
        )
    assert paused_facts[0]["value"]["sessions_released"] == len(booked.course.plan.appointments)  # type: ignore[union-attr]
    assert len(resumed_facts[0]["value"]["appointments"]) == len(resumed.course.plan.appointments)
    assert [m["value"]["status"] for m in public] == ["paused", "resumed"]
    assert len(cancelled) == len(booked.course.plan.appointments)  # type: ignore[union-attr]


async def test_a_withdrawal_releases_every_session_and_ends_the_course(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        booked = await w.booked_client()
        ended = await w.scheduler.end(w.clinic, booked.client_id, ev.CourseEndCode.WITHDRAWN)
        assert ended.course is not None
        assert ended.course.standing == "ended"
        assert await mine(w, ended) == set()
        first = course(booked)
        with pytest.raises(Exception, match="nothing is moved"):
            await w.scheduler.reschedule(w.clinic, first.appointment_id, first.starts_at)
        key = str(booked.client_id)
        [fact] = await topic_messages(kafka_bootstrap, topics.COURSE_ENDED.name, key=key)
        [public] = await topic_messages(kafka_bootstrap, topics.PUBLIC_COURSE_STATUS.name, key=key)
    assert fact["value"]["reason"] == "withdrawn"
    assert fact["value"]["sessions_released"] == len(_all(booked))
    assert public["value"] == {**public["value"], "status": "ended", "ended_as": "withdrawn"}


async def test_no_booster_is_announced_after_a_discharge(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        completed = await w.completed_client()
        assert completed.course is not None
        due = completed.course.next_booster_due_at
        assert due is not None
        await w.scheduler.end(w.clinic, completed.client_id, ev.CourseEndCode.DISCHARGED)

        w.clock.advance(due - w.clock.now() + timedelta(minutes=1))
        fired, _ = await w.scheduler.fire_due_boosters(w.clinic)

        key = str(completed.client_id)
        due_facts = await topic_messages(
            kafka_bootstrap, topics.BOOSTER_DUE.name, key=key, wait_s=2
        )
        [stopped] = await topic_messages(kafka_bootstrap, topics.BOOSTERS_STOPPED.name, key=key)
        [ended] = await topic_messages(kafka_bootstrap, topics.COURSE_ENDED.name, key=key)
    assert fired == 0
    assert due_facts == []
    assert stopped["value"]["reason"] == "discharged"
    assert ended["value"]["reason"] == "discharged"


async def test_two_medicine_no_shows_in_a_row_hold_the_course_for_review(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        schedule = await w.booked_client()
        client = schedule.client_id
        notes = []
        for _ in range(2):
            assert schedule.course is not None
            dose = min(
                (
                    a
                    for a in schedule.course.plan.appointments
                    if a.kind is ev.AppointmentKind.MEDICINE
                    and schedule.course.status_of(a.appointment_id) == ev.AppointmentStatus.BOOKED
                ),
                key=lambda a: a.starts_at,
            )
            w.clock.advance(max(dose.ends_at - w.clock.now(), timedelta(0)))
            schedule, note = await w.scheduler.drop(w.clinic, dose.appointment_id, missed=True)
            notes.append(note)

        assert schedule.course is not None
        assert schedule.course.standing == "on_review"
        assert notes[0] is None  # the first was rebooked
        assert notes[1] is not None
        assert "held for review" in notes[1]
        # What is booked stays held.
        assert await w.ledger() == ledger_of(w.clinic, schedule, w.clock.now())
        [held] = await topic_messages(
            kafka_bootstrap, topics.COURSE_HELD_FOR_REVIEW.name, key=str(client)
        )
        lifted = await w.scheduler.resume(w.clinic, client)
        assert lifted.course is not None
        assert lifted.course.standing == "active"  # the missed dose rebooked
        assert await w.ledger() == ledger_of(w.clinic, lifted, w.clock.now())
    assert held["value"]["consecutive_no_shows"] == 2


async def test_a_returning_client_gets_a_second_course(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        first = await w.booked_client()
        client = first.client_id
        enrolled = ev.ClientEnrolled(
            clinic_id=w.clinic,
            client_id=client,
            occurred_at=w.clock.now(),
            consent_recorded_at=w.clock.now(),
            phq9_total=14,
            phq9_band=ev.Phq9Band.MODERATE,
            gad7_total=9,
        )
        # While the first course runs, a new enrolment books nothing and says why.
        await w.scheduler.on_client_enrolled(enrolled, w.publisher.envelope_for(enrolled))
        assert (await w.load(client)).course == first.course

        await w.scheduler.end(w.clinic, client, ev.CourseEndCode.WITHDRAWN)
        again = enrolled.model_copy(update={"occurred_at": w.clock.now()})
        await w.scheduler.on_client_enrolled(again, w.publisher.envelope_for(again))

        second = await w.load(client)
        assert second.course is not None
        assert first.course is not None
        assert second.previous_courses == (first.course.plan.course_id,)
        assert second.course.plan.course_id != first.course.plan.course_id
        assert second.course.standing == "active"
        assert await w.ledger() == ledger_of(w.clinic, second, w.clock.now())
        key = str(client)
        [refused] = await topic_messages(
            kafka_bootstrap, topics.COURSE_BOOKING_FAILED.name, key=key
        )
        [booked] = await topic_messages(kafka_bootstrap, topics.COURSE_BOOKED.name, key=key)
    assert "still in progress" in refused["value"]["reason"]
    assert booked["value"]["course_id"] == str(second.course.plan.course_id)
