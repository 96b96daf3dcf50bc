"""When boosters fall due: every `interval_days` for `count` boosters, then monthly.

Due dates are clinic-local calendar dates at a fixed local time of day, so 09:00 stays 09:00
on the wall across DST changes (and so maps to a different UTC hour on either side).
"""

from __future__ import annotations

from calendar import monthrange
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from itertools import islice
from typing import NamedTuple
from zoneinfo import ZoneInfo

from shared.events import BoosterPlan

DEFAULT_DUE_LOCAL_TIME = time(9, 0)


class BoosterDueAt(NamedTuple):
    number: int  # 1 for the first booster after the course
    due_at: datetime  # UTC


def iter_booster_due(
    course_completed_at: datetime,
    plan: BoosterPlan,
    tz: ZoneInfo,
    due_local_time: time = DEFAULT_DUE_LOCAL_TIME,
) -> Iterator[BoosterDueAt]:
    """Every booster in order; endless when the plan goes on monthly."""
    completed_on = course_completed_at.astimezone(tz).date()
    for k in range(1, plan.count + 1):
        day = completed_on + timedelta(days=k * plan.interval_days)
        yield BoosterDueAt(k, _at(day, due_local_time, tz))
    if not plan.then_monthly:
        return
    # Months count from one anchor, so a 31st stays the 31st after a short month.
    anchor = completed_on + timedelta(days=plan.count * plan.interval_days)
    months = 1
    while True:
        yield BoosterDueAt(plan.count + months, _at(add_months(anchor, months), due_local_time, tz))
        months += 1


def booster_due_instants(
    course_completed_at: datetime,
    plan: BoosterPlan,
    tz: ZoneInfo,
    count_limit: int,
    due_local_time: time = DEFAULT_DUE_LOCAL_TIME,
) -> tuple[datetime, ...]:
    """The first `count_limit` due instants (fewer if the plan ends sooner), in UTC."""
    due = iter_booster_due(course_completed_at, plan, tz, due_local_time)
    return tuple(booster.due_at for booster in islice(due, count_limit))


def next_booster_due(
    course_completed_at: datetime,
    plan: BoosterPlan,
    tz: ZoneInfo,
    after: datetime,
    due_local_time: time = DEFAULT_DUE_LOCAL_TIME,
) -> BoosterDueAt | None:
    """The first booster due strictly after `after`; None once the plan has ended."""
    for booster in iter_booster_due(course_completed_at, plan, tz, due_local_time):
        if booster.due_at > after:
            return booster
    return None


def add_months(day: date, months: int) -> date:
    """The same day of the month `months` later, or that month's last day if it is shorter."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, monthrange(year, month)[1]))


def _at(day: date, wall: time, tz: ZoneInfo) -> datetime:
    # A wall time skipped by a DST gap lands the gap's length later, as zoneinfo resolves it.
    return datetime.combine(day, wall, tzinfo=tz).astimezone(UTC)
