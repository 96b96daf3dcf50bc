from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from services.scheduler.domain.boosters import (
    BoosterDueAt,
    add_months,
    booster_due_instants,
    next_booster_due,
)
from shared.events import BoosterPlan

LISBON = ZoneInfo("Europe/Lisbon")
NEW_YORK = ZoneInfo("America/New_York")


def local_dates(instants: tuple[datetime, ...], tz: ZoneInfo) -> list[date]:
    return [instant.astimezone(tz).date() for instant in instants]


def test_boosters_fall_every_14_days_then_monthly_at_nine_local() -> None:
    completed = datetime(2026, 3, 2, 15, tzinfo=UTC)

    due = booster_due_instants(completed, BoosterPlan(), LISBON, count_limit=6)

    assert local_dates(due, LISBON) == [
        date(2026, 3, 16),
        date(2026, 3, 30),
        date(2026, 4, 13),
        date(2026, 4, 27),
        date(2026, 5, 27),
        date(2026, 6, 27),
    ]
    assert {instant.astimezone(LISBON).time() for instant in due} == {time(9)}


def test_nine_local_maps_to_different_utc_hours_either_side_of_a_dst_change() -> None:
    spring = booster_due_instants(
        datetime(2026, 3, 2, 15, tzinfo=UTC), BoosterPlan(), LISBON, count_limit=2
    )
    autumn = booster_due_instants(
        datetime(2026, 10, 5, 15, tzinfo=UTC), BoosterPlan(), NEW_YORK, count_limit=2
    )

    assert spring == (datetime(2026, 3, 16, 9, tzinfo=UTC), datetime(2026, 3, 30, 8, tzinfo=UTC))
    assert autumn == (datetime(2026, 10, 19, 13, tzinfo=UTC), datetime(2026, 11, 2, 14, tzinfo=UTC))


def test_monthly_boosters_clamp_to_month_end_without_drifting() -> None:
    plan = BoosterPlan(interval_days=14, count=2)
    completed = datetime(2026, 1, 3, 12, tzinfo=UTC)  # boosters 17 and 31 January

    due = booster_due_instants(completed, plan, LISBON, count_limit=6)

    assert local_dates(due, LISBON) == [
        date(2026, 1, 17),
        date(2026, 1, 31),
        date(2026, 2, 28),
        date(2026, 3, 31),
        date(2026, 4, 30),
        date(2026, 5, 31),
    ]


def test_add_months_keeps_the_29th_of_february_in_a_leap_year() -> None:
    assert add_months(date(2028, 1, 31), 1) == date(2028, 2, 29)
    assert add_months(date(2027, 11, 30), 3) == date(2028, 2, 29)
    assert add_months(date(2026, 12, 15), 1) == date(2027, 1, 15)


def test_a_plan_without_monthly_boosters_ends_after_its_count() -> None:
    plan = BoosterPlan(interval_days=7, count=3, then_monthly=False)

    due = booster_due_instants(datetime(2026, 6, 1, tzinfo=UTC), plan, LISBON, count_limit=10)

    assert local_dates(due, LISBON) == [date(2026, 6, 8), date(2026, 6, 15), date(2026, 6, 22)]


def test_a_plan_of_only_monthly_boosters_starts_a_month_after_the_course() -> None:
    plan = BoosterPlan(count=0, then_monthly=True)

    due = booster_due_instants(datetime(2026, 8, 31, 10, tzinfo=UTC), plan, LISBON, count_limit=2)

    assert local_dates(due, LISBON) == [date(2026, 9, 30), date(2026, 10, 31)]


def test_a_plan_of_no_boosters_has_none_due() -> None:
    plan = BoosterPlan(count=0, then_monthly=False)

    assert booster_due_instants(datetime(2026, 8, 31, tzinfo=UTC), plan, LISBON, 5) == ()


def test_the_course_completion_date_is_the_clinic_local_one() -> None:
    just_after_local_midnight = datetime(2026, 6, 30, 23, 30, tzinfo=UTC)  # 1 July in Lisbon

    (first,) = booster_due_instants(just_after_local_midnight, BoosterPlan(), LISBON, 1)

    assert first.astimezone(LISBON).date() == date(2026, 7, 15)


def test_booster_time_of_day_follows_the_clinic_policy() -> None:
    (first,) = booster_due_instants(
        datetime(2026, 6, 1, tzinfo=UTC), BoosterPlan(), LISBON, 1, due_local_time=time(14, 30)
    )

    assert first == datetime(2026, 6, 15, 13, 30, tzinfo=UTC)


def test_next_booster_due_after_an_instant_is_numbered_from_the_first() -> None:
    completed = datetime(2026, 3, 2, 15, tzinfo=UTC)

    upcoming = next_booster_due(
        completed, BoosterPlan(), LISBON, after=datetime(2026, 4, 1, tzinfo=UTC)
    )
    years_later = next_booster_due(
        completed, BoosterPlan(), LISBON, after=datetime(2030, 1, 1, tzinfo=UTC)
    )

    assert upcoming == BoosterDueAt(3, datetime(2026, 4, 13, 8, tzinfo=UTC))
    assert years_later is not None
    assert years_later.due_at.astimezone(LISBON).date() == date(2030, 1, 27)


def test_no_booster_is_due_after_a_finite_plan_has_ended() -> None:
    plan = BoosterPlan(interval_days=14, count=2, then_monthly=False)
    completed = datetime(2026, 3, 2, 15, tzinfo=UTC)

    assert next_booster_due(completed, plan, LISBON, after=datetime(2026, 4, 1, tzinfo=UTC)) is None
