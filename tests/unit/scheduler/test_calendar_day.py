"""A clinic's day calendar, the pure part (domain.day): a clinic-local date's UTC range
across DST changes, and what a session on it is flagged with."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.scheduler.domain import medicine
from services.scheduler.domain.day import Flag, day_range, find, flags
from services.scheduler.domain.schedule import ClientSchedule
from shared import events as ev
from tests.builders.scheduler import PASSING_CHECKIN
from tests.unit.scheduler.builders import clinic
from tests.unit.scheduler.test_booster_lifecycle import booked

LISBON = ZoneInfo("Europe/Lisbon")


def utc(year: int, month: int, day: int, hour: int) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def test_the_day_lisbon_springs_forward_lasts_23_hours() -> None:
    start, end = day_range(date(2027, 3, 28), LISBON)
    assert (start, end) == (utc(2027, 3, 28, 0), utc(2027, 3, 28, 23))
    # 23:30 that evening (summer time) is in it; 00:30 the next morning is not.
    late = datetime(2027, 3, 28, 23, 30, tzinfo=LISBON)
    next_morning = datetime(2027, 3, 29, 0, 30, tzinfo=LISBON)
    assert start <= late < end
    assert not start <= next_morning < end
    # 00:30 before the change (winter time) is in it; 00:30 the day before is not.
    assert start <= datetime(2027, 3, 28, 0, 30, tzinfo=LISBON) < end
    assert not start <= datetime(2027, 3, 27, 23, 30, tzinfo=LISBON) < end


def test_the_day_lisbon_falls_back_lasts_25_hours() -> None:
    start, end = day_range(date(2027, 10, 31), LISBON)
    assert (start, end) == (utc(2027, 10, 30, 23), utc(2027, 11, 1, 0))
    # Both readings of 01:30 are that day.
    first = datetime(2027, 10, 31, 1, 30, tzinfo=LISBON)
    second = first.replace(fold=1)
    assert first.astimezone(UTC) != second.astimezone(UTC)
    assert start <= first < end
    assert start <= second < end
    assert not start <= datetime(2027, 11, 1, 0, 30, tzinfo=LISBON) < end


def test_an_ordinary_day_is_24_hours_from_local_midnight() -> None:
    assert day_range(date(2027, 3, 29), LISBON) == (utc(2027, 3, 28, 23), utc(2027, 3, 29, 23))
    new_york = ZoneInfo("America/New_York")
    assert day_range(date(2027, 1, 5), new_york) == (utc(2027, 1, 5, 5), utc(2027, 1, 6, 5))


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        ("Europe/Lisbon", date(2027, 3, 28), 23),
        ("Europe/Lisbon", date(2027, 10, 31), 25),
        ("Europe/Lisbon", date(2027, 6, 15), 24),
        ("America/New_York", date(2027, 3, 14), 23),
        ("America/New_York", date(2027, 11, 7), 25),
        ("America/Santiago", date(2022, 9, 11), 23),  # the clocks skip midnight itself
        ("America/Santiago", date(2022, 4, 2), 25),  # midnight comes back to 23:00
        ("Australia/Lord_Howe", date(2027, 4, 4), 24.5),  # a half-hour change
        ("Pacific/Apia", date(2011, 12, 30), 0),  # a date the zone skipped altogether
    ],
)
def test_the_range_holds_exactly_the_instants_whose_wall_clock_reads_the_date(
    zone: str, day: date, hours: float
) -> None:
    tz = ZoneInfo(zone)
    start, end = day_range(day, tz)
    assert end - start == timedelta(hours=hours)
    at = start - timedelta(hours=3)
    while at < end + timedelta(hours=3):
        inside = start <= at < end
        assert inside == (at.astimezone(tz).date() == day), at
        at += timedelta(minutes=15)


# --- a session's flags ----------------------------------------------------------------


def course_schedule() -> tuple[ClientSchedule, ev.Appointment]:
    schedule = booked(clinic())
    assert schedule.course is not None
    dose = next(
        a for a in schedule.course.plan.appointments if a.kind == ev.AppointmentKind.MEDICINE
    )
    return schedule, dose


def checked_in(schedule: ClientSchedule, dose: ev.Appointment, **answers: bool) -> ClientSchedule:
    given = PASSING_CHECKIN.model_copy(update=answers)
    updated, _ = medicine.check_in(schedule, dose.appointment_id, given, clinic(), dose.starts_at)
    return updated


def flags_of(schedule: ClientSchedule, appointment_id: uuid.UUID, now: datetime) -> list[Flag]:
    found = find(schedule, appointment_id)
    assert found is not None
    return flags(found, [], now)


def test_a_dose_not_yet_checked_in_has_no_ride_home_confirmed() -> None:
    schedule, dose = course_schedule()
    well_before = dose.starts_at - timedelta(days=30)  # its pre-dose measure not open yet
    assert flags_of(schedule, dose.appointment_id, well_before) == [Flag.RIDE_HOME_UNCONFIRMED]


def test_a_check_in_refused_for_want_of_a_ride_is_flagged_twice_a_passed_one_not_at_all() -> None:
    schedule, dose = course_schedule()
    before = dose.starts_at - timedelta(days=30)
    no_ride = checked_in(schedule, dose, ride_home_confirmed=False)
    assert flags_of(no_ride, dose.appointment_id, before) == [
        Flag.CHECK_IN_REFUSED,
        Flag.RIDE_HOME_UNCONFIRMED,
    ]
    not_fasting = checked_in(schedule, dose, fasting_confirmed=False)
    assert flags_of(not_fasting, dose.appointment_id, before) == [Flag.CHECK_IN_REFUSED]
    passed = checked_in(schedule, dose)
    assert flags_of(passed, dose.appointment_id, before) == []


def test_sessions_other_than_doses_and_the_consultation_carry_no_flags() -> None:
    schedule, _ = course_schedule()
    assert schedule.course is not None
    others = [a for a in schedule.course.plan.appointments if a.kind != ev.AppointmentKind.MEDICINE]
    assert others
    for appointment in others:
        assert flags_of(schedule, appointment.appointment_id, appointment.starts_at) == []
    consultation = ev.Appointment(
        appointment_id=uuid.uuid4(),
        kind=ev.AppointmentKind.CONSULTATION,
        starts_at=utc(2027, 1, 5, 9),
        ends_at=utc(2027, 1, 5, 10),
        therapist_id="t-ana",
    )
    with_consultation = schedule.model_copy(update={"consultation": consultation})
    found = find(with_consultation, consultation.appointment_id)
    assert found is not None
    assert found.course is None
    assert found.status == ev.AppointmentStatus.BOOKED
    assert flags(found, [], utc(2027, 1, 5, 9)) == []


def test_an_appointment_the_schedule_does_not_hold_is_not_found() -> None:
    schedule, _ = course_schedule()
    assert find(schedule, uuid.uuid4()) is None
