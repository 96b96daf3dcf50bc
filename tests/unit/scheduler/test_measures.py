"""The schedule of measures (issue 17, protocol rules 3 and 21): when each opens and closes,
what names it, what a clinic's policy changes, and when a timer sends it."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from services.scheduler.domain import endings, measures
from services.scheduler.domain.clinic import ClinicCalendar, MeasurePolicy
from services.scheduler.domain.measures import Answer
from services.scheduler.domain.plans import CoursePlan
from services.scheduler.domain.schedule import ClientSchedule, Course
from shared import events as ev
from shared.events import AppointmentStatus as Status
from shared.events import MeasurePoint as Point
from tests.unit.scheduler.builders import clinic, local

CALENDAR = clinic()  # Europe/Lisbon
COURSE = uuid.UUID("0b7f4c56-8c1e-4c8a-9d7e-5b1d2f3a4c5e")


def dose(number: int, starts_at: datetime) -> ev.Appointment:
    return ev.Appointment(
        appointment_id=uuid.uuid5(COURSE, f"medicine-{number}"),
        kind=ev.AppointmentKind.MEDICINE,
        starts_at=starts_at,
        ends_at=starts_at + timedelta(hours=3),
        therapist_id="ana",
        room_id="room-1",
        dose_number=number,
    )


def schedule_with(*doses: ev.Appointment, **course: Any) -> ClientSchedule:
    plan = CoursePlan(
        course_id=COURSE, therapist_id="ana", window_ends_on=date(2027, 12, 31), appointments=doses
    )
    client = uuid.uuid4()
    return ClientSchedule(
        clinic_id="lisbon",
        client_id=client,
        correlation_id=str(client),
        course=Course(plan=plan, **course),
    )


def planned(
    schedule: ClientSchedule, now: datetime, calendar: ClinicCalendar = CALENDAR
) -> ClientSchedule:
    return measures.replanned(schedule, calendar.policy.measures, calendar.tz, now)


def by_point(schedule: ClientSchedule) -> dict[Point, list[Any]]:
    assert schedule.course is not None
    found: dict[Point, list[Any]] = {}
    for measure in schedule.course.measures:
        found.setdefault(measure.point, []).append(measure)
    return found


def completed(at: datetime) -> ClientSchedule:
    """A course whose last dose was completed at `at`."""
    return schedule_with(completed_at=at)


# --- before each dose ----------------------------------------------------------------


def test_a_pre_dose_measure_opens_48_hours_before_the_dose_and_closes_at_its_start() -> None:
    start = local(CALENDAR, "2027-06-10", "10:00")
    booked_at = local(CALENDAR, "2027-06-01", "12:00")

    [measure] = by_point(planned(schedule_with(dose(1, start)), booked_at))[Point.PRE_DOSE]

    assert (measure.opens_at, measure.closes_at) == (start - timedelta(hours=48), start)
    assert measure.instruments == (ev.Instrument.PHQ9, ev.Instrument.GAD7)
    assert (measure.dose_number, measure.state) == (1, "pending")


def test_a_dose_booked_less_than_48_hours_ahead_opens_its_measure_at_booking_and_keeps_it() -> None:
    start = local(CALENDAR, "2027-06-10", "10:00")
    booked_at = start - timedelta(hours=20)
    first = planned(schedule_with(dose(1, start)), booked_at)

    again = planned(first, booked_at + timedelta(hours=5))  # another change, later

    [measure] = by_point(again)[Point.PRE_DOSE]
    assert measure.opens_at == booked_at
    assert again == first


def test_ids_are_the_same_on_every_replay_and_name_the_start_a_measure_precedes() -> None:
    start = local(CALENDAR, "2027-06-10", "10:00")
    now = local(CALENDAR, "2027-06-01", "12:00")
    one = by_point(planned(schedule_with(dose(1, start)), now))[Point.PRE_DOSE][0]
    replay = by_point(planned(schedule_with(dose(1, start)), now + timedelta(hours=1)))
    moved = by_point(planned(schedule_with(dose(1, start + timedelta(days=1))), now))

    assert replay[Point.PRE_DOSE][0].measure_id == one.measure_id
    assert moved[Point.PRE_DOSE][0].measure_id != one.measure_id
    assert one.measure_id == measures.measure_id(COURSE, Point.PRE_DOSE, dose(1, start))


def test_a_moved_dose_withdraws_its_pending_measure_and_keeps_a_sent_one_on_record() -> None:
    start = local(CALENDAR, "2027-06-10", "10:00")
    now = local(CALENDAR, "2027-06-01", "12:00")
    pending = planned(schedule_with(dose(1, start), dose(2, start + timedelta(days=3))), now)
    assert pending.course is not None
    sent = pending.course.measures[0].model_copy(update={"state": "sent"})
    with_sent = pending.model_copy(
        update={
            "course": pending.course.model_copy(
                update={"measures": (sent, *pending.course.measures[1:])}
            )
        }
    )
    later = start + timedelta(days=1)

    for schedule in (pending, with_sent):
        assert schedule.course is not None
        plan = schedule.course.plan.model_copy(
            update={"appointments": (dose(1, later), dose(2, start + timedelta(days=3)))}
        )
        moved = planned(
            schedule.model_copy(
                update={"course": schedule.course.model_copy(update={"plan": plan})}
            ),
            now,
        )
        closes = sorted(m.closes_at for m in by_point(moved)[Point.PRE_DOSE])
        if schedule is pending:
            assert closes == [later, start + timedelta(days=3)]
        else:
            assert closes == [start, later, start + timedelta(days=3)]


def test_a_cancelled_dose_has_no_measure_and_nothing_is_asked_before_a_dose_after_an_ending() -> (
    None
):
    start = local(CALENDAR, "2027-06-10", "10:00")
    now = local(CALENDAR, "2027-06-01", "12:00")
    two = schedule_with(dose(1, start), dose(2, start + timedelta(days=3)))
    first_id = str(dose(1, start).appointment_id)
    cancelled = two.model_copy(
        update={
            "course": two.course.model_copy(update={"statuses": {first_id: Status.CANCELLED}})  # type: ignore[union-attr]
        }
    )
    booked = planned(two, now)
    withdrawn, _, _ = endings.end_course(booked, ev.CourseEndCode.WITHDRAWN, now)

    [left] = by_point(planned(cancelled, now))[Point.PRE_DOSE]
    assert left.dose_number == 2
    assert planned(withdrawn, now).course.measures == ()  # type: ignore[union-attr]


# --- end of course and follow-ups -----------------------------------------------------


def test_the_end_of_course_measure_opens_at_the_last_dose_and_closes_seven_days_after() -> None:
    done = local(CALENDAR, "2027-06-10", "14:00")

    [measure] = by_point(planned(completed(done), done))[Point.END_OF_COURSE]

    assert (measure.opens_at, measure.closes_at) == (done, done + timedelta(days=7))
    assert measure.measure_id == measures.measure_id(COURSE, Point.END_OF_COURSE)


def test_follow_ups_fall_1_3_and_6_calendar_months_after_at_nine_local() -> None:
    done = local(CALENDAR, "2027-01-31", "16:00")

    found = by_point(planned(completed(done), done))

    opens = [found[p][0].opens_at.astimezone(CALENDAR.tz) for p in measures.FOLLOW_UPS]
    assert [o.date() for o in opens] == [date(2027, 2, 28), date(2027, 4, 30), date(2027, 7, 31)]
    assert {o.time() for o in opens} == {time(9)}
    month_1 = found[Point.MONTH_1][0]
    assert month_1.closes_at - month_1.opens_at == timedelta(days=14)


def test_the_local_hour_holds_across_the_spring_change_in_lisbon() -> None:
    # Completed in winter time (UTC+0); the last Sunday of March 2027 is the 28th.
    done = local(CALENDAR, "2027-03-10", "15:00")

    found = by_point(planned(completed(done), done))

    assert found[Point.MONTH_1][0].opens_at == datetime(2027, 4, 10, 8, tzinfo=UTC)  # 09:00 WEST
    assert found[Point.MONTH_6][0].opens_at == datetime(2027, 9, 10, 8, tzinfo=UTC)
    # A window across the change closes at the same wall time, an hour less of real time.
    late_march = local(CALENDAR, "2027-03-25", "14:00")
    [end] = by_point(planned(completed(late_march), late_march))[Point.END_OF_COURSE]
    assert end.closes_at.astimezone(CALENDAR.tz).time() == time(14)
    assert end.closes_at - end.opens_at == timedelta(days=7, hours=-1)


def test_the_local_hour_holds_across_the_autumn_change_in_lisbon() -> None:
    # Completed in summer time (UTC+1); the last Sunday of October 2027 is the 31st.
    done = local(CALENDAR, "2027-09-15", "11:00")

    found = by_point(planned(completed(done), done))

    assert found[Point.MONTH_1][0].opens_at == datetime(2027, 10, 15, 8, tzinfo=UTC)  # WEST
    assert found[Point.MONTH_3][0].opens_at == datetime(2027, 12, 15, 9, tzinfo=UTC)  # WET
    month_1 = found[Point.MONTH_1][0]  # 15 Oct to 29 Oct: before the change
    assert month_1.closes_at == datetime(2027, 10, 29, 8, tzinfo=UTC)
    october = local(CALENDAR, "2027-10-25", "12:00")
    [end] = by_point(planned(completed(october), october))[Point.END_OF_COURSE]
    assert end.closes_at == datetime(2027, 11, 1, 12, tzinfo=UTC)  # 12:00 WET, 25 h more


def test_a_completed_course_that_ended_keeps_its_follow_ups() -> None:
    done = local(CALENDAR, "2027-06-10", "14:00")
    schedule = planned(completed(done), done)
    discharged, _, _ = endings.end_course(schedule, ev.CourseEndCode.DISCHARGED, done)

    assert set(by_point(planned(discharged, done + timedelta(days=1)))) == {
        Point.END_OF_COURSE,
        Point.MONTH_1,
        Point.MONTH_3,
        Point.MONTH_6,
    }


def test_nothing_is_planned_that_has_closed_already() -> None:
    done = local(CALENDAR, "2027-01-10", "14:00")

    found = by_point(planned(completed(done), done + timedelta(days=110)))

    assert set(found) == {Point.MONTH_6}  # end of course, months 1 and 3 have closed


# --- the clinic's policy ---------------------------------------------------------------


def test_a_clinic_can_switch_points_off_or_change_them() -> None:
    start = local(CALENDAR, "2027-06-10", "10:00")
    now = local(CALENDAR, "2027-06-01", "12:00")
    done = local(CALENDAR, "2027-06-12", "14:00")
    off = clinic(policy={"measures": {"points": []}})
    changed = clinic(
        policy={
            "measures": {
                "points": ["pre_dose", "month_3"],
                "pre_dose_hours": 24,
                "follow_up_local_time": "18:30",
                "instruments": ["phq9"],
            }
        }
    )

    assert planned(schedule_with(dose(1, start)), now, off).course.measures == ()  # type: ignore[union-attr]
    found = by_point(planned(schedule_with(dose(1, start)), now, changed))
    assert found[Point.PRE_DOSE][0].opens_at == start - timedelta(hours=24)
    assert found[Point.PRE_DOSE][0].instruments == (ev.Instrument.PHQ9,)
    follow_ups = by_point(planned(completed(done), done, changed))
    assert set(follow_ups) == {Point.MONTH_3}
    assert follow_ups[Point.MONTH_3][0].opens_at.astimezone(CALENDAR.tz).time() == time(18, 30)


def test_switching_a_point_off_withdraws_its_pending_measures() -> None:
    start = local(CALENDAR, "2027-06-10", "10:00")
    now = local(CALENDAR, "2027-06-01", "12:00")
    booked = planned(schedule_with(dose(1, start)), now)

    assert planned(booked, now, clinic(policy={"measures": {"points": []}})).course.measures == ()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "bad",
    [
        {"points": ["enrolment"]},
        {"instruments": []},
        {"instruments": ["phq9", "phq9"]},
        {"pre_dose_hours": 0},
    ],
)
def test_a_measure_policy_that_makes_no_sense_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        MeasurePolicy.model_validate(bad)


# --- timers ------------------------------------------------------------------------------


def open_pre_dose() -> tuple[ClientSchedule, Any, datetime]:
    start = local(CALENDAR, "2027-06-10", "10:00")
    schedule = planned(schedule_with(dose(1, start)), local(CALENDAR, "2027-06-01", "12:00"))
    [measure] = by_point(schedule)[Point.PRE_DOSE]
    return schedule, measure, measure.opens_at + timedelta(minutes=1)


def fire(
    schedule: ClientSchedule, ids: list[uuid.UUID], answers: list[Answer], now: datetime
) -> Any:
    return measures.fired(schedule, ids, answers, CALENDAR.policy.measures, CALENDAR.tz, now)


def test_a_measure_falls_due_once_when_it_opens() -> None:
    schedule, measure, now = open_pre_dose()

    early, none = fire(schedule, [measure.measure_id], [], measure.opens_at - timedelta(seconds=1))
    after, [due] = fire(schedule, [measure.measure_id], [], now)
    again, twice = fire(after, [measure.measure_id], [], now)

    assert (early, none) == (schedule, [])
    assert (due.measure_id, due.point, due.dose_number) == (measure.measure_id, Point.PRE_DOSE, 1)
    assert (due.opens_at, due.closes_at, due.course_id) == (
        measure.opens_at,
        measure.closes_at,
        COURSE,
    )
    assert by_point(after)[Point.PRE_DOSE][0].state == "sent"
    assert twice == []
    assert again == after


def test_an_answered_measure_is_not_sent_nor_one_that_closed_before_its_timer_fired() -> None:
    schedule, measure, now = open_pre_dose()
    by_link = Answer(measure.measure_id, "pre_dose", now - timedelta(minutes=30))
    by_staff = Answer(None, None, measure.opens_at)  # entered for no measure, inside its window
    before_it_opened = Answer(None, None, measure.opens_at - timedelta(seconds=1))

    for answer, state in ((by_link, "answered"), (by_staff, "answered")):
        after, due = fire(schedule, [measure.measure_id], [answer], now)
        assert (due, by_point(after)[Point.PRE_DOSE][0].state) == ([], state)
    _, [due] = fire(schedule, [measure.measure_id], [before_it_opened], now)
    assert due.measure_id == measure.measure_id
    closed, none = fire(schedule, [measure.measure_id], [], measure.closes_at)
    assert (none, by_point(closed)[Point.PRE_DOSE][0].state) == ([], "lapsed")


def test_a_pre_dose_measure_opened_and_unanswered_is_overdue_at_check_in() -> None:
    schedule, measure, now = open_pre_dose()
    assert schedule.course is not None
    session = schedule.course.plan.appointments[0]
    answer = Answer(measure.measure_id, "pre_dose", now)

    assert measures.overdue(schedule.course, session, [], now)
    assert not measures.overdue(schedule.course, session, [answer], now)
    assert not measures.overdue(schedule.course, session, [], measure.opens_at - timedelta(hours=1))
    moved = session.model_copy(update={"starts_at": session.starts_at + timedelta(hours=1)})
    assert not measures.overdue(schedule.course, moved, [], now)  # not this session's start
