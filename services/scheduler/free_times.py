"""The times a course session could move to on one clinic-local date: what the front
desk is offered when a client asks to reschedule.

Each time on the policy's slot grid of that day is tried as the reschedule itself would
try it (domain.replan, with the client's availability and the minimum notice), against
one read of the calendar's bookings; the times it would accept are offered, each with
how many other sessions of the course would move with it. A read, not a hold: a time
taken between the offer and the choice is refused by the reschedule, which says why.
"""

from __future__ import annotations

import datetime as dt
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from services.scheduler.changes import COURSE_HORIZON_DAYS
from services.scheduler.domain.day import day_range
from services.scheduler.domain.plans import MoveSession, PlanFailure
from services.scheduler.domain.replan import replan_after_reschedule
from services.scheduler.domain.schedule import Refused
from services.scheduler.scheduler import Scheduler


class FreeTime(BaseModel):
    model_config = ConfigDict(frozen=True)

    starts_at: dt.datetime
    also_moves: int = Field(description="Other sessions of the course that move with it")


class FreeTimes(BaseModel):
    model_config = ConfigDict(frozen=True)

    date: dt.date = Field(description="The clinic-local date")
    timezone: str = Field(description="The clinic's IANA time zone")
    appointment_id: UUID
    times: list[FreeTime] = Field(description="In time order")


async def free_times(
    scheduler: Scheduler,
    clinic_id: str,
    appointment_id: UUID,
    day: dt.date,
    *,
    allow_short_notice: bool = False,
) -> FreeTimes:
    calendar = await scheduler.calendar(clinic_id)
    client_id = await scheduler.store.client_of(clinic_id, appointment_id)
    schedule = None if client_id is None else await scheduler.store.load(clinic_id, client_id)
    if schedule is None:
        raise LookupError("not found")
    course = schedule.course
    if course is None or all(a.appointment_id != appointment_id for a in course.plan.appointments):
        raise Refused("only a session of a planned course is moved this way")
    if course.standing in ("paused", "ended"):
        raise Refused(f"the course is {course.standing}: nothing is moved")
    now = scheduler.clock.now()
    own = [a.appointment_id for a in course.plan.appointments]
    bookings = await scheduler.store.bookings(
        calendar, schedule.client_id, now, COURSE_HORIZON_DAYS, own
    )
    availability = schedule.course_availability(calendar.policy.course_in_consultation_times)
    since, until = day_range(day, calendar.tz)
    step = dt.timedelta(minutes=calendar.policy.slot_step_minutes)
    current = next(a for a in course.plan.appointments if a.appointment_id == appointment_id)
    found: list[FreeTime] = []
    candidate = since
    while candidate < until:
        if candidate >= now and candidate != current.starts_at:
            move = MoveSession(appointment_id=appointment_id, new_starts_at=candidate)
            replan = replan_after_reschedule(
                calendar,
                bookings,
                course.plan,
                move,
                now,
                short_notice_allowed=allow_short_notice,
                availability=availability,
            )
            if not isinstance(replan, PlanFailure):
                others = {a.appointment_id for a in (*replan.rescheduled, *replan.added)}
                found.append(
                    FreeTime(starts_at=candidate, also_moves=len(others - {appointment_id}))
                )
        candidate += step
    return FreeTimes(
        date=day, timezone=calendar.timezone, appointment_id=appointment_id, times=found
    )
