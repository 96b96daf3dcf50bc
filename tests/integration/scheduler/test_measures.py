"""Issue 17 over real Kafka and Redis: a booked course's measures fall due on their topic when
they open; an answer lands in the client's measure log and its measure is then not sent; a
cancelled dose's timer goes; the check-in says when its pre-dose measure is overdue."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from chassis.clock import FrozenClock
from chassis.events import EventPublisher
from services.scheduler.domain import measures
from services.scheduler.domain.measure_state import ScheduledMeasure
from services.scheduler.domain.schedule import ClientSchedule
from shared import events as ev
from shared import topics
from shared.envelope import Envelope
from shared.events import MeasurePoint as Point
from tests.helpers import auth, topic_messages
from tests.integration.scheduler.test_fault_duplicate_delivery import enrolment
from tests.integration.scheduler.test_scheduler_service import booked_course, enrol
from tests.integration.scheduler.world import World, world

pytestmark = pytest.mark.integration


def pre_dose(schedule: ClientSchedule) -> list[ScheduledMeasure]:
    assert schedule.course is not None
    return [m for m in schedule.course.measures if m.point == Point.PRE_DOSE]


async def booked(w: World) -> tuple[ClientSchedule, ev.ClientEnrolled, Envelope]:
    event = enrolment(w.clinic, w.clock.now())
    envelope = w.publisher.envelope_for(event)
    await w.scheduler.on_client_enrolled(event, envelope)
    return await w.load(event.client_id), event, envelope


def answers_to(
    clinic_id: str, client_id: uuid.UUID, course_id: uuid.UUID, measure_id: uuid.UUID, at: datetime
) -> ev.MeasureAnswered:
    """A client's answers to a pre-dose measure from its link (PHQ-9 total 9, GAD-7 total 6)."""
    return ev.MeasureAnswered(
        clinic_id=clinic_id,
        client_id=client_id,
        occurred_at=at,
        responses=(
            ev.QuestionnaireResponse(
                questionnaire=ev.Instrument.PHQ9,
                items=(2, 1, 1, 2, 1, 0, 1, 1, 0),
                total=9,
                loinc="44261-6",
                authored=at,
            ),
            ev.QuestionnaireResponse(
                questionnaire=ev.Instrument.GAD7,
                items=(1, 1, 0, 2, 1, 0, 1),
                total=6,
                loinc="70274-6",
                authored=at,
            ),
        ),
        source="link",
        measure_id=measure_id,
        course_id=course_id,
        point=Point.PRE_DOSE,
    )


def answering(
    schedule: ClientSchedule, measure: ScheduledMeasure, at: datetime
) -> ev.MeasureAnswered:
    assert schedule.course is not None
    course_id = schedule.course.plan.course_id
    return answers_to(schedule.clinic_id, schedule.client_id, course_id, measure.measure_id, at)


def measure_log(clinic: str, client: uuid.UUID) -> str:
    return f"{{{clinic}}}:measures:{client}"


async def test_a_booked_course_announces_each_pre_dose_measure_when_it_opens(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        schedule, enrolled, envelope = await booked(w)
        client = str(schedule.client_id)
        first, second, *_ = pre_dose(schedule)
        assert first.opens_at == w.clock.now()  # dose 1 is less than 48 h away: opens now
        fired_now = await w.scheduler.fire_due_measures(w.clinic)
        w.clock.advance(second.opens_at - w.clock.now() - timedelta(seconds=1))
        too_early = await w.scheduler.fire_due_measures(w.clinic)
        w.clock.advance(timedelta(seconds=1))
        when_open = await w.scheduler.fire_due_measures(w.clinic)
        again = await w.scheduler.fire_due_measures(w.clinic)
        due = await topic_messages(kafka_bootstrap, topics.MEASURE_DUE.name, key=client, expect=2)
        baseline = await w.redis.hgetall(measure_log(w.clinic, schedule.client_id))
        after = await w.load(schedule.client_id)
    assert [fired_now[0], too_early[0], when_open[0], again[0]] == [1, 0, 1, 0]
    assert [m["value"]["measure_id"] for m in due] == [
        str(first.measure_id),
        str(second.measure_id),
    ]
    announced = ev.MeasureDue.model_validate(due[1]["value"])
    assert (announced.point, announced.dose_number) == (Point.PRE_DOSE, 2)
    assert (announced.opens_at, announced.closes_at) == (second.opens_at, second.closes_at)
    assert announced.closes_at - announced.opens_at == timedelta(hours=48)
    assert announced.instruments == (ev.Instrument.PHQ9, ev.Instrument.GAD7)
    assert [m.state for m in pre_dose(after)[:3]] == ["sent", "sent", "pending"]
    # The enrolment's measures, recorded with the booking: the outcomes' baseline.
    assert {k: json.loads(v) for k, v in baseline.items()} == {
        f"enrolment:{envelope.id}": {
            "measure_id": None,
            "point": "enrolment",
            "course_id": None,
            "authored": enrolled.occurred_at.isoformat(),
            "source": "staff",
            "phq9": 14,
            "gad7": 9,
        }
    }


async def test_an_answered_measure_is_logged_and_not_announced_when_it_opens(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        schedule, _, _ = await booked(w)
        client = schedule.client_id
        await w.scheduler.fire_due_measures(w.clinic)  # dose 1's, open from the booking
        second = pre_dose(schedule)[1]
        # As the form publishes it: the link names the measure only, not its point or course.
        answer = answering(schedule, second, w.clock.now()).model_copy(
            update={"point": None, "course_id": None}
        )
        envelope = w.publisher.envelope_for(answer)
        await w.scheduler.on_measure_answered(answer, envelope)
        await w.scheduler.on_measure_answered(answer, envelope)  # redelivered: once
        w.clock.advance(second.opens_at - w.clock.now() + timedelta(minutes=1))
        fired, _ = await w.scheduler.fire_due_measures(w.clinic)
        logged = await w.redis.hgetall(measure_log(w.clinic, client))
        due = await topic_messages(kafka_bootstrap, topics.MEASURE_DUE.name, key=str(client))
        after = await w.load(client)
    assert fired == 0
    assert [m["value"]["measure_id"] for m in due] == [str(pre_dose(schedule)[0].measure_id)]
    assert pre_dose(after)[1].state == "answered"
    assert json.loads(logged[envelope.id]) == {
        "measure_id": str(second.measure_id),
        "point": "pre_dose",
        "course_id": str(schedule.course.plan.course_id),  # type: ignore[union-attr]
        "authored": answer.responses[0].authored.isoformat(),
        "source": "link",
        "phq9": 9,
        "gad7": 6,
    }
    assert len(logged) == 2  # and the enrolment's


async def test_a_cancelled_dose_takes_its_pending_measure_timer_with_it(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        schedule, _, _ = await booked(w)
        third = pre_dose(schedule)[2]
        timers = f"sched:{{{w.clinic}}}:measure-timers:due"
        member = f"{schedule.client_id}|{third.measure_id}"
        armed = await w.redis.zscore(timers, member)
        await w.scheduler.drop(w.clinic, third.appointment_id, missed=False)  # type: ignore[arg-type]
        left = await w.redis.zscore(timers, member)
        after = await w.load(schedule.client_id)
    assert armed == third.opens_at.timestamp()
    assert left is None
    assert third.measure_id not in {m.measure_id for m in pre_dose(after)}


async def test_over_http_the_check_in_says_when_the_pre_dose_measure_is_overdue(
    scheduler: httpx.AsyncClient,
    intake_events: EventPublisher,
    clock: FrozenClock,
    kafka_bootstrap: str,
    redis_client: Redis,
) -> None:
    client, _ = await enrol(intake_events, clock)
    course = (await booked_course(kafka_bootstrap, client))["value"]
    first, second = [
        ev.Appointment.model_validate(a) for a in course["appointments"] if a["kind"] == "medicine"
    ][:2]
    body = {
        "ride_home_confirmed": True,
        "fasting_confirmed": True,
        "vitals": {"systolic": 130, "diastolic": 85, "heart_rate": 70},
        "phq9_item9": 0,
    }
    # The second dose's measure is answered by its link before that check-in.
    course_id = uuid.UUID(course["course_id"])
    answered_id = measures.measure_id(course_id, Point.PRE_DOSE, second)
    answer = answers_to("lisbon", uuid.UUID(client), course_id, answered_id, clock.now())
    await intake_events.publish(answer, intake_events.envelope_for(answer))
    log = measure_log("lisbon", uuid.UUID(client))
    for _ in range(100):
        if await redis_client.hlen(log) == 2:
            break
        await asyncio.sleep(0.1)

    answers = []
    for dose in (first, second):
        clock.advance(dose.starts_at - timedelta(minutes=60) - clock.now())
        url = f"/v1/clinics/lisbon/appointments/{dose.appointment_id}/check-in"
        checked = await scheduler.post(url, json=body, headers=auth("lisbon"))
        assert checked.status_code == 200, checked.text
        answers.append(checked.json()["measure_overdue"])
    assert answers == [True, False]
