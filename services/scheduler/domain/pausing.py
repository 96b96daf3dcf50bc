"""Pausing a course and resuming it, or lifting its review hold.

Pure, like domain.lifecycle; the sessions a pause lets go are returned so the
write step frees their slots in the booking ledger.

- A pause releases every session not yet started and freezes the window: the
  days left in it (none counted before the first dose opens it). Resuming plans
  what is left of the course from then, inside that many days.
- Lifting a review hold (domain.endings) runs the course again on its plan, with
  the missed dose rebooked by the caller.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from math import ceil
from uuid import uuid5

from services.scheduler.domain.calendar import FreeTime, epoch
from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.course import (
    INTEGRATION,
    MEDICINE,
    PREPARATION,
    Placed,
    Step,
    course_steps,
)
from services.scheduler.domain.endings import Released, release
from services.scheduler.domain.facts import Change, base, course_of, course_status, status_changed
from services.scheduler.domain.planner import COURSE_HORIZON_DAYS, appointment
from services.scheduler.domain.plans import Bookings, CoursePlan, PlanFailure
from services.scheduler.domain.schedule import ClientSchedule, Course, Refused
from services.scheduler.domain.seats import Seats
from services.scheduler.domain.walk import CourseWalk, Want
from shared import events as ev
from shared.events import AppointmentStatus as Status

RESUME_NOTICE = timedelta(hours=1)  # as a new course: nothing booked for the next hour


def pause(
    schedule: ClientSchedule, calendar: ClinicCalendar, now: datetime
) -> tuple[ClientSchedule, list[ev.Event], Released]:
    course = course_of(schedule)
    if course.standing not in ("active", "on_review"):
        raise Refused(f"the course is {course.standing.replace('_', ' ')}, not running")
    if course.completed_at is not None:
        raise Refused("the course is completed: stop or change its boosters instead")
    days_left: int | None = None
    if course.doses_held():
        today = now.astimezone(calendar.tz).date()
        days_left = max((course.plan.window_ends_on - today).days + 1, 0)
    updated, events, released = release(schedule, now)
    paused = course_of(updated).model_copy(
        update={"standing": "paused", "paused_days_left": days_left, "review_for": None}
    )
    updated = updated.model_copy(update={"course": paused})
    fact = ev.CoursePaused(
        **base(schedule, now),
        course_id=course.plan.course_id,
        sessions_released=len(released),
        window_days_left=days_left,
    )
    return updated, [*events, fact, course_status(updated, ev.CourseStatus.PAUSED, now)], released


def resumed(
    schedule: ClientSchedule,
    plan: CoursePlan,
    added: tuple[ev.Appointment, ...],
    now: datetime,
    *,
    told: bool = False,
) -> Change:
    """The course running again on `plan`; `added` are its newly booked sessions
    (`told`: the caller already published them, as lifecycle.replanned does)."""
    course = course_of(schedule)
    if course.standing not in ("paused", "on_review"):
        raise Refused("the course is not paused or on review")
    # Sessions the new plan replaces stay on record: a no-show before the pause still
    # counts towards the review hold (endings.consecutive_no_shows).
    kept = {a.appointment_id for a in plan.appointments}
    gone = tuple(a for a in course.plan.appointments if a.appointment_id not in kept)
    running = course.model_copy(
        update={
            "plan": plan,
            "standing": "active",
            "paused_days_left": None,
            "review_for": None,
            "off_plan": (*course.off_plan, *gone),
        }
    )
    updated = schedule.model_copy(update={"course": running})
    events: list[ev.Event] = []
    for session in () if told else added:
        events += [
            ev.SessionScheduled(
                **base(schedule, now),
                course_id=plan.course_id,
                appointment=session,
            ),
            status_changed(schedule, session, Status.BOOKED, now),
        ]
    fact = ev.CourseResumed(
        **base(schedule, now),
        course_id=plan.course_id,
        window_ends_on=plan.window_ends_on,
        appointments=added,
    )
    return updated, [*events, fact, course_status(updated, ev.CourseStatus.RESUMED, now)]


def resume_plan(
    calendar: ClinicCalendar, bookings: Bookings, course: Course, now: datetime, tag: str
) -> tuple[CoursePlan, tuple[ev.Appointment, ...]] | PlanFailure:
    """What is left of a paused course, planned from `now` inside its frozen window.

    Kept: sessions held, and those booked that had started by the pause. Planned
    again: the doses not held and their integrations (preparation only while no
    dose is held; an integration whose dose was held before the pause lapses).
    New sessions get new ids (`tag` tells one resumption from another).
    """
    if course.standing != "paused":
        raise Refused("the course is not paused")
    kept = sorted(
        (
            a
            for a in course.plan.appointments
            if course.status_of(a.appointment_id) == Status.FULFILLED
            or (course.status_of(a.appointment_id) == Status.BOOKED and a.starts_at <= now)
        ),
        key=lambda a: a.starts_at,
    )
    seats = Seats(FreeTime(calendar, bookings, own=course.plan.appointments), calendar)
    history = _history(seats, kept)
    doses_kept = {p.step.number for p in history if p.step.kind is MEDICINE}
    wants = [
        Want(step)
        for step in course_steps(calendar.policy)
        if step not in {p.step for p in history}
        and not (step.kind is PREPARATION and doses_kept)
        and not (step.kind is INTEGRATION and step.number in doses_kept)
    ]
    window_end = None
    if doses_kept:
        today = now.astimezone(calendar.tz).date()
        window_end = today + timedelta(days=(course.paused_days_left or 0) - 1)
    not_before = ceil((now + RESUME_NOTICE).timestamp())
    therapists = [t.id for t in calendar.therapists]
    plan = course.plan
    pools = [[plan.therapist_id]] if plan.therapist_id in therapists else []
    pools.append(sorted(therapists, key=lambda therapist: therapist != plan.therapist_id))
    for pool in pools:
        walk = CourseWalk(
            seats,
            not_before=not_before,
            pool=pool,
            last_day=seats.free.day_of(not_before) + timedelta(days=COURSE_HORIZON_DAYS),
            window_end=window_end,
        )
        placed = walk.walk(history, wants)
        if placed is not None:
            new = placed[len(history) :]
            added = tuple(
                appointment(plan.course_id, p, uuid5(plan.course_id, f"{p.step.name}/{tag}"))
                for p in new
            )
            first_dose = next(p for p in placed if p.step.kind is MEDICINE)
            window_ends_on = window_end or first_dose.day + timedelta(
                days=calendar.policy.course_window_days - 1
            )
            return (
                plan.model_copy(
                    update={"appointments": (*kept, *added), "window_ends_on": window_ends_on}
                ),
                added,
            )
    days = "its" if window_end is None else f"the {course.paused_days_left} days left in its"
    return PlanFailure(reason=f"the rest of the course cannot fit in {days} window")


def _history(seats: Seats, kept: list[ev.Appointment]) -> list[Placed]:
    """Sessions kept, as steps of the course: an integration belongs to the dose before."""
    placed: list[Placed] = []
    preparations = dose = 0
    for session in kept:
        if session.kind is PREPARATION:
            preparations += 1
            step = Step(PREPARATION, preparations)
        elif session.kind is MEDICINE:
            dose = session.dose_number or dose + 1
            step = Step(MEDICINE, dose)
        else:
            step = Step(INTEGRATION, dose)
        start = epoch(session.starts_at)
        placed.append(
            Placed(
                step,
                start,
                epoch(session.ends_at),
                seats.free.day_of(start),
                session.therapist_id,
                session.room_id,
            )
        )
    return placed
