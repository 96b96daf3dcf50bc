"""Issue 14, fault 5: a booster is announced when due, once; stopped boosters stay stopped."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.scheduler.domain import booster_lifecycle, lifecycle
from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.planner import plan_course
from services.scheduler.domain.plans import Bookings, CoursePlan
from services.scheduler.domain.schedule import ClientSchedule
from shared import events as ev
from tests.builders.scheduler import checked_in
from tests.unit.scheduler.builders import clinic

START = datetime(2027, 6, 7, 7, tzinfo=UTC)  # a Monday


def booked(calendar: ClinicCalendar) -> ClientSchedule:
    plan = plan_course(calendar, Bookings(), uuid.uuid4(), START)
    assert isinstance(plan, CoursePlan)
    client = uuid.uuid4()
    schedule = ClientSchedule(clinic_id="lisbon", client_id=client, correlation_id=str(client))
    return lifecycle.course_booked(schedule, plan, START)[0]


def hold_all(calendar: ClinicCalendar, schedule: ClientSchedule) -> ClientSchedule:
    """Every session held, each as it ends; the last completes the course."""
    assert schedule.course is not None
    for appointment in schedule.course.plan.appointments:
        if schedule.course.status_of(appointment.appointment_id) != ev.AppointmentStatus.BOOKED:
            continue
        schedule = checked_in(schedule, appointment, calendar)
        schedule, _ = lifecycle.complete_session(
            schedule,
            appointment.appointment_id,
            ride_home_confirmed=True,
            phq9_total=5,
            phq9_item9=0,
            calendar=calendar,
            now=appointment.ends_at,
        )
    return schedule


def announced(events: list[ev.Event]) -> list[int]:
    return [e.booster_number for e in events if isinstance(e, ev.BoosterDue)]


def test_a_booster_is_not_announced_before_it_is_due() -> None:
    calendar = clinic()
    schedule = hold_all(calendar, booked(calendar))
    assert schedule.course is not None
    due = schedule.course.next_booster_due_at
    assert due is not None

    early, events = booster_lifecycle.booster_fired(schedule, 1, calendar, due - timedelta(days=1))

    assert announced(events) == []
    assert early == schedule
    assert announced(booster_lifecycle.booster_fired(schedule, 1, calendar, due)[1]) == [1]


def test_an_old_timer_after_a_plan_change_announces_nothing_early() -> None:
    calendar = clinic()
    schedule = hold_all(calendar, booked(calendar))
    assert schedule.course is not None
    first_due = schedule.course.next_booster_due_at
    assert first_due is not None
    schedule, events = booster_lifecycle.booster_fired(schedule, 1, calendar, first_due)
    assert announced(events) == [1]
    assert schedule.course is not None
    old_second_due = schedule.course.next_booster_due_at
    assert old_second_due is not None

    # Booster 2 now falls 30 days after booster 1's day instead of 14.
    changed = ev.BoosterPlan(interval_days=30, count=3, then_monthly=False)
    schedule, _ = booster_lifecycle.set_booster_plan(schedule, changed, calendar, first_due)
    assert schedule.course is not None
    new_due = schedule.course.next_booster_due_at
    assert new_due is not None
    assert new_due > old_second_due
    # The old timer for booster 2 (and a stray one for booster 1) fire on the old date.
    same_round = [
        *booster_lifecycle.booster_fired(schedule, 2, calendar, old_second_due)[1],
        *booster_lifecycle.booster_fired(schedule, 1, calendar, old_second_due)[1],
    ]

    assert announced(same_round) == []
    assert announced(booster_lifecycle.booster_fired(schedule, 2, calendar, new_due)[1]) == [2]


def test_after_a_plan_change_the_next_booster_takes_the_next_number() -> None:
    calendar = clinic()
    schedule = hold_all(calendar, booked(calendar))
    assert schedule.course is not None
    first_due = schedule.course.next_booster_due_at
    assert first_due is not None
    schedule, _ = booster_lifecycle.booster_fired(schedule, 1, calendar, first_due)

    # The new plan's first date is 20 days after the course: still ahead, booster 2.
    changed = ev.BoosterPlan(interval_days=20, count=2, then_monthly=False)
    schedule, _ = booster_lifecycle.set_booster_plan(schedule, changed, calendar, first_due)

    assert schedule.course is not None
    assert schedule.course.next_booster == 2
    assert schedule.course.boosters_announced == 1


def test_boosters_stopped_during_the_course_stay_stopped_when_it_completes() -> None:
    calendar = clinic()
    schedule = booked(calendar)
    schedule, stopped = booster_lifecycle.stop_boosters(schedule, "stopped_by_care_team", START)
    assert any(isinstance(e, ev.BoostersStopped) for e in stopped)

    completed = hold_all(calendar, schedule)

    assert completed.course is not None
    assert completed.course.completed_at is not None
    assert completed.course.boosters_stopped
    assert completed.course.next_booster is None
    assert completed.course.next_booster_due_at is None
