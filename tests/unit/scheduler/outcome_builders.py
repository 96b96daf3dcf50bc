"""Courses and measures for the outcome tests: six weekly doses from FIRST_DOSE."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.scheduler.domain.outcomes import Measure
from services.scheduler.domain.plans import CoursePlan
from services.scheduler.domain.schedule import Course
from shared import events as ev
from shared.events import AppointmentKind, AppointmentStatus, MeasurePoint

FIRST_DOSE = datetime(2026, 3, 2, 9, tzinfo=UTC)
DOSES = 6


def dose_at(number: int) -> datetime:
    return FIRST_DOSE + timedelta(weeks=number - 1)


LAST_DOSE = dose_at(DOSES)
COMPLETED_AT = LAST_DOSE + timedelta(hours=3)


def course(
    *,
    held: int = DOSES,
    completed_at: datetime | None = COMPLETED_AT,
    ended: ev.CourseEndCode | None = None,
    ended_at: datetime | None = None,
    course_id: uuid.UUID | None = None,
) -> Course:
    """A course of six medicine doses, the first `held` of them held."""
    doses = [
        ev.Appointment(
            appointment_id=uuid.uuid4(),
            kind=AppointmentKind.MEDICINE,
            starts_at=dose_at(n),
            ends_at=dose_at(n) + timedelta(hours=2),
            therapist_id="t-ana",
            dose_number=n,
        )
        for n in range(1, DOSES + 1)
    ]
    plan = CoursePlan(
        course_id=course_id or uuid.uuid4(),
        therapist_id="t-ana",
        window_ends_on=dose_at(DOSES).date(),
        appointments=tuple(doses),
    )
    statuses = {str(a.appointment_id): AppointmentStatus.FULFILLED for a in doses[:held]}
    if ended is not None:
        return Course(
            plan=plan,
            statuses=statuses,
            completed_at=None,
            standing="ended",
            ended_at=ended_at or dose_at(held) + timedelta(days=3),
            end_code=ended,
        )
    return Course(plan=plan, statuses=statuses, completed_at=completed_at)


def phq9(
    score: int,
    at: datetime,
    point: MeasurePoint | None = None,
    course_id: uuid.UUID | None = None,
    gad7: int | None = None,
) -> Measure:
    return Measure(
        key=str(uuid.uuid4()),
        authored=at,
        point=point,
        course_id=course_id,
        source="link",
        phq9=score,
        gad7=gad7,
    )


def enrolment(score: int, days_before: int = 14) -> Measure:
    return phq9(score, FIRST_DOSE - timedelta(days=days_before), MeasurePoint.ENROLMENT)
