"""Issue 16, endings and restarts: pause, resume, review hold, endings, a new course (pure)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.scheduler.domain import booster_lifecycle, endings, lifecycle, pausing, returning
from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.facts import course_of
from services.scheduler.domain.planner import plan_course
from services.scheduler.domain.plans import Bookings, CoursePlan, PlanFailure
from services.scheduler.domain.schedule import ClientSchedule, Refused
from shared import events as ev
from shared.events import AppointmentKind as Kind
from shared.events import AppointmentStatus as Status
from tests.unit.scheduler.builders import clinic as any_clinic
from tests.unit.scheduler.builders import therapist


def clinic(**kwargs: Any) -> ClinicCalendar:
    """A clinic whose completions need no check-in (its own rules: test_checkin.py)."""
    policy = {"checkin": {"completion_requires_checkin": False}, **kwargs.pop("policy", {})}
    return any_clinic(policy=policy, **kwargs)


START = datetime(2027, 6, 7, 7, tzinfo=UTC)  # a Monday
Ended = ev.CourseEndCode


def booked(calendar: ClinicCalendar, start: datetime = START) -> ClientSchedule:
    plan = plan_course(calendar, Bookings(), uuid.uuid4(), start)
    assert isinstance(plan, CoursePlan)
    client = uuid.uuid4()
    schedule = ClientSchedule(clinic_id="lisbon", client_id=client, correlation_id=str(client))
    return lifecycle.course_booked(schedule, plan, start)[0]


def hold_until(calendar: ClinicCalendar, schedule: ClientSchedule, doses: int) -> ClientSchedule:
    """Sessions held in order up to and including dose `doses` (not its integration)."""
    assert schedule.course is not None
    for session in schedule.course.plan.appointments:
        if session.kind is Kind.MEDICINE and (session.dose_number or 0) > doses:
            break
        if session.kind is Kind.INTEGRATION and doses == 0:
            break
        schedule, _ = lifecycle.complete_session(
            schedule,
            session.appointment_id,
            ride_home_confirmed=True,
            phq9_total=5,
            phq9_item9=0,
            calendar=calendar,
            now=session.ends_at,
        )
        if session.kind is Kind.MEDICINE and session.dose_number == doses:
            break
    return schedule


def doses_held(schedule: ClientSchedule) -> int:
    assert schedule.course is not None
    return schedule.course.doses_held()


def future_booked(schedule: ClientSchedule, now: datetime) -> list[ev.Appointment]:
    course = course_of(schedule)
    return [
        a
        for a in course.plan.appointments
        if course.status_of(a.appointment_id) == Status.BOOKED and a.starts_at > now
    ]


def test_a_pause_releases_every_future_session_and_freezes_the_days_left() -> None:
    calendar = clinic()
    schedule = hold_until(calendar, booked(calendar), doses=2)
    course = course_of(schedule)
    now = max(a.ends_at for a in course.plan.appointments if a.dose_number == 2)
    waiting = future_booked(schedule, now)

    paused, events, released = pausing.pause(schedule, calendar, now)

    assert {a.appointment_id for a in released} == {a.appointment_id for a in waiting}
    assert future_booked(paused, now) == []
    after = course_of(paused)
    assert after.standing == "paused"
    assert all(after.status_of(a.appointment_id) == Status.CANCELLED for a in released)
    today = now.astimezone(calendar.tz).date()
    assert after.paused_days_left == (course.plan.window_ends_on - today).days + 1
    cancelled = [e for e in events if isinstance(e, ev.SessionCancelled)]
    assert len(cancelled) == len(released)
    assert not any(e.late for e in cancelled)
    [fact] = [e for e in events if isinstance(e, ev.CoursePaused)]
    assert fact.sessions_released == len(released)
    assert fact.window_days_left == after.paused_days_left
    [public] = [e for e in events if isinstance(e, ev.CourseStatusChanged)]
    assert public.status is ev.CourseStatus.PAUSED


def test_a_pause_before_the_first_dose_counts_no_days_left() -> None:
    calendar = clinic()
    paused, _, released = pausing.pause(booked(calendar), calendar, START)
    assert course_of(paused).paused_days_left is None
    assert len(released) == len(course_of(booked(calendar)).plan.appointments)


def test_a_pause_is_refused_when_paused_ended_or_completed() -> None:
    calendar = clinic()
    paused, _, _ = pausing.pause(booked(calendar), calendar, START)
    with pytest.raises(Refused):
        pausing.pause(paused, calendar, START)
    ended, _, _ = endings.end_course(booked(calendar), Ended.WITHDRAWN, START)
    with pytest.raises(Refused):
        pausing.pause(ended, calendar, START)
    completed = hold_until(calendar, booked(calendar), doses=6)
    assert course_of(completed).completed_at is not None
    with pytest.raises(Refused):
        pausing.pause(completed, calendar, START + timedelta(days=40))


def test_a_resume_plans_the_doses_left_inside_the_frozen_window() -> None:
    calendar = clinic()
    schedule = hold_until(calendar, booked(calendar), doses=2)
    course = course_of(schedule)
    dose_two = next(a for a in course.plan.appointments if a.dose_number == 2)
    paused, _, _ = pausing.pause(schedule, calendar, dose_two.ends_at)
    later = dose_two.ends_at + timedelta(days=3)
    days_left = course_of(paused).paused_days_left
    assert days_left is not None

    planned = pausing.resume_plan(calendar, Bookings(), course_of(paused), later, "r1")

    assert not isinstance(planned, PlanFailure)
    plan, added = planned
    new_doses = [a for a in added if a.kind is Kind.MEDICINE]
    assert [a.dose_number for a in new_doses] == [3, 4, 5, 6]
    window_end = later.astimezone(calendar.tz).date() + timedelta(days=days_left - 1)
    assert plan.window_ends_on == window_end
    assert all(a.starts_at.astimezone(calendar.tz).date() <= window_end for a in added)
    assert all(a.starts_at >= later + timedelta(hours=1) for a in added)
    assert new_doses[0].starts_at - dose_two.starts_at >= timedelta(hours=48)
    released = {a.appointment_id for a in course_of(paused).off_plan}
    assert not released & {a.appointment_id for a in added}
    resumed, events = pausing.resumed(paused, plan, added, later)
    assert course_of(resumed).standing == "active"
    assert sum(isinstance(e, ev.SessionScheduled) for e in events) == len(added)
    assert [e.status for e in events if isinstance(e, ev.CourseStatusChanged)] == [
        ev.CourseStatus.RESUMED
    ]


def test_a_resume_fails_when_the_frozen_days_cannot_hold_the_doses_left() -> None:
    calendar = clinic()
    schedule = hold_until(calendar, booked(calendar), doses=1)
    dose_one = next(a for a in course_of(schedule).plan.appointments if a.dose_number == 1)
    paused, _, _ = pausing.pause(schedule, calendar, dose_one.ends_at)
    # Two days left in the window cannot hold five doses 48 h apart.
    course = course_of(paused).model_copy(update={"paused_days_left": 2})
    later = dose_one.ends_at + timedelta(days=1)

    planned = pausing.resume_plan(calendar, Bookings(), course, later, "r")

    assert isinstance(planned, PlanFailure)
    assert "2 days left" in planned.reason


def test_a_resume_before_the_first_dose_plans_a_whole_course_in_a_clinic_open_two_days() -> None:
    # Open Tuesdays and Thursdays, across the DST change of 28 March 2027 (Lisbon).
    calendar = clinic(
        open_days=(1, 3),
        therapists=[therapist("ana", days=(1, 3))],
        policy={"course_window_days": 42},
    )
    start = datetime(2027, 3, 15, 7, tzinfo=UTC)
    paused, _, _ = pausing.pause(booked(calendar, start), calendar, start)
    later = start + timedelta(days=7)

    planned = pausing.resume_plan(calendar, Bookings(), course_of(paused), later, "r")

    assert not isinstance(planned, PlanFailure)
    plan, added = planned
    doses = [a for a in added if a.kind is Kind.MEDICINE]
    assert len(doses) == 6
    local = [a.starts_at.astimezone(calendar.tz) for a in added]
    assert {t.weekday() for t in local} <= {1, 3}
    assert {t.hour for t in local} == {9}  # the same wall time on both sides of the change
    first = doses[0].starts_at.astimezone(calendar.tz).date()
    assert plan.window_ends_on == first + timedelta(days=calendar.policy.course_window_days - 1)


def test_consecutive_no_shows_are_counted_back_to_the_last_dose_attended() -> None:
    calendar = clinic()
    schedule = hold_until(calendar, booked(calendar), doses=1)
    course = course_of(schedule)
    doses = [a for a in course.plan.appointments if a.kind is Kind.MEDICINE]
    statuses = {
        **course.statuses,
        str(doses[1].appointment_id): Status.NOSHOW,
        str(doses[2].appointment_id): Status.CANCELLED,
        str(doses[3].appointment_id): Status.NOSHOW,
    }
    assert endings.consecutive_no_shows(course.model_copy(update={"statuses": statuses})) == 2
    statuses[str(doses[2].appointment_id)] = Status.FULFILLED
    assert endings.consecutive_no_shows(course.model_copy(update={"statuses": statuses})) == 1
    assert endings.consecutive_no_shows(course) == 0


def test_a_review_hold_keeps_the_booked_sessions() -> None:
    calendar = clinic()
    schedule = booked(calendar)
    missed = next(a for a in course_of(schedule).plan.appointments if a.dose_number == 1)
    schedule, _ = lifecycle.session_dropped(
        schedule, missed.appointment_id, missed=True, late=False, now=missed.ends_at
    )
    held, events = endings.hold_for_review(schedule, missed.appointment_id, missed.ends_at)
    course = course_of(held)
    assert course.standing == "on_review"
    assert course.review_for == missed.appointment_id
    assert course.plan == course_of(schedule).plan
    assert [type(e) for e in events] == [ev.CourseHeldForReview, ev.CourseStatusChanged]


def test_an_ending_releases_everything_and_nothing_is_announced_or_booked_after() -> None:
    calendar = clinic()
    completed = hold_until(calendar, booked(calendar), doses=6)
    course = course_of(completed)
    due = course.next_booster_due_at
    assert due is not None
    assert course.completed_at is not None
    now = course.completed_at + timedelta(hours=1)

    ended, events, _ = endings.end_course(completed, Ended.DISCHARGED, now)

    after = course_of(ended)
    assert after.standing == "ended"
    assert after.end_code is Ended.DISCHARGED
    assert future_booked(ended, now) == []
    [stopped] = [e for e in events if isinstance(e, ev.BoostersStopped)]
    assert stopped.reason == "discharged"
    [fact] = [e for e in events if isinstance(e, ev.CourseEnded)]
    assert fact.reason is Ended.DISCHARGED
    assert fact.medicine_sessions_completed == 6
    [public] = [e for e in events if isinstance(e, ev.CourseStatusChanged)]
    assert public.ended_as is Ended.DISCHARGED
    # A timer armed before the ending still fires: it announces nothing.
    still = after.model_copy(update={"next_booster": 1, "next_booster_due_at": due})
    armed = ended.model_copy(update={"course": still})
    assert booster_lifecycle.booster_fired(armed, 1, calendar, due) == (armed, [])
    with pytest.raises(Refused):
        booster_lifecycle.set_booster_plan(ended, calendar.policy.booster, calendar, now)
    with pytest.raises(Refused):
        endings.end_course(ended, Ended.WITHDRAWN, now)


def test_a_withdrawn_course_does_not_complete_on_a_session_recorded_after() -> None:
    calendar = clinic(policy={"medicine_sessions": 2, "course_window_days": 14})
    schedule = hold_until(calendar, booked(calendar), doses=1)
    dose_two = next(a for a in course_of(schedule).plan.appointments if a.dose_number == 2)
    # Withdrawn during dose 2 (started, so not released), then dose 2 is recorded.
    ended, _, released = endings.end_course(schedule, Ended.WITHDRAWN, dose_two.starts_at)
    assert dose_two not in released
    after, events = lifecycle.complete_session(
        ended,
        dose_two.appointment_id,
        ride_home_confirmed=True,
        phq9_total=4,
        phq9_item9=0,
        calendar=calendar,
        now=dose_two.ends_at,
    )
    assert course_of(after).completed_at is None
    assert not any(isinstance(e, ev.CourseCompleted | ev.BoosterPlanSet) for e in events)


def test_a_new_course_only_after_the_last_one_completed_or_ended() -> None:
    calendar = clinic()
    active = booked(calendar)
    with pytest.raises(Refused):
        returning.archived(active, START)
    ended, _, _ = endings.end_course(active, Ended.WITHDRAWN, START)
    archived, events = returning.archived(ended, START)
    assert archived.course is None
    assert events == []
    assert archived.previous_courses == (course_of(ended).plan.course_id,)
    # The course itself is kept: its cohort (the month it ended) still counts it.
    assert archived.finished_courses == (course_of(ended),)
    completed = hold_until(calendar, booked(calendar), doses=6)
    course = course_of(completed)
    assert course.completed_at is not None
    archived, events = returning.archived(completed, course.completed_at)
    assert [type(e) for e in events] == [ev.BoostersStopped, ev.ClientStageReached]


def test_a_schedule_saved_before_endings_existed_still_loads_as_active() -> None:
    schedule = booked(clinic())
    raw = schedule.model_dump(mode="json")
    for field in ("standing", "off_plan", "paused_days_left", "review_for", "ended_at"):
        del raw["course"][field]
    del raw["course"]["end_code"], raw["previous_courses"]
    loaded = ClientSchedule.model_validate(raw)
    assert course_of(loaded).standing == "active"
    assert loaded.previous_courses == ()
