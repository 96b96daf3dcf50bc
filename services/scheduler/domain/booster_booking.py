"""A booster that fell due, booked, failed to book, declined or let go with its course.

Pure, like domain.lifecycle: each function returns the new schedule and the
events it causes (and the sessions it lets go, so the write step frees their
slots). Where the sessions go is domain.booster_sessions'. A booster announced
is owed a booking (owe_booking) until it is booked, fails to book, or may no
longer be booked: the announcement does not wait for the search. Declining a
booster touches only that booster: the plan's next booster stays armed (rule 19).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from services.scheduler.domain.booster_sessions import BoosterSessions, BoosterToBook
from services.scheduler.domain.facts import Change, base, course_of, status_changed
from services.scheduler.domain.plans import PlanFailure
from services.scheduler.domain.schedule import ClientSchedule, Course, Refused
from shared import events as ev
from shared.events import AppointmentStatus as Status

Released = list[ev.Appointment]


def may_book(course: Course | None) -> bool:
    """Whether a booster may be booked now: never after an ending or once stopped."""
    return course is not None and course.standing != "ended" and not course.boosters_stopped


def owe_booking(schedule: ClientSchedule, number: int, due_at: datetime) -> ClientSchedule:
    """Booster `number`, just announced, owed its booking (once)."""
    course = course_of(schedule)
    if booking_owed(course, number) or any(b.number == number for b in course.booster_sessions):
        return schedule
    owed = (*course.boosters_to_book, BoosterToBook(number=number, due_at=due_at))
    return _with_to_book(schedule, owed)


def booking_owed(course: Course | None, number: int) -> BoosterToBook | None:
    """The booking booster `number` is owed, if any."""
    owed = course.boosters_to_book if course is not None else ()
    return next((b for b in owed if b.number == number), None)


def booking_settled(schedule: ClientSchedule, number: int) -> ClientSchedule:
    """Booster `number` owed no booking any more (booked, failed, or not to be booked)."""
    course = course_of(schedule)
    left = tuple(b for b in course.boosters_to_book if b.number != number)
    if left == course.boosters_to_book:
        return schedule
    return _with_to_book(schedule, left)


def _with_to_book(schedule: ClientSchedule, owed: tuple[BoosterToBook, ...]) -> ClientSchedule:
    course = course_of(schedule).model_copy(update={"boosters_to_book": owed})
    return schedule.model_copy(update={"course": course})


def booster_booked(
    schedule: ClientSchedule,
    number: int,
    due_at: datetime,
    appointments: tuple[ev.Appointment, ...],
    now: datetime,
) -> Change:
    if not may_book(schedule.course):
        raise Refused("boosters are stopped or the course has ended: nothing is booked")
    schedule = booking_settled(schedule, number)
    course = course_of(schedule)
    if any(b.number == number for b in course.booster_sessions):
        return schedule, []  # booked already (a timer fired again)
    booked = BoosterSessions(number=number, due_at=due_at, appointments=appointments)
    course = course.model_copy(update={"booster_sessions": (*course.booster_sessions, booked)})
    fact = ev.BoosterSessionBooked(
        **base(schedule, now),
        course_id=course.plan.course_id,
        booster_number=number,
        due_at=due_at,
        appointments=appointments,
    )
    statuses = [status_changed(schedule, a, Status.BOOKED, now) for a in appointments]
    return schedule.model_copy(update={"course": course}), [fact, *statuses]


def booster_booking_failed(
    schedule: ClientSchedule, number: int, due_at: datetime, failure: PlanFailure, now: datetime
) -> Change:
    schedule = booking_settled(schedule, number)
    course = course_of(schedule)
    failed = ev.BoosterBookingFailed(
        **base(schedule, now),
        course_id=course.plan.course_id,
        booster_number=number,
        due_at=due_at,
        reason=failure.reason,
        earliest_fit_on=failure.earliest_fit_on,
    )
    return schedule, [failed]


def decline_booster(
    schedule: ClientSchedule,
    appointment_id: UUID,
    declined_by: Literal["client", "staff"],
    now: datetime,
) -> tuple[ClientSchedule, list[ev.Event], Released]:
    """The booster one of whose sessions this is, declined: its sessions not yet started
    are cancelled and let go; the next booster of the plan still falls due."""
    course = course_of(schedule)
    if course.standing == "ended":
        raise Refused("the course has ended: its boosters were released with it")
    booster = course.booster_with(appointment_id)
    if booster is None:
        raise Refused("only a booked booster can be declined")
    if booster.declined:
        raise Refused("the booster was already declined")
    dose = booster.appointments[0]
    if course.status_of(dose.appointment_id) != Status.BOOKED or dose.starts_at <= now:
        raise Refused("the booster session has started or is over: it cannot be declined")
    updated, events, released = _cancelled(schedule, booster, now, declined=True)
    declined = ev.BoosterDeclined(
        **base(schedule, now),
        course_id=course.plan.course_id,
        booster_number=booster.number,
        appointment_ids=tuple(a.appointment_id for a in released),
        declined_by=declined_by,
    )
    return updated, [declined, *events], released


def release_boosters(
    schedule: ClientSchedule, now: datetime
) -> tuple[ClientSchedule, list[ev.Event], Released]:
    """Every booked booster session not yet started, cancelled (the course is ending)."""
    events: list[ev.Event] = []
    released: Released = []
    for booster in course_of(schedule).booster_sessions:
        schedule, more, gone = _cancelled(schedule, booster, now, declined=False)
        events += more
        released += gone
    return schedule, events, released


def _cancelled(
    schedule: ClientSchedule, booster: BoosterSessions, now: datetime, *, declined: bool
) -> tuple[ClientSchedule, list[ev.Event], Released]:
    course = course_of(schedule)
    released = [
        a
        for a in booster.appointments
        if course.status_of(a.appointment_id) == Status.BOOKED and a.starts_at > now
    ]
    statuses = {**course.statuses, **{str(a.appointment_id): Status.CANCELLED for a in released}}
    boosters = tuple(
        b.model_copy(update={"declined": True}) if declined and b.number == booster.number else b
        for b in course.booster_sessions
    )
    course = course.model_copy(update={"statuses": statuses, "booster_sessions": boosters})
    events: list[ev.Event] = []
    for session in released:
        events += [
            ev.SessionCancelled(
                **base(schedule, now),
                course_id=course.plan.course_id,
                appointment_id=session.appointment_id,
                kind=session.kind,
                late=False,
            ),
            status_changed(schedule, session, Status.CANCELLED, now),
        ]
    return schedule.model_copy(update={"course": course}), events, released
