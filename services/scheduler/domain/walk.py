"""Walking a course's steps in order, placing each at its earliest allowed day and time."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from services.scheduler.domain.calendar import week_of
from services.scheduler.domain.course import INTEGRATION, MEDICINE, Placed, Step
from services.scheduler.domain.seats import Seats


def earliest_course_end(seats: Seats, dose: Placed, doses_that_week: int) -> int:
    """No course can end sooner once `dose` is placed: the doses left need the minimum gap
    between them, and at most max_doses_per_week each calendar week."""
    policy = seats.policy
    left = policy.medicine_sessions - dose.step.number
    by_gap = dose.start + left * policy.min_hours_between_doses * 3600
    beyond_this_week = left - max(policy.max_doses_per_week - doses_that_week, 0)
    by_week = 0
    if beyond_this_week > 0:
        weeks = -(-beyond_this_week // policy.max_doses_per_week)
        by_week = seats.free.frame(week_of(dose.day) + timedelta(weeks=weeks))[0]
    return max(by_gap, by_week) + seats.length(dose.step)


Mode = Literal["search", "prefer", "pin", "history"]


@dataclass(frozen=True, slots=True)
class Want:
    """A step of the walk. `history` keeps `at` unchecked; `pin` keeps it only if the rules
    and resources allow; `prefer` keeps it if allowed, else searches; `search` searches."""

    step: Step
    mode: Mode = "search"
    at: Placed | None = None


class CourseWalk:
    """Places steps in order, each at its earliest allowed day and time (greedy).

    A dose whose integration cannot fit is tried on a later day (one step of look-ahead);
    nothing further back is revisited, which keeps the walk linear in the days searched.
    """

    def __init__(
        self,
        seats: Seats,
        *,
        not_before: int,
        pool: Sequence[str],
        last_day: date,
        window_end: date | None = None,
        fresh_from: int | None = None,
    ) -> None:
        self.seats = seats
        self.policy = seats.policy
        self.not_before = not_before
        self.pool = tuple(pool)
        self.last_day = last_day
        self.window_end = window_end
        # Where a step is newly placed (searched, not kept), not before this: the notice
        # a client is owed of a new time. A kept time was told already.
        self.fresh_from = fresh_from

    def walk(self, placed: Sequence[Placed], wants: Sequence[Want]) -> list[Placed] | None:
        done = list(placed)
        i = 0
        while i < len(wants):
            want = wants[i]
            follower = wants[i + 1] if i + 1 < len(wants) else None
            if want.step.kind is not MEDICINE or (
                follower is not None and follower.step.kind is not INTEGRATION
            ):
                follower = None
            for option in self._options(want, done):
                if follower is None:
                    done.append(option)
                    i += 1
                    break
                after = next(self._options(follower, [*done, option]), None)
                if after is not None:
                    done += [option, after]
                    i += 2
                    break
            else:
                return None
        return done

    def _options(self, want: Want, done: list[Placed]) -> Iterator[Placed]:
        if want.mode == "history" and want.at is not None:
            yield want.at
            return
        if want.at is not None and want.mode in ("pin", "prefer"):
            at = want.at
            if self._allowed(want, at.start, at.day, done):
                kept = self.seats.at(want.step, at.start, at.therapist_id, at.room_id)
                if kept is not None:
                    yield kept
            if want.mode == "pin":
                return
        yield from self._search(want, done)

    def _search(self, want: Want, done: list[Placed]) -> Iterator[Placed]:
        not_before, day, last = self._bounds(want, done)
        if self.fresh_from is not None and self.fresh_from > not_before:
            not_before = self.fresh_from
            day = max(day, self.seats.free.day_of(not_before))
        while day <= last:
            if want.step.kind is not MEDICINE or self._week_has_room(day, done):
                found = self.seats.earliest(want.step, day, not_before, self.pool)
                if found is not None:
                    yield found
            day += timedelta(days=1)

    def _allowed(self, want: Want, start: int, day: date, done: list[Placed]) -> bool:
        not_before, first, last = self._bounds(want, done)
        if start < not_before or not first <= day <= last:
            return False
        return want.step.kind is not MEDICINE or self._week_has_room(day, done)

    def _bounds(self, want: Want, done: list[Placed]) -> tuple[int, date, date]:
        """The earliest instant, and the first and last local day, the step may take."""
        not_before = self.not_before
        last = self.last_day
        if done:
            not_before = max(not_before, done[-1].end)
        first = self.seats.free.day_of(not_before)
        if done:
            first = max(first, done[-1].day + timedelta(days=1))
        doses = [p for p in done if p.step.kind is MEDICINE]
        window = self._window_end(doses)
        if want.step.kind is MEDICINE:
            if doses:
                gap = self.policy.min_hours_between_doses * 3600
                not_before = max(not_before, doses[-1].start + gap)
                first = max(first, self.seats.free.day_of(not_before))
            if window is not None:
                last = min(last, window)
        elif want.step.kind is INTEGRATION:
            if not doses:
                return not_before, first, first - timedelta(days=1)  # nothing to integrate
            earliest, latest = self.policy.integration_days_after
            first = max(first, doses[-1].day + timedelta(days=earliest))
            last = min(last, doses[-1].day + timedelta(days=latest))
            if window is not None:
                last = min(last, window)
        return not_before, first, last

    def _window_end(self, doses: list[Placed]) -> date | None:
        if self.window_end is not None:
            return self.window_end
        if not doses:
            return None  # the first dose opens the window
        return doses[0].day + timedelta(days=self.policy.course_window_days - 1)

    def _week_has_room(self, day: date, done: list[Placed]) -> bool:
        week = week_of(day)
        taken = sum(1 for p in done if p.step.kind is MEDICINE and week_of(p.day) == week)
        return taken < self.policy.max_doses_per_week


def therapist_pools(therapists: Sequence[str], preferred: str) -> list[list[str]]:
    """Who a course's sessions are walked with, in turn: its own therapist alone (same
    therapist for the whole course where possible, rule 5), then anyone, theirs first."""
    pools = [[preferred]] if preferred in therapists else []
    pools.append(sorted(therapists, key=lambda therapist: therapist != preferred))
    return pools
