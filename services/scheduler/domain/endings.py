"""How a course stops and starts again: pause, resume, review hold, endings, a new course.

Pure, like domain.lifecycle: each function takes the time it needs and returns
the new schedule with the events it causes; sessions it lets go are returned
too, so the write step frees their slots in the booking ledger.

- A pause releases every session not yet started and freezes the window: the
  days left in it (none counted before the first dose opens it). Resuming plans
  what is left of the course from then, inside that many days.
- A review hold (consecutive medicine no-shows, clinic policy) books nothing
  more and keeps what is booked; lifting it rebooks the dose that was missed.
- An ending (withdrawn, discharged, closed as incomplete) releases every
  session not yet started and stops boosters; nothing is booked after it.
- A returning client's new course replaces a completed or ended one; the old
  course's id is kept in `previous_courses`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from math import ceil
from typing import Literal
from uuid import UUID, uuid5

from services.scheduler.domain import lifecycle
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
from services.scheduler.domain.planner import COURSE_HORIZON_DAYS, appointment
from services.scheduler.domain.plans import Bookings, CoursePlan, PlanFailure
from services.scheduler.domain.schedule import ClientSchedule, Course, Refused
from services.scheduler.domain.seats import Seats
from services.scheduler.domain.walk import CourseWalk, Want
from shared import events as ev
from shared.events import AppointmentStatus as Status

Change = tuple[ClientSchedule, list[ev.Event]]
Released = list[ev.Appointment]

RESUME_NOTICE = timedelta(hours=1)  # as a new course: nothing booked for the next hour


def course_of(schedule: ClientSchedule) -> Course:
    if schedule.course is None:
        raise Refused("the client has no course")
    return schedule.course


def finished(course: Course) -> bool:
    """Completed or ended: a returning client may start a new course."""
    return course.standing == "ended" or course.completed_at is not None


def consecutive_no_shows(course: Course) -> int:
    """Medicine sessions missed in a row, counted back from the latest one attended or
    missed (a cancellation neither breaks nor extends the run)."""
    count = 0
    sessions = (*course.plan.appointments, *course.off_plan)  # replaced no-shows count too
    medicine = [a for a in sessions if a.kind is MEDICINE]
    for session in sorted(medicine, key=lambda a: a.starts_at, reverse=True):
        status = course.status_of(session.appointment_id)
        if status == Status.NOSHOW:
            count += 1
        elif status == Status.FULFILLED:
            break
    return count


def _public(
    schedule: ClientSchedule,
    status: ev.CourseStatus,
    now: datetime,
    ended_as: ev.CourseEndCode | None = None,
) -> ev.CourseStatusChanged:
    course = course_of(schedule)
    return ev.CourseStatusChanged(
        clinic_id=schedule.clinic_id,
        client_id=schedule.client_id,
        occurred_at=now,
        course_id=course.plan.course_id,
        status=status,
        ended_as=ended_as,
    )


def _release(
    schedule: ClientSchedule, now: datetime
) -> tuple[ClientSchedule, list[ev.Event], Released]:
    """Every session booked and not yet started, cancelled and taken out of the live plan."""
    course = course_of(schedule)
    released = [
        a
        for a in course.plan.appointments
        if course.status_of(a.appointment_id) == Status.BOOKED and a.starts_at > now
    ]
    gone = {a.appointment_id for a in released}
    statuses = {**course.statuses, **{str(a.appointment_id): Status.CANCELLED for a in released}}
    plan = course.plan.model_copy(
        update={
            "appointments": tuple(
                a for a in course.plan.appointments if a.appointment_id not in gone
            )
        }
    )
    course = course.model_copy(
        update={"plan": plan, "statuses": statuses, "off_plan": (*course.off_plan, *released)}
    )
    events: list[ev.Event] = []
    for session in released:
        events += [
            ev.SessionCancelled(
                clinic_id=schedule.clinic_id,
                client_id=schedule.client_id,
                occurred_at=now,
                course_id=plan.course_id,
                appointment_id=session.appointment_id,
                kind=session.kind,
                late=False,  # released by the clinic, not a client's late cancellation
            ),
            lifecycle.status_changed(schedule, session, Status.CANCELLED, now),
        ]
    return schedule.model_copy(update={"course": course}), events, released


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
    updated, events, released = _release(schedule, now)
    paused = course_of(updated).model_copy(
        update={"standing": "paused", "paused_days_left": days_left, "review_for": None}
    )
    updated = updated.model_copy(update={"course": paused})
    fact = ev.CoursePaused(
        clinic_id=schedule.clinic_id,
        client_id=schedule.client_id,
        occurred_at=now,
        course_id=course.plan.course_id,
        sessions_released=len(released),
        window_days_left=days_left,
    )
    return updated, [*events, fact, _public(updated, ev.CourseStatus.PAUSED, now)], released


def end_course(
    schedule: ClientSchedule,
    code: ev.CourseEndCode,
    now: datetime,
    detail: str | None = None,
) -> tuple[ClientSchedule, list[ev.Event], Released]:
    course = course_of(schedule)
    if course.standing == "ended":
        raise Refused("the course has already ended")
    updated, events, released = _release(schedule, now)
    if course.completed_at is not None and not course.boosters_stopped:
        discharged = code is ev.CourseEndCode.DISCHARGED
        why: Literal["discharged", "stopped_by_care_team"] = (
            "discharged" if discharged else "stopped_by_care_team"
        )
        updated, stopped = lifecycle.stop_boosters(updated, why, now)
        events += stopped
    ended = course_of(updated).model_copy(
        update={
            "standing": "ended",
            "ended_at": now,
            "end_code": code,
            "review_for": None,
            "boosters_stopped": True,
            "next_booster": None,
            "next_booster_due_at": None,
        }
    )
    updated = updated.model_copy(update={"course": ended})
    fact = ev.CourseEnded(
        clinic_id=schedule.clinic_id,
        client_id=schedule.client_id,
        occurred_at=now,
        course_id=course.plan.course_id,
        reason=code,
        sessions_released=len(released),
        medicine_sessions_completed=course.doses_held(),
        detail=detail,
    )
    public = _public(updated, ev.CourseStatus.ENDED, now, ended_as=code)
    return updated, [*events, fact, public], released


def hold_for_review(schedule: ClientSchedule, missed: UUID, now: datetime) -> Change:
    course = course_of(schedule)
    held = course.model_copy(update={"standing": "on_review", "review_for": missed})
    updated = schedule.model_copy(update={"course": held})
    fact = ev.CourseHeldForReview(
        clinic_id=schedule.clinic_id,
        client_id=schedule.client_id,
        occurred_at=now,
        course_id=course.plan.course_id,
        consecutive_no_shows=consecutive_no_shows(course),
    )
    return updated, [fact, _public(updated, ev.CourseStatus.ON_REVIEW, now)]


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
    running = course.model_copy(
        update={"plan": plan, "standing": "active", "paused_days_left": None, "review_for": None}
    )
    updated = schedule.model_copy(update={"course": running})
    events: list[ev.Event] = []
    for session in () if told else added:
        events += [
            ev.SessionScheduled(
                clinic_id=schedule.clinic_id,
                client_id=schedule.client_id,
                occurred_at=now,
                course_id=plan.course_id,
                appointment=session,
            ),
            lifecycle.status_changed(schedule, session, Status.BOOKED, now),
        ]
    fact = ev.CourseResumed(
        clinic_id=schedule.clinic_id,
        client_id=schedule.client_id,
        occurred_at=now,
        course_id=plan.course_id,
        window_ends_on=plan.window_ends_on,
        appointments=added,
    )
    return updated, [*events, fact, _public(updated, ev.CourseStatus.RESUMED, now)]


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


def archived(schedule: ClientSchedule, now: datetime) -> Change:
    """A finished course put on record before a new one: its boosters stop."""
    course = course_of(schedule)
    if not finished(course):
        raise Refused("a course is still in progress: end it before a new one")
    events: list[ev.Event] = []
    if course.completed_at is not None and not course.boosters_stopped and course.booster_plan:
        schedule, events = lifecycle.stop_boosters(schedule, "stopped_by_care_team", now)
    previous = (*schedule.previous_courses, course.plan.course_id)
    return schedule.model_copy(update={"course": None, "previous_courses": previous}), events
