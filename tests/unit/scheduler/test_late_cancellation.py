from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.scheduler.domain.clinic import CoursePolicy
from services.scheduler.domain.planner import is_late_cancellation

START = datetime(2026, 5, 14, 9, tzinfo=UTC)


def test_cancelling_exactly_48_hours_ahead_is_not_late() -> None:
    assert not is_late_cancellation(START, START - timedelta(hours=48), CoursePolicy())


def test_cancelling_a_minute_inside_the_window_is_late() -> None:
    assert is_late_cancellation(START, START - timedelta(hours=47, minutes=59), CoursePolicy())


def test_cancelling_after_the_start_is_late() -> None:
    assert is_late_cancellation(START, START + timedelta(minutes=5), CoursePolicy())


def test_the_window_is_the_clinics_policy() -> None:
    policy = CoursePolicy(cancellation_window_hours=24)

    assert not is_late_cancellation(START, START - timedelta(hours=30), policy)
    assert is_late_cancellation(START, START - timedelta(hours=23), policy)
