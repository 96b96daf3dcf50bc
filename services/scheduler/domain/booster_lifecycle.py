"""How a completed course's boosters move: the plan set or changed, stopped, announced.

Pure, like domain.lifecycle (which sets the clinic's default plan when a course
completes); the dates themselves are domain.boosters'.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from services.scheduler.domain.boosters import BoosterDueAt, next_booster_due
from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.facts import base, course_of, stage
from services.scheduler.domain.schedule import ClientSchedule, Refused
from shared import events as ev


def set_booster_plan(
    schedule: ClientSchedule, plan: ev.BoosterPlan, calendar: ClinicCalendar, now: datetime
) -> tuple[ClientSchedule, list[ev.Event]]:
    """Set or change the plan; its dates count from the course's completion.

    Boosters are numbered in the order they are announced, each number once per
    course: after booster 1, a changed plan's next booster is booster 2, on the
    new plan's first date still ahead.
    """
    course = course_of(schedule)
    if course.completed_at is None or course.standing == "ended":
        raise Refused("boosters follow a completed course, not one that has ended")
    upcoming = next_booster_due(
        course.completed_at, plan, calendar.tz, now, calendar.policy.booster_due_local_time
    )
    course = course.model_copy(
        update={
            "booster_plan": plan,
            "boosters_stopped": False,
            "next_booster": course.last_booster_announced() + 1 if upcoming else None,
            "next_booster_due_at": upcoming.due_at if upcoming else None,
        }
    )
    event = ev.BoosterPlanSet(
        **base(schedule, now),
        course_id=course.plan.course_id,
        plan=plan,
        first_due_at=upcoming.due_at if upcoming else None,
    )
    return schedule.model_copy(update={"course": course}), [event]


def stop_boosters(
    schedule: ClientSchedule,
    reason: Literal["stopped_by_care_team", "discharged"],
    now: datetime,
) -> tuple[ClientSchedule, list[ev.Event]]:
    course = course_of(schedule)
    if course.boosters_stopped:
        return schedule, []
    course = course.model_copy(
        update={
            "boosters_stopped": True,
            "next_booster": None,
            "next_booster_due_at": None,
            "boosters_to_book": (),  # a plan set again later books none of these
        }
    )
    stopped = ev.BoostersStopped(
        **base(schedule, now),
        course_id=course.plan.course_id,
        reason=reason,
    )
    return schedule.model_copy(update={"course": course}), [
        stopped,
        stage(schedule, ev.ClientStage.BOOSTERS_STOPPED, now),
    ]


def booster_fired(
    schedule: ClientSchedule, number: int, calendar: ClinicCalendar, now: datetime
) -> tuple[ClientSchedule, list[ev.Event]]:
    """Announce booster `number` once, not before it is due, and arm the next one.

    A timer may fire for a booster that is no longer the one pending, or whose
    due time moved later (the plan changed after it was set): nothing then.
    """
    course = course_of(schedule)
    if (
        course.next_booster != number
        or course.next_booster_due_at is None
        or course.booster_plan is None
        or course.boosters_stopped
        or course.standing == "ended"  # nothing after an ending (domain.endings)
        or now < course.next_booster_due_at
    ):
        return schedule, []  # already announced, not yet due, or the plan changed meanwhile
    due_at = course.next_booster_due_at
    upcoming: BoosterDueAt | None = next_booster_due(
        course.completed_at or due_at,
        course.booster_plan,
        calendar.tz,
        due_at,
        calendar.policy.booster_due_local_time,
    )
    course = course.model_copy(
        update={
            "boosters_announced": number,
            "next_booster": number + 1 if upcoming else None,
            "next_booster_due_at": upcoming.due_at if upcoming else None,
        }
    )
    due = ev.BoosterDue(
        **base(schedule, now),
        course_id=course.plan.course_id,
        booster_number=number,
        due_at=due_at,
    )
    return schedule.model_copy(update={"course": course}), [
        due,
        stage(schedule, ev.ClientStage.BOOSTER_DUE, now),
    ]
