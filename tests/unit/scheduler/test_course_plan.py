from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from uuid import UUID, uuid5

import pytest

from services.scheduler.domain.planner import plan_course
from services.scheduler.domain.plans import CoursePlan, PlanFailure
from tests.unit.scheduler.builders import (
    EVERY_DAY,
    booked_all_day,
    bookings,
    busy,
    clinic,
    local,
    local_days,
    therapist,
    wall,
)
from tests.unit.scheduler.rules import (
    INTEGRATION,
    MEDICINE,
    PREPARATION,
    assert_follows_the_protocol,
    doses,
    local_day,
    of_kind,
)

COURSE = UUID("6f1c2b9e-0000-4000-8000-00000000c0de")
MONDAY = "2026-03-16"


def planned(result: CoursePlan | PlanFailure) -> CoursePlan:
    assert isinstance(result, CoursePlan), result
    return result


def test_course_in_a_quiet_clinic_follows_the_protocol_and_starts_at_once() -> None:
    calendar = clinic()

    plan = planned(plan_course(calendar, bookings(), COURSE, local(calendar, MONDAY, "08:00")))

    assert_follows_the_protocol(calendar, plan)
    preparation = of_kind(plan, PREPARATION)[0]
    assert wall(calendar, preparation.starts_at) == datetime(2026, 3, 16, 16, tzinfo=calendar.tz)
    assert [local_day(calendar, d).isoformat() for d in doses(plan)] == [
        "2026-03-17",
        "2026-03-19",
        "2026-03-23",
        "2026-03-25",
        "2026-03-30",
        "2026-04-01",
    ]
    assert plan.window_ends_on == date(2026, 4, 6)
    assert plan.therapist_id == "ana"


def test_doses_are_at_least_48_hours_apart_start_to_start() -> None:
    calendar = clinic()
    tuesday_morning = busy(
        (local(calendar, "2026-03-17", "09:00"), local(calendar, "2026-03-17", "14:00"))
    )

    plan = planned(
        plan_course(
            calendar, bookings(therapists={"ana": tuesday_morning}), COURSE, local(calendar, MONDAY)
        )
    )

    first, second = doses(plan)[:2]
    assert wall(calendar, first.starts_at) == datetime(2026, 3, 17, 14, tzinfo=calendar.tz)
    assert second.starts_at - first.starts_at == timedelta(hours=48)
    assert_follows_the_protocol(calendar, plan)


def test_at_most_two_doses_in_a_calendar_week_even_when_open_every_day() -> None:
    calendar = clinic(open_days=EVERY_DAY, therapists=[therapist("ana", EVERY_DAY)])

    plan = planned(plan_course(calendar, bookings(), COURSE, local(calendar, MONDAY, "08:00")))

    dose_days = [local_day(calendar, d) for d in doses(plan)]
    assert dose_days[:3] == [date(2026, 3, 17), date(2026, 3, 19), date(2026, 3, 23)]
    assert_follows_the_protocol(calendar, plan)


def test_integration_comes_one_to_three_days_after_its_dose_and_before_the_next() -> None:
    calendar = clinic()
    wednesday = booked_all_day(calendar, "2026-03-18", 1)

    plan = planned(
        plan_course(
            calendar, bookings(therapists={"ana": wednesday}), COURSE, local(calendar, MONDAY)
        )
    )

    first_integration = of_kind(plan, INTEGRATION)[0]
    assert local_day(calendar, first_integration) == date(2026, 3, 19)
    assert local_day(calendar, doses(plan)[1]) == date(2026, 3, 20)
    assert_follows_the_protocol(calendar, plan)


def test_integration_after_doses_one_and_two_then_every_second_dose() -> None:
    calendar = clinic(policy={"integration_pattern": "after_doses_1_2_then_every_second"})

    plan = planned(plan_course(calendar, bookings(), COURSE, local(calendar, MONDAY)))

    assert len(of_kind(plan, INTEGRATION)) == 4
    assert_follows_the_protocol(calendar, plan)


def test_same_therapist_for_the_whole_course() -> None:
    calendar = clinic(therapists=[therapist("ana"), therapist("rui")], rooms=2)

    plan = planned(plan_course(calendar, bookings(), COURSE, local(calendar, MONDAY)))

    assert {a.therapist_id for a in plan.appointments} == {plan.therapist_id}


def test_preferred_therapist_wins_when_plans_finish_together() -> None:
    calendar = clinic(therapists=[therapist("ana"), therapist("rui")])

    plan = planned(
        plan_course(
            calendar, bookings(), COURSE, local(calendar, MONDAY), preferred_therapist="rui"
        )
    )

    assert {a.therapist_id for a in plan.appointments} == {"rui"}


def test_therapist_who_finishes_sooner_wins_over_the_preferred_one() -> None:
    calendar = clinic(therapists=[therapist("ana"), therapist("rui")], rooms=2)
    ana_busy_on_the_last_integration_day = booked_all_day(calendar, "2026-04-02", 1)

    plan = planned(
        plan_course(
            calendar,
            bookings(therapists={"ana": ana_busy_on_the_last_integration_day}),
            COURSE,
            local(calendar, MONDAY),
            preferred_therapist="ana",
        )
    )

    assert {a.therapist_id for a in plan.appointments} == {"rui"}
    assert local_day(calendar, doses(plan)[0]) == date(2026, 3, 17)


def test_preferred_therapist_away_for_a_week_gives_the_course_to_another() -> None:
    calendar = clinic(therapists=[therapist("ana"), therapist("rui")])
    ana_away = booked_all_day(calendar, "2026-03-17", 7)

    plan = planned(
        plan_course(
            calendar,
            bookings(therapists={"ana": ana_away}),
            COURSE,
            local(calendar, MONDAY),
            preferred_therapist="ana",
        )
    )

    assert plan.therapist_id == "rui"
    assert {a.therapist_id for a in plan.appointments} == {"rui"}


def test_therapist_who_works_two_days_a_week_cannot_carry_a_course_alone() -> None:
    calendar = clinic(therapists=[therapist("ana", days=(0, 3)), therapist("rui")])

    plan = planned(
        plan_course(
            calendar, bookings(), COURSE, local(calendar, MONDAY), preferred_therapist="ana"
        )
    )

    assert {a.therapist_id for a in plan.appointments} == {"rui"}
    assert_follows_the_protocol(calendar, plan)


def test_therapists_are_mixed_only_when_nobody_can_take_the_whole_course() -> None:
    calendar = clinic(therapists=[therapist("ana", days=(0, 1)), therapist("rui", days=(2, 3, 4))])

    plan = planned(plan_course(calendar, bookings(), COURSE, local(calendar, MONDAY)))

    assert {a.therapist_id for a in plan.appointments} == {"ana", "rui"}
    assert plan.therapist_id == doses(plan)[0].therapist_id
    assert_follows_the_protocol(calendar, plan)


def test_course_with_only_a_two_day_therapist_cannot_be_planned() -> None:
    calendar = clinic(therapists=[therapist("ana", days=(0, 3))])

    failure = plan_course(calendar, bookings(), COURSE, local(calendar, MONDAY))

    assert failure == PlanFailure(
        reason="no full course fits in the next 120 days", earliest_fit_on=None
    )


def test_closed_days_are_never_used() -> None:
    calendar = clinic(closures=("2026-03-19", "2026-03-23"))

    plan = planned(plan_course(calendar, bookings(), COURSE, local(calendar, MONDAY)))

    assert not {date(2026, 3, 19), date(2026, 3, 23)} & set(local_days(calendar, plan.appointments))
    assert_follows_the_protocol(calendar, plan)


def test_course_spans_dst_change_keeping_local_opening_hours() -> None:
    calendar = clinic(timezone="Europe/Lisbon")

    plan = planned(plan_course(calendar, bookings(), COURSE, local(calendar, "2026-03-23")))

    assert_follows_the_protocol(calendar, plan)
    before = [d for d in doses(plan) if local_day(calendar, d) < date(2026, 3, 29)]
    after = [d for d in doses(plan) if local_day(calendar, d) > date(2026, 3, 29)]
    assert before
    assert after
    assert {wall(calendar, d.starts_at).time() for d in doses(plan)} == {time(9)}
    assert {d.starts_at.hour for d in before} == {9}  # WET, UTC+0
    assert {d.starts_at.hour for d in after} == {8}  # WEST, UTC+1


@pytest.mark.parametrize(
    ("timezone", "change_day", "utc_start"),
    [
        ("Europe/Lisbon", "2026-03-29", datetime(2026, 3, 29, 8, tzinfo=UTC)),
        ("Europe/Lisbon", "2026-10-25", datetime(2026, 10, 25, 9, tzinfo=UTC)),
        ("America/New_York", "2026-03-08", datetime(2026, 3, 8, 13, tzinfo=UTC)),
        ("America/New_York", "2026-11-01", datetime(2026, 11, 1, 14, tzinfo=UTC)),
    ],
)
def test_dose_on_the_dst_change_day_is_180_real_minutes_inside_local_hours(
    timezone: str, change_day: str, utc_start: datetime
) -> None:
    calendar = clinic(
        timezone=timezone,
        open_days=EVERY_DAY,
        therapists=[therapist("ana", EVERY_DAY)],
    )
    day_before = (date.fromisoformat(change_day) - timedelta(days=1)).isoformat()

    plan = planned(plan_course(calendar, bookings(), COURSE, local(calendar, day_before)))

    first = doses(plan)[0]
    assert first.starts_at == utc_start
    assert first.ends_at - first.starts_at == timedelta(minutes=180)
    assert wall(calendar, first.starts_at).time() == time(9)
    assert wall(calendar, first.ends_at).time() == time(12)
    assert_follows_the_protocol(calendar, plan)


def test_clinic_without_rooms_fails_with_no_date_to_offer() -> None:
    calendar = clinic(rooms=0)

    failure = plan_course(calendar, bookings(), COURSE, local(calendar, MONDAY))

    assert failure == PlanFailure(
        reason="the clinic has no room for medicine sessions", earliest_fit_on=None
    )


def test_fully_booked_rooms_fail_with_the_earliest_day_a_course_fits() -> None:
    calendar = clinic(rooms=2)
    six_weeks = booked_all_day(calendar, MONDAY, 40)  # free again from Saturday 25 April
    full = bookings(rooms={"room-1": six_weeks, "room-2": six_weeks})

    failure = plan_course(calendar, full, COURSE, local(calendar, MONDAY), horizon_days=30)
    later = planned(plan_course(calendar, full, COURSE, local(calendar, MONDAY)))

    assert isinstance(failure, PlanFailure)
    assert failure.earliest_fit_on == date(2026, 4, 24)
    assert local_day(calendar, later.appointments[0]) == failure.earliest_fit_on
    assert local_day(calendar, doses(later)[0]) == date(2026, 4, 27)


def test_a_free_room_is_reserved_for_every_dose() -> None:
    calendar = clinic(rooms=2)
    room_one_mornings = busy(
        *(
            (local(calendar, day, "09:00"), local(calendar, day, "12:00"))
            for day in ("2026-03-17", "2026-03-19")
        )
    )

    plan = planned(
        plan_course(
            calendar, bookings(rooms={"room-1": room_one_mornings}), COURSE, local(calendar, MONDAY)
        )
    )

    first, second = doses(plan)[:2]
    assert (first.room_id, second.room_id) == ("room-2", "room-2")
    assert wall(calendar, first.starts_at).time() == time(9)
    assert all(d.room_id == "room-1" for d in doses(plan)[2:])


def test_therapist_time_off_and_client_bookings_are_never_overlapped() -> None:
    lisbon = clinic()
    away = booked_all_day(lisbon, "2026-03-17", 3)
    calendar = clinic(therapists=[therapist("ana", time_off=away)])
    client_busy = busy(
        (local(calendar, "2026-03-20", "09:00"), local(calendar, "2026-03-20", "11:00"))
    )

    plan = planned(
        plan_course(calendar, bookings(client=client_busy), COURSE, local(calendar, MONDAY))
    )

    taken = [(span["starts_at"], span["ends_at"]) for span in [*away, *client_busy]]
    for appointment in plan.appointments:
        assert all(appointment.ends_at <= s or e <= appointment.starts_at for s, e in taken)
    assert_follows_the_protocol(calendar, plan)


def test_nothing_is_planned_before_not_before() -> None:
    calendar = clinic()

    plan = planned(plan_course(calendar, bookings(), COURSE, local(calendar, MONDAY, "16:30")))

    assert plan.appointments[0].starts_at >= local(calendar, MONDAY, "16:30")
    assert local_days(calendar, plan.appointments)[:2] == [date(2026, 3, 17), date(2026, 3, 18)]


def test_appointment_ids_are_derived_from_the_course_so_a_replay_yields_the_same() -> None:
    calendar = clinic()
    not_before = local(calendar, MONDAY)

    plan = planned(plan_course(calendar, bookings(), COURSE, not_before))
    again = planned(plan_course(calendar, bookings(), COURSE, not_before))
    other = planned(plan_course(calendar, bookings(), uuid5(COURSE, "other"), not_before))

    assert again == plan
    assert doses(plan)[0].appointment_id == uuid5(COURSE, "medicine-1")
    assert of_kind(plan, INTEGRATION)[2].appointment_id == uuid5(COURSE, "integration-3")
    assert of_kind(plan, PREPARATION)[0].appointment_id == uuid5(COURSE, "preparation-1")
    assert not {a.appointment_id for a in plan.appointments} & {
        a.appointment_id for a in other.appointments
    }
    assert len({a.appointment_id for a in plan.appointments}) == len(plan.appointments)


def test_two_preparation_sessions_take_the_two_days_before_the_first_dose() -> None:
    calendar = clinic(policy={"preparation_sessions": 2})

    plan = planned(plan_course(calendar, bookings(), COURSE, local(calendar, MONDAY)))

    preparations = of_kind(plan, PREPARATION)
    assert [local_day(calendar, p) for p in preparations] == [date(2026, 3, 16), date(2026, 3, 17)]
    assert local_day(calendar, doses(plan)[0]) == date(2026, 3, 18)
    assert all(a.kind in (PREPARATION, MEDICINE, INTEGRATION) for a in plan.appointments)
    assert_follows_the_protocol(calendar, plan)
