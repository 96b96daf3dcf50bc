from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from services.scheduler.domain.calendar import FreeTime
from services.scheduler.domain.clinic import TimeRange
from services.scheduler.domain.spans import (
    earliest_fit,
    intersect,
    latest_fit,
    merge,
    subtract,
)
from tests.unit.scheduler.builders import bookings, clinic

HOUR = 3600


def utc(year: int, month: int, day: int, hour: int, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp())


def spans_on(timezone: str, day: str, start: str, end: str) -> tuple[tuple[int, int], ...]:
    free = FreeTime(clinic(timezone=timezone), bookings())
    ranges = [TimeRange(start=time.fromisoformat(start), end=time.fromisoformat(end))]
    return free.local_spans(date.fromisoformat(day), ranges)


def test_local_range_on_an_ordinary_day_lasts_its_wall_clock_length() -> None:
    assert spans_on("America/New_York", "2026-03-10", "09:00", "17:00") == (
        (utc(2026, 3, 10, 13), utc(2026, 3, 10, 21)),
    )


def test_local_range_across_the_spring_forward_gap_is_an_hour_shorter() -> None:
    assert spans_on("America/New_York", "2026-03-08", "00:00", "04:00") == (
        (utc(2026, 3, 8, 5), utc(2026, 3, 8, 8)),
    )


def test_local_range_across_the_fall_back_hour_is_an_hour_longer() -> None:
    assert spans_on("America/New_York", "2026-11-01", "00:00", "04:00") == (
        (utc(2026, 11, 1, 4), utc(2026, 11, 1, 9)),
    )


def test_wall_time_skipped_by_the_gap_only_ever_shrinks_the_range() -> None:
    ((start, end),) = spans_on("America/New_York", "2026-03-08", "01:00", "02:30")

    assert start == utc(2026, 3, 8, 6)  # 01:00 EST
    assert utc(2026, 3, 8, 6) < end <= utc(2026, 3, 8, 7)  # never past 02:00 EST = 03:00 EDT


def test_repeated_wall_time_starts_at_its_second_occurrence() -> None:
    ((start, end),) = spans_on("America/New_York", "2026-11-01", "01:30", "03:00")

    assert start == utc(2026, 11, 1, 6, 30)  # 01:30 EST, not 01:30 EDT
    assert end == utc(2026, 11, 1, 8)


@pytest.mark.parametrize(
    ("timezone", "day", "hours"),
    [
        ("Europe/Lisbon", "2026-03-29", 23),
        ("Europe/Lisbon", "2026-10-25", 25),
        ("Europe/Lisbon", "2026-06-01", 24),
    ],
)
def test_a_local_day_lasts_23_24_or_25_real_hours(timezone: str, day: str, hours: int) -> None:
    free = FreeTime(clinic(timezone=timezone), bookings())

    start, end = free.frame(date.fromisoformat(day))

    assert end - start == hours * HOUR


def test_spans_merge_intersect_and_subtract() -> None:
    assert merge([(5, 8), (1, 3), (2, 4), (8, 9)]) == ((1, 4), (5, 9))
    assert intersect(((0, 10), (20, 30)), ((5, 25),)) == ((5, 10), (20, 25))
    assert subtract(((0, 30),), ((5, 10), (8, 12), (20, 40))) == ((0, 5), (12, 20))
    assert subtract(((0, 10),), ()) == ((0, 10),)


def test_fits_land_on_the_grid_from_the_origin() -> None:
    free = ((7, 100),)

    assert earliest_fit(free, 0, 30, origin=0, step=15) == 15
    assert earliest_fit(free, 50, 30, origin=0, step=15) == 60
    assert earliest_fit(free, 80, 30, origin=0, step=15) is None
    assert latest_fit(free, 0, 30, origin=0, step=15) == 60
    assert latest_fit(free, 61, 30, origin=0, step=15) is None
