from __future__ import annotations

from datetime import date, datetime
from uuid import UUID, uuid4, uuid5

import pytest

from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.planner import plan_course
from services.scheduler.domain.plans import (
    Bookings,
    CoursePlan,
    DropSession,
    MoveSession,
    PlanFailure,
    Replan,
)
from services.scheduler.domain.replan import replan_after_reschedule
from shared.events import Appointment
from tests.unit.scheduler.builders import (
    booked_all_day,
    bookings,
    clinic,
    local,
    local_days,
    therapist,
    wall,
)
from tests.unit.scheduler.rules import INTEGRATION, assert_follows_the_protocol, doses, of_kind

COURSE = UUID("6f1c2b9e-0000-4000-8000-0000000000aa")


@pytest.fixture
def calendar() -> ClinicCalendar:
    return clinic()


@pytest.fixture
def plan(calendar: ClinicCalendar) -> CoursePlan:
    """Prep Mon 16 Mar; doses Tue 17, Thu 19, Mon 23, Wed 25, Mon 30 Mar, Wed 1 Apr at 09:00,
    each integrated the next day; the window ends Mon 6 Apr."""
    result = plan_course(calendar, bookings(), COURSE, local(calendar, "2026-03-16"))
    assert isinstance(result, CoursePlan)
    return result


def replanned(result: Replan | PlanFailure) -> Replan:
    assert isinstance(result, Replan), result
    return result


def dose(plan: CoursePlan, number: int) -> Appointment:
    return doses(plan)[number - 1]


def integration(plan: CoursePlan, after_dose: int) -> Appointment:
    return of_kind(plan, INTEGRATION)[after_dose - 1]


def test_moving_a_dose_a_day_later_shifts_only_what_no_longer_fits(
    calendar: ClinicCalendar, plan: CoursePlan
) -> None:
    now = local(calendar, "2026-03-21", "10:00")
    move = MoveSession(
        appointment_id=dose(plan, 3).appointment_id,
        new_starts_at=local(calendar, "2026-03-24", "09:00"),
    )

    result = replanned(replan_after_reschedule(calendar, bookings(), plan, move, now))

    after = result.plan
    assert_follows_the_protocol(calendar, after)
    assert {a.appointment_id for a in result.rescheduled} == {
        dose(plan, 3).appointment_id,
        integration(plan, 3).appointment_id,
        dose(plan, 4).appointment_id,
        integration(plan, 4).appointment_id,
    }
    assert local_days(calendar, tuple(result.rescheduled)) == [
        date(2026, 3, 24),
        date(2026, 3, 25),
        date(2026, 3, 26),
        date(2026, 3, 27),
    ]
    moved_ids = {a.appointment_id for a in result.rescheduled}
    untouched = [a for a in plan.appointments if a.appointment_id not in moved_ids]
    assert len(untouched) == 9
    assert all(a in after.appointments for a in untouched)
    assert after.window_ends_on == plan.window_ends_on
    assert (result.added, result.dropped) == ((), ())


def test_sessions_already_held_are_kept_as_they_were(
    calendar: ClinicCalendar, plan: CoursePlan
) -> None:
    now = local(calendar, "2026-03-21", "10:00")
    move = MoveSession(
        appointment_id=dose(plan, 3).appointment_id,
        new_starts_at=local(calendar, "2026-03-24", "09:00"),
    )

    after = replanned(replan_after_reschedule(calendar, bookings(), plan, move, now)).plan

    held = [a for a in plan.appointments if a.starts_at < now]
    assert len(held) == 5
    assert after.appointments[:5] == tuple(held)


def test_a_missed_dose_is_rebooked_as_a_new_appointment(
    calendar: ClinicCalendar, plan: CoursePlan
) -> None:
    missed = dose(plan, 3)
    now = local(calendar, "2026-03-23", "17:00")

    result = replanned(
        replan_after_reschedule(
            calendar, bookings(), plan, DropSession(appointment_id=missed.appointment_id), now
        )
    )

    (rebooked,) = result.added
    assert rebooked.appointment_id == uuid5(missed.appointment_id, "rebooked")
    assert rebooked.dose_number == 3
    # Not Tuesday 09:00, 16 h after it was reported: the minimum notice is 24 h.
    assert wall(calendar, rebooked.starts_at) == datetime(2026, 3, 25, 9, tzinfo=calendar.tz)
    assert result.dropped == (missed.appointment_id,)
    assert missed not in result.plan.appointments
    assert len(doses(result.plan)) == 6
    assert_follows_the_protocol(calendar, result.plan)


def test_a_missed_first_dose_opens_the_window_again_from_the_new_first_dose(
    calendar: ClinicCalendar, plan: CoursePlan
) -> None:
    missed = dose(plan, 1)
    now = local(calendar, "2026-03-17", "18:00")
    drop = DropSession(appointment_id=missed.appointment_id)

    result = replanned(
        replan_after_reschedule(calendar, bookings(), plan, drop, now, short_notice_allowed=True)
    )

    assert local_days(calendar, doses(result.plan)[:1]) == [date(2026, 3, 18)]
    assert result.plan.window_ends_on == date(2026, 4, 7)
    assert_follows_the_protocol(calendar, result.plan)


def test_moving_an_integration_pushes_the_next_dose_after_it(
    calendar: ClinicCalendar, plan: CoursePlan
) -> None:
    now = local(calendar, "2026-03-23", "13:00")
    move = MoveSession(
        appointment_id=integration(plan, 3).appointment_id,
        new_starts_at=local(calendar, "2026-03-25", "15:00"),
    )

    result = replanned(replan_after_reschedule(calendar, bookings(), plan, move, now))

    assert local_days(calendar, (dose(result.plan, 4),)) == [date(2026, 3, 26)]
    assert dose(result.plan, 5) == dose(plan, 5)
    assert_follows_the_protocol(calendar, result.plan)


def test_replan_fails_when_the_rest_cannot_fit_inside_the_window(
    calendar: ClinicCalendar, plan: CoursePlan
) -> None:
    now = local(calendar, "2026-03-31", "08:00")
    move = MoveSession(
        appointment_id=dose(plan, 5).appointment_id,
        new_starts_at=local(calendar, "2026-04-03", "09:00"),
    )

    failure = replan_after_reschedule(calendar, bookings(), plan, move, now)

    assert failure == PlanFailure(
        reason="the rest of the course cannot fit inside its window (ends 2026-04-06)"
    )


def test_moving_a_dose_closer_than_48_hours_to_the_last_one_fails(
    calendar: ClinicCalendar, plan: CoursePlan
) -> None:
    now = local(calendar, "2026-03-19", "13:00")
    move = MoveSession(
        appointment_id=dose(plan, 3).appointment_id,
        new_starts_at=local(calendar, "2026-03-20", "14:00"),
    )

    assert isinstance(replan_after_reschedule(calendar, bookings(), plan, move, now), PlanFailure)


def test_moving_to_a_time_outside_opening_hours_fails(
    calendar: ClinicCalendar, plan: CoursePlan
) -> None:
    move = MoveSession(
        appointment_id=dose(plan, 3).appointment_id,
        new_starts_at=local(calendar, "2026-03-24", "16:00"),
    )
    now = local(calendar, "2026-03-21")

    failure = replan_after_reschedule(calendar, bookings(), plan, move, now)

    assert failure == PlanFailure(reason="the therapist or a room is not free at the new time")


def test_moving_into_the_past_fails(calendar: ClinicCalendar, plan: CoursePlan) -> None:
    move = MoveSession(
        appointment_id=dose(plan, 3).appointment_id,
        new_starts_at=local(calendar, "2026-03-20", "09:00"),
    )

    failure = replan_after_reschedule(
        calendar, bookings(), plan, move, local(calendar, "2026-03-21")
    )

    assert failure == PlanFailure(reason="the new time has already passed")


def test_a_session_from_another_course_is_refused(
    calendar: ClinicCalendar, plan: CoursePlan
) -> None:
    failure = replan_after_reschedule(
        calendar,
        bookings(),
        plan,
        DropSession(appointment_id=uuid4()),
        local(calendar, "2026-03-21"),
    )

    assert failure == PlanFailure(reason="the session is not part of this course")


def test_bookings_that_include_the_course_itself_do_not_block_it(
    calendar: ClinicCalendar, plan: CoursePlan
) -> None:
    own = [{"starts_at": a.starts_at, "ends_at": a.ends_at} for a in plan.appointments]
    everything = Bookings.model_validate(
        {
            "therapists": {"ana": own},
            "rooms": {
                "room-1": [s for s, a in zip(own, plan.appointments, strict=True) if a.room_id]
            },
            "client": own,
        }
    )
    now = local(calendar, "2026-03-21", "10:00")
    move = MoveSession(
        appointment_id=dose(plan, 3).appointment_id,
        new_starts_at=local(calendar, "2026-03-24", "09:00"),
    )

    with_own = replanned(replan_after_reschedule(calendar, everything, plan, move, now))
    without = replanned(replan_after_reschedule(calendar, bookings(), plan, move, now))

    assert with_own == without


def test_a_session_whose_old_time_is_no_longer_free_takes_the_next_allowed_day(
    calendar: ClinicCalendar, plan: CoursePlan
) -> None:
    ana_off_on_monday = booked_all_day(calendar, "2026-03-30", 1)
    ana_away = clinic(therapists=[therapist("ana", time_off=ana_off_on_monday)])
    now = local(calendar, "2026-03-21", "10:00")
    move = MoveSession(
        appointment_id=dose(plan, 3).appointment_id,
        new_starts_at=local(calendar, "2026-03-24", "09:00"),
    )

    result = replanned(replan_after_reschedule(ana_away, bookings(), plan, move, now))

    assert dose(result.plan, 5).appointment_id == dose(plan, 5).appointment_id
    assert local_days(calendar, doses(result.plan)[4:]) == [date(2026, 3, 31), date(2026, 4, 2)]
    assert_follows_the_protocol(ana_away, result.plan)


def test_a_session_keeps_its_time_when_it_still_fits_even_if_an_earlier_one_opened_up(
    calendar: ClinicCalendar,
) -> None:
    room_taken_monday_morning = bookings(
        rooms={
            "room-1": [
                {
                    "starts_at": local(calendar, "2026-03-30", "09:00"),
                    "ends_at": local(calendar, "2026-03-30", "12:00"),
                }
            ]
        }
    )
    booked = plan_course(calendar, room_taken_monday_morning, COURSE, local(calendar, "2026-03-16"))
    assert isinstance(booked, CoursePlan)
    assert wall(calendar, dose(booked, 5).starts_at).hour == 12
    move = MoveSession(
        appointment_id=dose(booked, 3).appointment_id,
        new_starts_at=local(calendar, "2026-03-24", "09:00"),
    )

    result = replanned(
        replan_after_reschedule(calendar, bookings(), booked, move, local(calendar, "2026-03-21"))
    )

    assert dose(result.plan, 5) == dose(booked, 5)
    assert dose(booked, 5) not in result.rescheduled
