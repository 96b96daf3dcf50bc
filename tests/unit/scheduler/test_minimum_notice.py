"""Every re-plan gives the client the minimum notice (default 24 h) unless staff allow
short notice; a session that keeps its time keeps it however soon (rule 20)."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

import pytest

from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.planner import plan_course
from services.scheduler.domain.plans import (
    CoursePlan,
    DropSession,
    MoveSession,
    PlanFailure,
    Replan,
)
from services.scheduler.domain.replan import replan_after_reschedule
from tests.unit.scheduler.builders import EVERY_DAY, bookings, clinic, local, therapist, wall
from tests.unit.scheduler.rules import INTEGRATION, assert_follows_the_protocol, doses, of_kind

COURSE = UUID("6f1c2b9e-0000-4000-8000-0000000000bb")
DAY = timedelta(hours=24)


def planned(calendar: ClinicCalendar, first_day: str) -> CoursePlan:
    result = plan_course(calendar, bookings(), COURSE, local(calendar, first_day))
    assert isinstance(result, CoursePlan)
    return result


def replanned(result: Replan | PlanFailure) -> Replan:
    assert isinstance(result, Replan), result
    return result


@pytest.fixture
def calendar() -> ClinicCalendar:
    return clinic()


def test_a_dose_missed_at_nine_and_reported_at_half_past_is_rebooked_a_day_later(
    calendar: ClinicCalendar,
) -> None:
    plan = planned(calendar, "2026-03-16")  # dose 3 on Monday 23 March at 09:00
    missed = doses(plan)[2]
    assert wall(calendar, missed.starts_at) == datetime(2026, 3, 23, 9, tzinfo=calendar.tz)
    now = missed.starts_at + timedelta(minutes=30)

    result = replanned(
        replan_after_reschedule(
            calendar, bookings(), plan, DropSession(appointment_id=missed.appointment_id), now
        )
    )

    (rebooked,) = result.added
    assert rebooked.starts_at >= now + DAY
    assert wall(calendar, rebooked.starts_at) == datetime(2026, 3, 24, 9, 30, tzinfo=calendar.tz)
    assert all(a.starts_at >= now + DAY for a in result.rescheduled)
    assert_follows_the_protocol(calendar, result.plan)


def test_staff_may_allow_short_notice(calendar: ClinicCalendar) -> None:
    plan = planned(calendar, "2026-03-16")
    missed = doses(plan)[2]
    now = missed.starts_at + timedelta(minutes=30)
    drop = DropSession(appointment_id=missed.appointment_id)

    result = replanned(
        replan_after_reschedule(calendar, bookings(), plan, drop, now, short_notice_allowed=True)
    )

    (rebooked,) = result.added
    assert rebooked.starts_at == now, "the same morning, as staff allowed"
    assert_follows_the_protocol(calendar, result.plan)


def test_the_minimum_notice_is_a_clinic_policy() -> None:
    calendar = clinic(policy={"min_notice_hours": 48})
    plan = planned(calendar, "2026-03-16")
    missed = doses(plan)[2]
    now = missed.starts_at + timedelta(minutes=30)

    result = replanned(
        replan_after_reschedule(
            calendar, bookings(), plan, DropSession(appointment_id=missed.appointment_id), now
        )
    )

    (rebooked,) = result.added
    assert rebooked.starts_at >= now + 2 * DAY


def test_moving_a_session_to_less_than_the_minimum_notice_is_refused_unless_allowed(
    calendar: ClinicCalendar,
) -> None:
    plan = planned(calendar, "2026-03-16")
    dose_4 = doses(plan)[3]  # Wednesday 25 March
    now = local(calendar, "2026-03-24", "18:00")
    move = MoveSession(
        appointment_id=dose_4.appointment_id, new_starts_at=local(calendar, "2026-03-25", "14:00")
    )

    refused = replan_after_reschedule(calendar, bookings(), plan, move, now)
    allowed = replan_after_reschedule(
        calendar, bookings(), plan, move, now, short_notice_allowed=True
    )

    assert isinstance(refused, PlanFailure)
    assert "minimum notice of 24 h" in refused.reason
    assert "staff may allow short notice" in refused.reason
    assert isinstance(allowed, Replan), allowed
    moved = next(a for a in allowed.rescheduled if a.appointment_id == dose_4.appointment_id)
    assert wall(calendar, moved.starts_at) == datetime(2026, 3, 25, 14, tzinfo=calendar.tz)


def test_a_session_inside_the_notice_keeps_its_time_when_a_later_one_moves(
    calendar: ClinicCalendar,
) -> None:
    plan = planned(calendar, "2026-03-16")
    dose_3, dose_4 = doses(plan)[2:4]
    integration_3 = of_kind(plan, INTEGRATION)[2]  # Tuesday 24 March, the next morning
    now = dose_3.ends_at + timedelta(hours=1)
    assert integration_3.starts_at < now + DAY

    result = replanned(
        replan_after_reschedule(
            calendar, bookings(), plan, DropSession(appointment_id=dose_4.appointment_id), now
        )
    )

    kept = next(
        a for a in result.plan.appointments if a.appointment_id == integration_3.appointment_id
    )
    assert kept == integration_3
    assert integration_3 not in result.rescheduled


def test_the_notice_is_real_hours_across_the_night_the_clocks_go_forward() -> None:
    # Lisbon goes from 01:00 WET to 02:00 WEST on Sunday 29 March 2026: 24 real hours
    # after Saturday 09:30 WET is Sunday 10:30 WEST, not 09:30.
    calendar = clinic(open_days=EVERY_DAY, therapists=[therapist("ana", EVERY_DAY)])
    plan = planned(calendar, "2026-03-24")  # dose 2 on Friday 27, its integration Saturday 28
    missed = next(a for a in of_kind(plan, INTEGRATION) if wall(calendar, a.starts_at).day == 28)
    now = missed.starts_at + timedelta(minutes=30)

    result = replanned(
        replan_after_reschedule(
            calendar, bookings(), plan, DropSession(appointment_id=missed.appointment_id), now
        )
    )

    (rebooked,) = result.added
    assert rebooked.starts_at - now == DAY
    assert wall(calendar, rebooked.starts_at) == datetime(2026, 3, 29, 10, 30, tzinfo=calendar.tz)
    assert_follows_the_protocol(calendar, result.plan)


def test_a_move_across_the_clock_change_is_judged_in_real_hours() -> None:
    calendar = clinic(open_days=EVERY_DAY, therapists=[therapist("ana", EVERY_DAY)])
    plan = planned(calendar, "2026-03-24")
    integration_2 = of_kind(plan, INTEGRATION)[1]  # Saturday 28 March 09:00 WET
    now = local(calendar, "2026-03-28", "08:30")

    def move_to(wall_time: str) -> Replan | PlanFailure:
        to = local(calendar, "2026-03-29", wall_time)
        move = MoveSession(appointment_id=integration_2.appointment_id, new_starts_at=to)
        return replan_after_reschedule(calendar, bookings(), plan, move, now)

    too_soon = move_to("09:00")  # 23 real hours ahead
    assert isinstance(too_soon, PlanFailure)
    assert "minimum notice" in too_soon.reason
    assert isinstance(move_to("09:30"), Replan)  # 24 real hours ahead
