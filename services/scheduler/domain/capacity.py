"""Quick necessary tests before walking a whole course: are there days enough?

Planning tries many first-dose days for many therapists; most tries fail. Counting the days
on which a pool of therapists has any time at all, and the days a dose could take, rules
most of them out without placing a single session. Each day is looked at once per pool.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import date, timedelta

from services.scheduler.domain.calendar import week_of
from services.scheduler.domain.seats import Seats


class PoolDays:
    """Per day from `first`: whether someone in the pool has time, and whether a dose fits."""

    def __init__(self, seats: Seats, pool: Sequence[str], first: date) -> None:
        self._seats = seats
        self._pool = tuple(pool)
        self._first = first
        self._usable_before = [0]  # [k]: how many of the first k days have time
        self._dose_fits: dict[int, bool] = {}  # by offset from `first`

    def course_may_fit(self, first_dose_day: date, sessions_after: int) -> bool:
        """Whether a course whose first dose is that day could fit its window at all."""
        policy = self._seats.policy
        start = (first_dose_day - self._first).days + 1
        end = start + policy.course_window_days - 1  # the window's days after the first dose
        self._look_up_to(end)
        if self._usable_before[end] - self._usable_before[start] < sessions_after:
            return False
        return self._doses_fit(first_dose_day, start, end)

    def _doses_fit(self, first_dose_day: date, start: int, end: int) -> bool:
        """Taking each dose on the earliest day the spacing and weekly cap allow fits the
        most doses in; integrations need a day of their own between doses."""
        policy = self._seats.policy
        per_week = Counter({week_of(first_dose_day): 1})
        doses, last = 1, first_dose_day
        # Whole days the minimum gap always spans, even across a 25-hour DST day.
        gap_days = max(policy.min_hours_between_doses - 1, 0) // 24
        for offset in range(start, end):
            day = self._first + timedelta(days=offset)
            spacing = max(gap_days, 2 if policy.integration_follows(doses) else 1)
            if (day - last).days < spacing or per_week[week_of(day)] >= policy.max_doses_per_week:
                continue
            if not self._dose_fits_on(offset):
                continue
            doses, last = doses + 1, day
            per_week[week_of(day)] += 1
            if doses >= policy.medicine_sessions:
                return True
        return doses >= policy.medicine_sessions

    def _look_up_to(self, end: int) -> None:
        seats = self._seats
        while len(self._usable_before) <= end:
            offset = len(self._usable_before) - 1
            day = self._first + timedelta(days=offset)
            usable = any(seats.has_time(therapist, day) for therapist in self._pool)
            self._usable_before.append(self._usable_before[-1] + usable)

    def _dose_fits_on(self, offset: int) -> bool:
        fits = self._dose_fits.get(offset)
        if fits is None:
            usable = self._usable_before[offset + 1] > self._usable_before[offset]
            day = self._first + timedelta(days=offset)
            fits = usable and any(self._seats.can_dose(t, day) for t in self._pool)
            self._dose_fits[offset] = fits
        return fits
