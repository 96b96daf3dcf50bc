"""The course is planned inside the client's weekly availability and around their blocked
dates; when it cannot be, the failure says so and gives the earliest date (issue 16)."""

from __future__ import annotations

from datetime import date, time, timedelta
from uuid import UUID

from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.planner import plan_course
from services.scheduler.domain.plans import (
    ClientAvailability,
    CoursePlan,
    DropSession,
    PlanFailure,
    Replan,
)
from services.scheduler.domain.replan import replan_after_reschedule
from services.scheduler.domain.schedule import ClientSchedule
from shared.events import PreferredTime
from tests.unit.scheduler.builders import EVERY_DAY, bookings, clinic, local, therapist, wall
from tests.unit.scheduler.rules import assert_follows_the_protocol, doses

COURSE = UUID("6f1c2b9e-0000-4000-8000-0000000000cc")


def window(weekday: int, start: str, end: str) -> PreferredTime:
    return PreferredTime(
        weekday=weekday, start=time.fromisoformat(start), end=time.fromisoformat(end)
    )


MORNINGS = ClientAvailability(weekly=tuple(window(d, "09:00", "13:00") for d in range(5)))


def assert_inside(calendar: ClinicCalendar, plan: CoursePlan, who: ClientAvailability) -> None:
    for a in plan.appointments:
        start, end = wall(calendar, a.starts_at), wall(calendar, a.ends_at)
        assert start.date() not in who.blocked_dates
        if who.weekly:
            assert any(
                w.weekday == start.weekday() and w.start <= start.time() and end.time() <= w.end
                for w in who.weekly
            ), f"{a.kind} at {start} lies outside the client's windows"


def test_every_session_of_the_course_lies_inside_the_clients_mornings() -> None:
    calendar = clinic()
    plan = plan_course(
        calendar, bookings(), COURSE, local(calendar, "2026-03-16"), availability=MORNINGS
    )
    assert isinstance(plan, CoursePlan)
    assert_inside(calendar, plan, MORNINGS)
    assert_follows_the_protocol(calendar, plan)


def test_afternoons_only_move_every_session_to_the_afternoon() -> None:
    calendar = clinic()
    afternoons = ClientAvailability(weekly=tuple(window(d, "13:30", "17:00") for d in range(5)))
    plan = plan_course(
        calendar, bookings(), COURSE, local(calendar, "2026-03-16"), availability=afternoons
    )
    assert isinstance(plan, CoursePlan)
    assert all(wall(calendar, a.starts_at).hour >= 13 for a in plan.appointments)
    assert_inside(calendar, plan, afternoons)


def test_blocked_dates_are_never_booked() -> None:
    calendar = clinic()
    free = plan_course(calendar, bookings(), COURSE, local(calendar, "2026-03-16"))
    assert isinstance(free, CoursePlan)
    taken = {wall(calendar, a.starts_at).date() for a in free.appointments[:4]}
    away = ClientAvailability(blocked_dates=frozenset(taken))
    plan = plan_course(
        calendar, bookings(), COURSE, local(calendar, "2026-03-16"), availability=away
    )
    assert isinstance(plan, CoursePlan)
    assert_inside(calendar, plan, away)
    assert_follows_the_protocol(calendar, plan)


def test_windows_too_short_for_a_dose_fail_saying_so_with_no_date() -> None:
    calendar = clinic()
    two_hours = ClientAvailability(
        weekly=(window(1, "09:00", "11:00"), window(3, "09:00", "11:00"))
    )
    failure = plan_course(
        calendar, bookings(), COURSE, local(calendar, "2026-03-16"), availability=two_hours
    )
    assert isinstance(failure, PlanFailure)
    assert "the client's availability" in failure.reason
    assert failure.earliest_fit_on is None


def test_a_client_away_for_months_gets_the_earliest_date_a_course_fits() -> None:
    calendar = clinic()
    start = date(2026, 3, 16)
    away = ClientAvailability(
        weekly=MORNINGS.weekly,
        blocked_dates=frozenset(start + timedelta(days=n) for n in range(130)),
    )
    failure = plan_course(
        calendar, bookings(), COURSE, local(calendar, "2026-03-16"), availability=away
    )
    assert isinstance(failure, PlanFailure)
    assert "the client's availability" in failure.reason
    assert failure.earliest_fit_on is not None
    assert failure.earliest_fit_on >= start + timedelta(days=130)


def test_windows_hold_across_the_week_the_clocks_go_forward() -> None:
    # Lisbon, Sunday 29 March 2026: the client's 09:00-13:00 is wall time in either offset.
    calendar = clinic(open_days=EVERY_DAY, therapists=[therapist("ana", EVERY_DAY)])
    every_morning = ClientAvailability(weekly=tuple(window(d, "09:00", "13:00") for d in EVERY_DAY))
    plan = plan_course(
        calendar, bookings(), COURSE, local(calendar, "2026-03-26"), availability=every_morning
    )
    assert isinstance(plan, CoursePlan)
    assert_inside(calendar, plan, every_morning)
    assert_follows_the_protocol(calendar, plan)


def test_a_rebooked_dose_lies_inside_the_clients_availability() -> None:
    calendar = clinic()
    plan = plan_course(
        calendar, bookings(), COURSE, local(calendar, "2026-03-16"), availability=MORNINGS
    )
    assert isinstance(plan, CoursePlan)
    missed = doses(plan)[2]
    tuesdays_off = MORNINGS.model_copy(
        update={"weekly": tuple(w for w in MORNINGS.weekly if w.weekday != 1)}
    )
    result = replan_after_reschedule(
        calendar,
        bookings(),
        plan,
        DropSession(appointment_id=missed.appointment_id),
        missed.starts_at + timedelta(minutes=30),
        availability=tuesdays_off,
    )
    assert isinstance(result, Replan), result
    (rebooked,) = result.added
    assert wall(calendar, rebooked.starts_at).weekday() != 1
    assert wall(calendar, rebooked.starts_at).hour < 13


def test_the_clients_own_availability_wins_over_the_consultation_windows() -> None:
    schedule = ClientSchedule(
        clinic_id="lisbon",
        client_id=COURSE,
        correlation_id="c",
        preferred_times=(window(3, "14:00", "16:00"),),
    )
    assert schedule.course_availability(consultation_times_too=False) is None
    assert schedule.course_availability(consultation_times_too=True) == ClientAvailability(
        weekly=(window(3, "14:00", "16:00"),)
    )
    own = schedule.model_copy(update={"availability": MORNINGS})
    assert own.course_availability(consultation_times_too=True) == MORNINGS
