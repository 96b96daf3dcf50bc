"""Issue 16: a booster that falls due is booked (rule 19): where, with whom, and declined."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta

import pytest

from services.scheduler.domain import booster_booking, booster_lifecycle, endings, lifecycle
from services.scheduler.domain.booster_sessions import place_booster, with_held
from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.plans import Bookings, PlanFailure
from services.scheduler.domain.schedule import ClientSchedule, Refused
from shared import events as ev
from shared.events import AppointmentKind as Kind
from shared.events import AppointmentStatus as Status
from tests.builders.scheduler import checked_in
from tests.unit.scheduler.builders import booked_all_day, bookings, clinic, local, therapist, wall
from tests.unit.scheduler.test_booster_lifecycle import booked, hold_all

COURSE = uuid.uuid4()


def placed(
    calendar: ClinicCalendar,
    due: datetime,
    taken: Bookings | None = None,
    therapist_id: str | None = "ana",
) -> tuple[ev.Appointment, ...]:
    found = place_booster(calendar, taken or Bookings(), COURSE, 1, due, due, therapist_id)
    assert not isinstance(found, PlanFailure), found
    return found


def days_after(calendar: ClinicCalendar, due: datetime, appointment: ev.Appointment) -> int:
    return (wall(calendar, appointment.starts_at).date() - wall(calendar, due).date()).days


def test_a_booster_session_and_its_integration_fall_inside_the_window() -> None:
    calendar = clinic()
    due = local(calendar, "2027-07-05", "09:00")  # a Monday

    dose, talk = placed(calendar, due)

    assert dose.kind is Kind.BOOSTER
    assert dose.room_id == "room-1"
    assert dose.ends_at - dose.starts_at == timedelta(minutes=180)
    # 24 h notice from the moment it fell due: Tuesday at opening, not Monday.
    assert wall(calendar, dose.starts_at).isoformat().startswith("2027-07-06T09:00")
    assert 0 <= days_after(calendar, due, dose) <= 7
    assert talk.kind is Kind.INTEGRATION
    assert (wall(calendar, talk.starts_at).date() - wall(calendar, dose.starts_at).date()).days >= 1
    assert (wall(calendar, talk.starts_at).date() - wall(calendar, dose.starts_at).date()).days <= 3


def test_the_courses_therapist_is_kept_on_a_later_day_rather_than_another_sooner() -> None:
    calendar = clinic(therapists=[therapist("ana"), therapist("ben")])
    due = local(calendar, "2027-07-05", "09:00")
    taken = bookings(therapists={"ben": booked_all_day(calendar, "2027-07-06", 2)})

    dose, talk = placed(calendar, due, taken, therapist_id="ben")

    assert (dose.therapist_id, talk.therapist_id) == ("ben", "ben")
    assert wall(calendar, dose.starts_at).date() == date(2027, 7, 8)


def test_another_therapist_takes_the_booster_when_the_courses_has_no_time_in_the_window() -> None:
    calendar = clinic(therapists=[therapist("ana"), therapist("ben")])
    due = local(calendar, "2027-07-05", "09:00")
    taken = bookings(therapists={"ben": booked_all_day(calendar, "2027-07-05", 14)})

    dose, talk = placed(calendar, due, taken, therapist_id="ben")

    assert (dose.therapist_id, talk.therapist_id) == ("ana", "ana")
    assert wall(calendar, dose.starts_at).date() == date(2027, 7, 6)


def test_a_clinic_open_two_days_a_week_books_on_its_open_days() -> None:
    open_days = (1, 3)  # Tuesday, Thursday
    calendar = clinic(open_days=open_days, therapists=[therapist("ana", open_days)])
    due = local(calendar, "2027-07-09", "09:00")  # a Friday

    dose, talk = placed(calendar, due)

    assert wall(calendar, dose.starts_at).date() == date(2027, 7, 13)  # Tuesday
    assert wall(calendar, talk.starts_at).date() == date(2027, 7, 15)  # Thursday


def test_a_booster_across_the_dst_change_keeps_its_wall_time() -> None:
    calendar = clinic()
    due = local(calendar, "2027-03-26", "09:00")  # Friday; clocks go forward on Sunday 28

    dose, talk = placed(calendar, due)

    assert wall(calendar, dose.starts_at).isoformat() == "2027-03-29T09:00:00+01:00"
    assert dose.starts_at.hour == 8  # 09:00 WEST is 08:00 UTC, where Friday's was 09:00
    assert wall(calendar, talk.starts_at).isoformat() == "2027-03-30T09:00:00+01:00"


def test_the_client_and_the_batch_holds_are_respected() -> None:
    calendar = clinic()
    due = local(calendar, "2027-07-05", "09:00")
    first = placed(calendar, due)

    second = placed(calendar, due, with_held(Bookings(), first))

    assert second[0].starts_at >= first[0].ends_at  # one room: not at the same time


def test_nothing_in_the_window_is_a_failure_with_the_earliest_day() -> None:
    closed = tuple(str(date(2027, 7, 5) + timedelta(days=n)) for n in range(10))
    calendar = clinic(closures=closed)
    due = local(calendar, "2027-07-05", "09:00")

    failure = place_booster(calendar, Bookings(), COURSE, 1, due, due, "ana")

    assert isinstance(failure, PlanFailure)
    assert "2027-07-05" in failure.reason
    assert "2027-07-12" in failure.reason
    assert failure.earliest_fit_on == date(2027, 7, 15)


def completed(calendar: ClinicCalendar) -> tuple[ClientSchedule, datetime]:
    schedule = hold_all(calendar, booked(calendar))
    assert schedule.course is not None
    assert schedule.course.next_booster_due_at is not None
    return schedule, schedule.course.next_booster_due_at


def book_due(
    calendar: ClinicCalendar, schedule: ClientSchedule, number: int, due: datetime
) -> ClientSchedule:
    schedule, events = booster_lifecycle.booster_fired(schedule, number, calendar, due)
    assert any(isinstance(e, ev.BoosterDue) for e in events)
    assert schedule.course is not None
    found = place_booster(
        calendar, Bookings(), schedule.course.plan.course_id, number, due, due, "ana"
    )
    assert not isinstance(found, PlanFailure)
    schedule, events = booster_booking.booster_booked(schedule, number, due, found, due)
    assert [type(e) for e in events[:1]] == [ev.BoosterSessionBooked]
    return schedule


def test_a_declined_booster_releases_its_sessions_and_the_next_still_comes() -> None:
    calendar = clinic()
    schedule, due = completed(calendar)
    schedule = book_due(calendar, schedule, 1, due)
    assert schedule.course is not None
    dose, talk = schedule.course.booster_sessions[0].appointments

    declined, events, released = booster_booking.decline_booster(
        schedule, talk.appointment_id, "client", due
    )

    assert released == [dose, talk]
    assert isinstance(events[0], ev.BoosterDeclined)
    assert events[0].booster_number == 1
    assert declined.course is not None
    assert declined.course.status_of(dose.appointment_id) == Status.CANCELLED
    assert declined.course.next_booster == 2
    next_due = declined.course.next_booster_due_at
    assert next_due is not None
    with pytest.raises(Refused, match="already declined"):
        booster_booking.decline_booster(declined, dose.appointment_id, "staff", due)
    after = book_due(calendar, declined, 2, next_due)
    assert after.course is not None
    assert len(after.course.booster_sessions) == 2


def test_a_booster_session_has_the_medicine_sessions_check_in_and_record_rules() -> None:
    calendar = clinic()
    schedule, due = completed(calendar)
    schedule = book_due(calendar, schedule, 1, due)
    assert schedule.course is not None
    dose = schedule.course.booster_sessions[0].appointments[0]
    complete = {"ride_home_confirmed": True, "phq9_total": 4, "phq9_item9": 0}

    with pytest.raises(Refused, match="check-in"):
        lifecycle.complete_session(
            schedule, dose.appointment_id, calendar=calendar, now=dose.ends_at, **complete
        )
    schedule = checked_in(schedule, dose, calendar)
    held, _events = lifecycle.complete_session(
        schedule, dose.appointment_id, calendar=calendar, now=dose.ends_at, **complete
    )
    assert held.course is not None
    assert held.course.status_of(dose.appointment_id) == Status.FULFILLED


def test_an_ending_releases_booked_boosters_and_nothing_is_booked_after_it() -> None:
    calendar = clinic()
    schedule, due = completed(calendar)
    schedule = book_due(calendar, schedule, 1, due)
    assert schedule.course is not None
    sessions = schedule.course.booster_sessions[0].appointments

    ended, _, released = endings.end_course(schedule, ev.CourseEndCode.DISCHARGED, due)

    assert set(sessions) <= set(released)
    assert not booster_booking.may_book(ended.course)
    with pytest.raises(Refused):
        booster_booking.booster_booked(ended, 2, due, sessions, due)


def test_an_announced_booster_is_owed_its_booking_once_until_booked_failed_or_stopped() -> None:
    calendar = clinic()
    schedule, due = completed(calendar)
    schedule, _ = booster_lifecycle.booster_fired(schedule, 1, calendar, due)

    owed = booster_booking.owe_booking(booster_booking.owe_booking(schedule, 1, due), 1, due)

    assert owed.course is not None
    assert [(b.number, b.due_at) for b in owed.course.boosters_to_book] == [(1, due)]
    assert booster_booking.booking_owed(owed.course, 1) is not None
    assert booster_booking.booking_owed(owed.course, 2) is None
    found = place_booster(calendar, Bookings(), owed.course.plan.course_id, 1, due, due, "ana")
    assert not isinstance(found, PlanFailure)
    booked_now, _ = booster_booking.booster_booked(owed, 1, due, found, due)
    failure = PlanFailure(reason="no room")
    failed, _ = booster_booking.booster_booking_failed(owed, 1, due, failure, due)
    stopped, _ = booster_lifecycle.stop_boosters(owed, "stopped_by_care_team", due)
    for settled in (booked_now, failed, stopped):
        assert settled.course is not None
        assert settled.course.boosters_to_book == ()
    assert booked_now.course is not None
    # Booked already: owing it again is nothing.
    assert booster_booking.owe_booking(booked_now, 1, due) == booked_now
