from __future__ import annotations

from datetime import date
from uuid import uuid4

from services.scheduler.domain.clinic import ClinicCalendar, WeeklyHours
from services.scheduler.domain.feasibility import why_no_course_fits
from services.scheduler.domain.planner import plan_course
from services.scheduler.domain.plans import CoursePlan
from tests.unit.scheduler.builders import EVERY_DAY, bookings, clinic, hours, local
from tests.unit.scheduler.rules import assert_follows_the_protocol

TODAY = date(2026, 3, 2)
# Europe/Lisbon moves its clocks forward on Sunday 29 March 2026 and back on 25 October.
CLOCKS_FORWARD_WEEK = date(2026, 3, 23)
CLOCKS_BACK_WEEK = date(2026, 10, 19)
MON, TUE, WED, THU = 0, 1, 2, 3


def test_the_protocols_defaults_on_weekdays_fit() -> None:
    assert why_no_course_fits(clinic(), TODAY) is None


def test_one_dose_a_week_cannot_hold_six_doses_in_21_days() -> None:
    reason = why_no_course_fits(clinic(policy={"max_doses_per_week": 1}), TODAY)
    assert reason is not None
    assert "at most 1 dose(s) a calendar week" in reason
    assert "30 days" in reason
    assert "21-day course window" in reason


def test_one_dose_a_week_fits_six_doses_in_42_days() -> None:
    policy = {"max_doses_per_week": 1, "course_window_days": 42}
    assert why_no_course_fits(clinic(policy=policy), TODAY) is None


def test_a_clinic_open_two_days_a_week_cannot_fit_a_course_in_21_days() -> None:
    reason = why_no_course_fits(clinic(open_days=(MON, THU)), TODAY)
    assert reason is not None
    assert "opening days (Mon, Thu)" in reason
    assert "48 h apart" in reason


def test_a_clinic_open_two_days_a_week_with_48_h_spacing_still_fits_a_longer_window() -> None:
    policy = {"max_doses_per_week": 1, "course_window_days": 42}
    calendar = clinic(open_days=(MON, THU), policy=policy)
    assert why_no_course_fits(calendar, TODAY) is None
    # And the planner agrees: a real course is found for a real therapist.
    plan = plan_course(calendar, bookings(), uuid4(), local(calendar, "2026-03-02"))
    assert isinstance(plan, CoursePlan)
    assert_follows_the_protocol(calendar, plan)


def test_a_clinic_open_two_consecutive_days_a_week_with_every_other_integration_fits() -> None:
    # Dose Mon, integration Tue, dose Mon... only with integrations after some doses.
    policy = {"max_doses_per_week": 1, "course_window_days": 42, "medicine_sessions": 4}
    assert why_no_course_fits(clinic(open_days=(MON, TUE), policy=policy), TODAY) is None


def test_opening_hours_too_short_for_a_medicine_session_are_named() -> None:
    calendar = _with_hours(clinic(), (MON, TUE, WED, THU, 4), "11:00")
    reason = why_no_course_fits(calendar, TODAY)
    assert reason == "no opening range is long enough for a medicine session (180 min)"


def test_a_clinic_with_no_opening_hours_is_named() -> None:
    calendar = clinic(open_days=())
    assert why_no_course_fits(calendar, TODAY) == "the clinic has no opening hours"


def test_a_tight_day_still_fits_when_checked_in_the_week_the_clocks_go_forward() -> None:
    # 09:00-12:00 holds a 180-minute dose only at 09:00; from Saturday 09:00 to Monday
    # 09:00 across the change is 47 real hours, so that week cannot take doses 48 h apart
    # on Saturday and Monday. Other weeks can: the calendar is accepted.
    calendar = _tight_every_day()
    assert why_no_course_fits(calendar, CLOCKS_FORWARD_WEEK) is None
    assert why_no_course_fits(calendar, CLOCKS_BACK_WEEK) is None


def test_spacing_that_only_the_hours_of_a_dst_week_could_meet_is_judged_in_real_hours() -> None:
    # 49 h apart from 09:00 each day: never two days later at 09:00 except across the
    # autumn change (a 25-hour day). A dose every third day still fits six in 21 days,
    # so the calendar is accepted, and the planner's course keeps 49 real hours.
    calendar = _tight_every_day(min_hours_between_doses=49)
    assert why_no_course_fits(calendar, CLOCKS_BACK_WEEK) is None
    plan = plan_course(calendar, bookings(), uuid4(), local(calendar, "2026-03-23"))
    assert isinstance(plan, CoursePlan)
    assert_follows_the_protocol(calendar, plan)


def _tight_every_day(**policy: int) -> ClinicCalendar:
    return _with_hours(clinic(open_days=EVERY_DAY, policy=dict(policy)), EVERY_DAY, "12:00")


def _with_hours(calendar: ClinicCalendar, days: tuple[int, ...], end: str) -> ClinicCalendar:
    """The clinic and its therapists open 09:00 to `end` on `days`."""
    weekly = WeeklyHours.model_validate(hours(days, "09:00", end))
    therapists = tuple(t.model_copy(update={"availability": weekly}) for t in calendar.therapists)
    return calendar.model_copy(update={"opening_hours": weekly, "therapists": therapists})
