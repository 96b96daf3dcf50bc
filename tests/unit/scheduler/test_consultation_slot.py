from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from services.scheduler.domain.planner import find_consultation_slot
from shared.events import PreferredTime
from tests.unit.scheduler.builders import (
    booked_all_day,
    bookings,
    busy,
    clinic,
    local,
    therapist,
    wall,
)

MONDAY = "2026-03-16"


def test_earliest_slot_is_at_opening_with_the_first_free_therapist() -> None:
    calendar = clinic(therapists=[therapist("ana"), therapist("rui")])
    taken = bookings(
        therapists={
            "ana": busy((local(calendar, MONDAY, "09:00"), local(calendar, MONDAY, "10:00")))
        }
    )

    slot = find_consultation_slot(calendar, taken, [], local(calendar, MONDAY, "08:00"))

    assert slot is not None
    assert slot.therapist_id == "rui"
    assert slot.starts_at == local(calendar, MONDAY, "09:00")
    assert slot.ends_at - slot.starts_at == timedelta(minutes=30)
    assert slot.room_id is None


def test_slot_starts_on_the_grid_after_not_before() -> None:
    calendar = clinic()

    slot = find_consultation_slot(calendar, bookings(), [], local(calendar, MONDAY, "10:07"))

    assert slot is not None
    assert wall(calendar, slot.starts_at).time() == time(10, 15)


def test_slot_lies_inside_a_preferred_weekly_window() -> None:
    calendar = clinic()
    thursday_afternoon = PreferredTime(weekday=3, start=time(14), end=time(16))

    slot = find_consultation_slot(
        calendar, bookings(), [thursday_afternoon], local(calendar, MONDAY, "08:00")
    )

    assert slot is not None
    assert wall(calendar, slot.starts_at) == datetime(2026, 3, 19, 14, tzinfo=calendar.tz)


def test_preferred_window_too_short_for_a_consultation_is_never_used() -> None:
    calendar = clinic()
    too_short = PreferredTime(weekday=0, start=time(9), end=time(9, 20))

    slot = find_consultation_slot(calendar, bookings(), [too_short], local(calendar, MONDAY))

    assert slot is None


def test_preferred_window_outside_opening_hours_gives_no_slot() -> None:
    calendar = clinic()
    evening = PreferredTime(weekday=2, start=time(18), end=time(21))

    assert find_consultation_slot(calendar, bookings(), [evening], local(calendar, MONDAY)) is None


def test_closed_days_are_skipped() -> None:
    calendar = clinic(closures=("2026-03-16", "2026-03-17"))

    slot = find_consultation_slot(calendar, bookings(), [], local(calendar, MONDAY))

    assert slot is not None
    assert wall(calendar, slot.starts_at).date().isoformat() == "2026-03-18"


def test_therapist_time_off_and_the_clients_own_bookings_are_respected() -> None:
    lisbon = clinic()
    morning_off = busy((local(lisbon, MONDAY, "09:00"), local(lisbon, MONDAY, "12:00")))
    calendar = clinic(therapists=[therapist("ana", time_off=morning_off)])
    client_busy = busy((local(calendar, MONDAY, "12:00"), local(calendar, MONDAY, "13:00")))

    slot = find_consultation_slot(
        calendar, bookings(client=client_busy), [], local(calendar, MONDAY)
    )

    assert slot is not None
    assert wall(calendar, slot.starts_at).time() == time(13)


def test_a_therapist_is_only_offered_inside_their_own_availability() -> None:
    calendar = clinic(therapists=[therapist("ana", days=(3,))])

    slot = find_consultation_slot(calendar, bookings(), [], local(calendar, MONDAY))

    assert slot is not None
    assert wall(calendar, slot.starts_at).weekday() == 3


def test_no_slot_inside_the_horizon_gives_none() -> None:
    calendar = clinic()
    full = bookings(therapists={"ana": booked_all_day(calendar, MONDAY, 30)})

    assert (
        find_consultation_slot(calendar, full, [], local(calendar, MONDAY), horizon_days=28) is None
    )


def test_preferred_wall_time_maps_to_different_utc_hours_across_dst() -> None:
    calendar = clinic(timezone="America/New_York")
    friday_nine = PreferredTime(weekday=4, start=time(9), end=time(10))

    before = find_consultation_slot(
        calendar, bookings(), [friday_nine], datetime(2026, 3, 2, tzinfo=UTC)
    )
    after = find_consultation_slot(
        calendar, bookings(), [friday_nine], datetime(2026, 3, 9, tzinfo=UTC)
    )

    assert before is not None
    assert after is not None
    assert before.starts_at == datetime(2026, 3, 6, 14, tzinfo=UTC)  # EST, UTC-5
    assert after.starts_at == datetime(2026, 3, 13, 13, tzinfo=UTC)  # EDT, UTC-4
