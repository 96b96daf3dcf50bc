"""Re-planning what is left of a course after one session moved, was missed or cancelled.

Sessions already started stay as they were. The moved session stays where it was asked to
be, or the re-plan fails. Every other future session keeps its time if the rules still allow
it, else takes the earliest allowed one: the fewest changes to tell the client about.
The window stays as booked once the first dose is held; before that it starts again from
the (new) first dose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from math import ceil
from uuid import uuid5

from services.scheduler.domain.calendar import FreeTime, epoch
from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.course import INTEGRATION, MEDICINE, PREPARATION, Placed, Step
from services.scheduler.domain.planner import COURSE_HORIZON_DAYS, appointment
from services.scheduler.domain.plans import (
    Bookings,
    ClientAvailability,
    CoursePlan,
    DropSession,
    MoveSession,
    PlanFailure,
    Replan,
)
from services.scheduler.domain.seats import Seats
from services.scheduler.domain.walk import CourseWalk, Want, therapist_pools
from shared.events import Appointment


def replan_after_reschedule(
    calendar: ClinicCalendar,
    bookings: Bookings,
    plan: CoursePlan,
    change: MoveSession | DropSession,
    now: datetime,
    *,
    short_notice_allowed: bool = False,
    availability: ClientAvailability | None = None,
) -> Replan | PlanFailure:
    """The course after `change`, with every rule kept, or why that cannot be.

    `bookings` may include this course's own appointments; they are recognised and ignored.
    Re-planned sessions stay with the course's therapist, or any therapist if they must.
    A session given a new time starts at least the policy's minimum notice after `now`,
    unless staff allowed short notice; sessions keeping their time keep it however soon.
    A session given a new time lies inside the client's `availability` when given.
    """
    if all(a.appointment_id != change.appointment_id for a in plan.appointments):
        return PlanFailure(reason="the session is not part of this course")
    if isinstance(change, MoveSession) and change.new_starts_at < now:
        return PlanFailure(reason="the new time has already passed")
    notice_hours = 0 if short_notice_allowed else calendar.policy.min_notice_hours
    notice_from = now + timedelta(hours=notice_hours)
    if isinstance(change, MoveSession) and change.new_starts_at < notice_from:
        return PlanFailure(
            reason=f"the new time gives less than the minimum notice of {notice_hours} h "
            "(staff may allow short notice)"
        )
    free = FreeTime(calendar, bookings, own=plan.appointments, client=availability)
    seats = Seats(free, calendar)
    wants = _wants(seats, plan.appointments, change, now)
    if wants is None:
        return PlanFailure(reason="sessions already held cannot be re-ordered")
    moved = next((w.at for w in wants if w.mode == "pin" and w.at is not None), None)
    if moved and not seats.at(moved.step, moved.start, moved.therapist_id, moved.room_id):
        return PlanFailure(reason="the therapist or a room is not free at the new time")
    dose_one_held = any(w.mode == "history" and w.step == Step(MEDICINE, 1) for w in wants)
    not_before = ceil(now.timestamp())
    therapists = [t.id for t in calendar.therapists]
    for pool in therapist_pools(therapists, plan.therapist_id):
        walk = CourseWalk(
            seats,
            not_before=not_before,
            pool=pool,
            last_day=seats.free.day_of(not_before) + timedelta(days=COURSE_HORIZON_DAYS),
            window_end=plan.window_ends_on if dose_one_held else None,
            fresh_from=ceil(notice_from.timestamp()),
        )
        placed = walk.walk([], wants)
        if placed is not None:
            return _replan(calendar, plan, change, placed, dose_one_held=dose_one_held)
    return PlanFailure(
        reason=f"the rest of the course cannot fit inside its window (ends {plan.window_ends_on})"
    )


def _wants(
    seats: Seats,
    appointments: Sequence[Appointment],
    change: MoveSession | DropSession,
    now: datetime,
) -> list[Want] | None:
    """One step per session, in course order, each knowing how it may change."""
    wants: list[Want] = []
    for step, booked in _steps(appointments):
        at = _placed(seats, step, booked)
        if booked.appointment_id == change.appointment_id:
            if isinstance(change, DropSession):
                wants.append(Want(step))
                continue
            start = epoch(change.new_starts_at)
            moved = replace(
                at, start=start, end=start + seats.length(step), day=seats.free.day_of(start)
            )
            wants.append(Want(step, "pin", moved))
        elif booked.starts_at < now:
            if any(w.mode != "history" for w in wants):
                return None
            wants.append(Want(step, "history", at))
        else:
            wants.append(Want(step, "prefer", at))
    return wants


def _steps(appointments: Sequence[Appointment]) -> list[tuple[Step, Appointment]]:
    """Each booked session's place in the course; an integration belongs to the dose before."""
    steps: list[tuple[Step, Appointment]] = []
    preparations = dose = 0
    for booked in sorted(appointments, key=lambda a: a.starts_at):
        if booked.kind is PREPARATION:
            preparations += 1
            steps.append((Step(PREPARATION, preparations), booked))
        elif booked.kind is MEDICINE:
            dose = booked.dose_number or dose + 1
            steps.append((Step(MEDICINE, dose), booked))
        elif booked.kind is INTEGRATION:
            steps.append((Step(INTEGRATION, dose), booked))
    return steps


def _placed(seats: Seats, step: Step, booked: Appointment) -> Placed:
    start = epoch(booked.starts_at)
    return Placed(
        step,
        start,
        epoch(booked.ends_at),
        seats.free.day_of(start),
        booked.therapist_id,
        booked.room_id,
    )


def _replan(
    calendar: ClinicCalendar,
    plan: CoursePlan,
    change: MoveSession | DropSession,
    placed: Sequence[Placed],
    *,
    dose_one_held: bool,
) -> Replan:
    booked = [a for _, a in _steps(plan.appointments)]
    after: list[Appointment] = []
    rescheduled: list[Appointment] = []
    added: list[Appointment] = []
    for before, session in zip(booked, placed, strict=True):
        if isinstance(change, DropSession) and before.appointment_id == change.appointment_id:
            # A new appointment: the missed or cancelled one stays on record as it was.
            rebooked = appointment(
                plan.course_id, session, uuid5(before.appointment_id, "rebooked")
            )
            after.append(rebooked)
            added.append(rebooked)
            continue
        now_booked = appointment(plan.course_id, session, before.appointment_id)
        after.append(now_booked)
        if now_booked != before:
            rescheduled.append(now_booked)
    window_ends_on = plan.window_ends_on
    if not dose_one_held:
        first_dose = next(p for p in placed if p.step.kind is MEDICINE)
        window_ends_on = first_dose.day + timedelta(days=calendar.policy.course_window_days - 1)
    return Replan(
        plan=CoursePlan(
            course_id=plan.course_id,
            therapist_id=plan.therapist_id,
            window_ends_on=window_ends_on,
            appointments=tuple(after),
        ),
        rescheduled=tuple(rescheduled),
        added=tuple(added),
        dropped=(change.appointment_id,) if isinstance(change, DropSession) else (),
    )
