"""One clinic-local date: its UTC range, and what the clinic's day calendar says of a
session on it (calendar_day.py reads the store; this decides).

Pure. The day is every instant whose wall clock in the clinic's zone reads that date:
23 hours on the day the clocks go forward, 25 on the day they go back, and none on a
date a zone skipped altogether.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from uuid import UUID
from zoneinfo import ZoneInfo

from services.scheduler.domain import measures
from services.scheduler.domain.checkin import DOSING
from services.scheduler.domain.schedule import ClientSchedule, Course
from shared import events as ev
from shared.events import AppointmentStatus as Status


def day_range(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the instants whose wall clock in `tz` reads `day`.

    Each end is the first instant of its date: local midnight, read before any change
    at it (fold 0). Midnight skipped by a gap is the instant the clocks jump, which is
    what fold 0 maps it to; midnight repeated by a fall back is first read at fold 0.
    """
    start = datetime.combine(day, time(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


class Flag(StrEnum):
    """What the front desk should know of a session at a glance."""

    CHECK_IN_REFUSED = "check_in_refused"
    """A medicine (or booster) session whose check-in was refused: it is proposed for
    rescheduling, staff move or cancel it."""
    RIDE_HOME_UNCONFIRMED = "ride_home_unconfirmed"
    """A booked medicine (or booster) session with no check-in confirming a ride home
    (rule 8): none yet, or one that said there is none."""
    MEASURE_OVERDUE = "measure_overdue"
    """The session's pre-dose measure opened and is unanswered (as the check-in says)."""


@dataclass(frozen=True)
class Found:
    """An appointment as its client's schedule holds it."""

    appointment: ev.Appointment
    status: Status
    course: Course | None  # None: the consultation


def find(schedule: ClientSchedule, appointment_id: UUID) -> Found | None:
    """The consultation, or a session of the course or of one finished before it (its
    plan or its booked boosters). Sessions taken out of a plan are not looked at: they
    hold no slot."""
    consultation = schedule.consultation
    if consultation is not None and consultation.appointment_id == appointment_id:
        return Found(consultation, schedule.consultation_status or Status.BOOKED, None)
    for course in (schedule.course, *reversed(schedule.finished_courses)):
        if course is None:
            continue
        boosters = (a for b in course.booster_sessions for a in b.appointments)
        for appointment in (*course.plan.appointments, *boosters):
            if appointment.appointment_id == appointment_id:
                return Found(appointment, course.status_of(appointment_id), course)
    return None


def is_dose(found: Found) -> bool:
    """A medicine or booster session of a course: the one kind with flags."""
    return found.course is not None and found.appointment.kind in DOSING


def flags(found: Found, answers: Sequence[measures.Answer], now: datetime) -> list[Flag]:
    """The session's flags, in Flag's order; `answers`: its client's answered measures
    (needed for a dose only)."""
    course = found.course
    if course is None or not is_dose(found):
        return []
    session = found.appointment
    checkin = course.checkin_for(session)
    raised = []
    if checkin is not None and not checkin.passed:
        raised.append(Flag.CHECK_IN_REFUSED)
    ride_confirmed = checkin is not None and checkin.answers.ride_home_confirmed
    if found.status == Status.BOOKED and not ride_confirmed:
        raised.append(Flag.RIDE_HOME_UNCONFIRMED)
    if measures.overdue(course, session, answers, now):
        raised.append(Flag.MEASURE_OVERDUE)
    return raised
