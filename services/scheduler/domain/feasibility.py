"""Whether a clinic's calendar could ever hold a full course: checked when it is saved.

A policy whose spacing, weekly cap, window and opening days leave no room for a course is
otherwise accepted, and every enrolment then fails with a reason that blames the bookings.
The answer is the planner's own: it plans a course for a stand-in therapist who works
whenever the clinic is open, with a room and nobody booked, from every first-dose day of a
year (both daylight-saving changes included). Dated closures are left out: they change, the
weekly pattern and the policy are what the check is about.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from uuid import UUID

from services.scheduler.domain.clinic import ClinicCalendar, Room, Therapist, WeeklyHours
from services.scheduler.domain.planner import EARLIEST_FIT_HORIZON_DAYS, plan_course
from services.scheduler.domain.plans import Bookings, PlanFailure

_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_STAND_IN = "feasibility-check"


def why_no_course_fits(calendar: ClinicCalendar, today: date) -> str | None:
    """None when some course fits the weekly pattern within a year of `today`; else why not."""
    policy = calendar.policy
    hours = calendar.opening_hours
    open_days = [d for d in range(7) if hours.on(d)]
    if not open_days:
        return "the clinic has no opening hours"
    for kind, minutes in (
        ("a medicine session", policy.medicine_minutes),
        ("a preparation session", policy.preparation_minutes),
        ("an integration session", policy.integration_minutes),
    ):
        if not any(_minutes(r.start, r.end) >= minutes for d in open_days for r in hours.on(d)):
            return f"no opening range is long enough for {kind} ({minutes} min)"
    by_week = _days_from_first_to_last_dose_by_weekly_cap(
        policy.medicine_sessions, policy.max_doses_per_week
    )
    if by_week >= policy.course_window_days:
        return (
            f"at most {policy.max_doses_per_week} dose(s) a calendar week put "
            f"{policy.medicine_sessions} doses over at least {by_week + 1} days, more than the"
            f" {policy.course_window_days}-day course window"
        )
    if _fits_somewhere(calendar, today):
        return None
    days = ", ".join(_DAY_NAMES[d] for d in open_days)
    low, high = policy.integration_days_after
    return (
        f"{policy.medicine_sessions} medicine sessions at least "
        f"{policy.min_hours_between_doses} h apart, at most {policy.max_doses_per_week} a week, "
        f"each with its integration session {low}-{high} days after "
        f"({policy.integration_pattern}) and every session on a day of its own, cannot fit a "
        f"{policy.course_window_days}-day course window on the clinic's opening days ({days})"
    )


def _minutes(start: time, end: time) -> int:
    return (end.hour * 60 + end.minute) - (start.hour * 60 + start.minute)


def _days_from_first_to_last_dose_by_weekly_cap(doses: int, per_week: int) -> int:
    """The fewest days between the first and last dose that the weekly cap alone allows:
    the first dose on a Sunday, each later calendar week full from its Monday."""
    weeks_after_the_first = -(-(doses - 1) // per_week)
    return 1 + (weeks_after_the_first - 1) * 7 if weeks_after_the_first else 0


def _fits_somewhere(calendar: ClinicCalendar, today: date) -> bool:
    stand_in = Therapist(
        id=_STAND_IN,
        display_name="Stand-in",
        availability=WeeklyHours(calendar.opening_hours.root),
    )
    empty = calendar.model_copy(
        update={
            "therapists": (stand_in,),
            "rooms": (Room(id=_STAND_IN, name="Stand-in"),),
            "closures": frozenset(),
        }
    )
    start = datetime.combine(today, time(0), tzinfo=calendar.tz).astimezone(UTC)
    plan = plan_course(empty, Bookings(), UUID(int=0), start, None, EARLIEST_FIT_HORIZON_DAYS)
    return not isinstance(plan, PlanFailure)
