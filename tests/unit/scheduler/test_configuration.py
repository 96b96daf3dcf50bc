from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest
from pydantic import ValidationError

from services.scheduler.domain.clinic import ClinicCalendar, CoursePolicy, Interval, WeeklyHours
from shared.events import AppointmentKind, BoosterPlan
from tests.unit.scheduler.builders import clinic, hours, therapist


def test_policy_defaults_are_the_protocols() -> None:
    policy = CoursePolicy()

    assert policy.consultation_minutes == 30
    assert (policy.preparation_sessions, policy.preparation_minutes) == (1, 60)
    assert (policy.medicine_sessions, policy.medicine_minutes) == (6, 180)
    assert policy.min_hours_between_doses == 48
    assert policy.max_doses_per_week == 2
    assert policy.course_window_days == 21
    assert policy.integration_minutes == 60
    assert policy.integration_days_after == (1, 3)
    assert policy.integration_pattern == "after_every_dose"
    assert policy.cancellation_window_hours == 48
    assert policy.slot_step_minutes == 15
    assert policy.booster == BoosterPlan(interval_days=14, count=4, then_monthly=True)
    assert policy.booster_due_local_time == time(9, 0)


def test_course_window_of_43_days_is_rejected() -> None:
    with pytest.raises(ValidationError, match="course_window_days"):
        CoursePolicy(course_window_days=43)


def test_course_window_of_42_days_is_accepted() -> None:
    assert CoursePolicy(course_window_days=42).course_window_days == 42


def test_course_window_of_zero_days_is_rejected() -> None:
    with pytest.raises(ValidationError):
        CoursePolicy(course_window_days=0)


def test_window_too_short_for_the_doses_at_minimum_spacing_is_rejected() -> None:
    with pytest.raises(ValidationError, match="cannot fit the course window"):
        CoursePolicy(course_window_days=10, medicine_sessions=6, min_hours_between_doses=48)


@pytest.mark.parametrize("days", [(0, 3), (3, 1), (1, 15)])
def test_integration_days_must_be_ordered_and_after_the_dose_day(days: tuple[int, int]) -> None:
    with pytest.raises(ValidationError, match="integration days"):
        CoursePolicy(integration_days_after=days)


def test_slot_step_must_divide_an_hour() -> None:
    with pytest.raises(ValidationError, match="divide 60"):
        CoursePolicy(slot_step_minutes=25)


def test_integration_pattern_after_doses_one_two_then_every_second() -> None:
    policy = CoursePolicy(integration_pattern="after_doses_1_2_then_every_second")

    followed = [dose for dose in range(1, 7) if policy.integration_follows(dose)]

    assert followed == [1, 2, 4, 6]


def test_minutes_of_each_course_kind() -> None:
    policy = CoursePolicy()

    assert policy.minutes_of(AppointmentKind.MEDICINE) == 180
    assert policy.minutes_of(AppointmentKind.CONSULTATION) == 30
    with pytest.raises(ValueError, match="booster"):
        policy.minutes_of(AppointmentKind.BOOSTER)


def test_calendar_loads_from_json_with_string_weekday_keys() -> None:
    document = json.dumps(
        {
            "clinic_id": "lisbon",
            "timezone": "Europe/Lisbon",
            "opening_hours": {
                "0": [{"start": "13:00", "end": "17:00"}, {"start": "09:00", "end": "12:00"}]
            },
            "therapists": [therapist("ana", (0,))],
            "rooms": [{"id": "recliner-1", "name": "Recliner 1"}],
            "closures": ["2026-12-25"],
            "policy": {"course_window_days": 28},
        }
    )

    calendar = ClinicCalendar.model_validate_json(document)

    assert [r.start for r in calendar.opening_hours.on(0)] == [time(9), time(13)]
    assert calendar.opening_hours.on(6) == ()
    assert calendar.closures == frozenset({date(2026, 12, 25)})
    assert calendar.policy.course_window_days == 28
    assert str(calendar.tz) == "Europe/Lisbon"


def test_calendar_round_trips_through_json() -> None:
    calendar = clinic(closures=("2026-06-10",))

    again = ClinicCalendar.model_validate_json(calendar.model_dump_json())

    assert again == calendar


def test_unknown_time_zone_is_rejected() -> None:
    with pytest.raises(ValidationError, match="unknown IANA time zone"):
        clinic(timezone="Europe/Atlantis")


def test_overlapping_opening_ranges_are_rejected() -> None:
    with pytest.raises(ValidationError, match="overlap"):
        WeeklyHours.model_validate(
            {"1": [{"start": "09:00", "end": "13:00"}, {"start": "12:00", "end": "18:00"}]}
        )


def test_a_range_cannot_cross_midnight() -> None:
    with pytest.raises(ValidationError, match="cross midnight"):
        WeeklyHours.model_validate({"4": [{"start": "22:00", "end": "02:00"}]})


def test_weekday_out_of_range_is_rejected() -> None:
    with pytest.raises(ValidationError):
        WeeklyHours.model_validate(hours((7,)))


def test_duplicate_therapist_ids_are_rejected() -> None:
    with pytest.raises(ValidationError, match="therapist ids must be unique"):
        clinic(therapists=[therapist("ana"), therapist("ana")])


def test_unknown_configuration_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="extra"):
        CoursePolicy.model_validate({"course_window_dayz": 28})


def test_interval_is_stored_in_utc_and_must_be_ordered() -> None:
    lisbon_summer = timezone(timedelta(hours=1))
    interval = Interval(
        starts_at=datetime(2026, 7, 1, 10, tzinfo=lisbon_summer),
        ends_at=datetime(2026, 7, 1, 11, tzinfo=lisbon_summer),
    )

    assert interval.starts_at == datetime(2026, 7, 1, 9, tzinfo=UTC)
    assert interval.starts_at.tzinfo is UTC
    with pytest.raises(ValidationError, match="before ends_at"):
        Interval(starts_at=interval.ends_at, ends_at=interval.starts_at)


def test_naive_instants_are_rejected() -> None:
    with pytest.raises(ValidationError):
        Interval(starts_at=datetime(2026, 7, 1, 10), ends_at=datetime(2026, 7, 1, 11))
