"""The consultation waitlist's rules (rule 20): earliest date, order, offers, no-shows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.scheduler.domain import waitlist as rules
from services.scheduler.domain.schedule import ClientSchedule, Refused
from shared import events as ev
from tests.unit.scheduler.builders import booked_all_day, bookings, clinic, local

MONDAY = "2026-03-16"
NOW = datetime(2026, 3, 16, 8, tzinfo=UTC)
A, B, C = (uuid.UUID(int=n) for n in (1, 2, 3))


def slot(starts_at: datetime) -> ev.Appointment:
    return ev.Appointment(
        appointment_id=uuid.uuid4(),
        kind=ev.AppointmentKind.CONSULTATION,
        starts_at=starts_at,
        ends_at=starts_at + timedelta(minutes=30),
        therapist_id="ana",
    )


def offer(
    waitlist: list[uuid.UUID],
    offered_to: tuple[uuid.UUID, ...] = (),
    at: datetime = NOW,
    starts_in: timedelta = timedelta(days=3),
) -> rules.Offer | None:
    policy = clinic().policy
    return rules.offer_slot(
        "lisbon", slot(NOW + starts_in), waitlist, offered_to, policy, at, uuid.uuid4(), "d"
    )


def schedule(**fields: object) -> ClientSchedule:
    return ClientSchedule(clinic_id="lisbon", client_id=A, correlation_id="c", **fields)  # type: ignore[arg-type]


def test_the_earliest_date_is_found_past_the_four_week_horizon() -> None:
    calendar = clinic()
    # Ana is booked every day for six weeks: nothing within 28 days, then a free Monday.
    taken = bookings(therapists={"ana": booked_all_day(calendar, MONDAY, 42)})
    found = rules.earliest_consultation(calendar, taken, [], local(calendar, MONDAY, "08:00"))
    assert found is not None
    assert found.starts_at == local(calendar, "2026-04-27", "09:00")  # DST began in between


def test_no_earliest_date_when_the_preferred_times_never_open() -> None:
    calendar = clinic()
    sunday = [ev.PreferredTime.model_validate({"weekday": 6, "start": "10:00", "end": "12:00"})]
    assert rules.earliest_consultation(calendar, bookings(), sunday, NOW) is None


@given(st.lists(st.uuids(), unique=True, max_size=8), st.uuids())
def test_a_client_joins_last_and_keeps_their_place(
    waitlist: list[uuid.UUID], client: uuid.UUID
) -> None:
    place = rules.position(waitlist, client)
    if client in waitlist:
        assert waitlist[place - 1] == client
    else:
        assert place == len(waitlist) + 1


def test_a_freed_slot_goes_to_the_first_in_line_for_the_policy_time() -> None:
    made = offer([A, B, C])
    assert made is not None
    assert made.client_id == A
    assert made.expires_at == NOW + timedelta(hours=24)
    assert made.offered_to == (A,)
    assert made.appointment.kind is ev.AppointmentKind.CONSULTATION


def test_an_offer_expires_before_a_slot_that_starts_sooner_than_its_policy_time() -> None:
    made = offer([A], starts_in=timedelta(hours=5))
    assert made is not None
    assert made.expires_at == NOW + timedelta(hours=4)


def test_nothing_is_offered_to_an_empty_waitlist_or_too_late() -> None:
    assert offer([]) is None
    assert offer([A], starts_in=timedelta(minutes=30)) is None


def test_an_expired_offer_goes_to_the_next_in_line_then_to_nobody() -> None:
    policy = clinic().policy
    first = offer([A, B])
    assert first is not None
    assert rules.expire(first, NOW + timedelta(hours=23)) is None  # still open
    later = NOW + timedelta(hours=24)
    lapsed = rules.expire(first, later)
    assert lapsed is not None
    assert lapsed.status == "expired"
    second = rules.hand_on(lapsed, [A, B], policy, later, uuid.uuid4(), "d2")
    assert second is not None
    assert second.client_id == B
    assert second.offered_to == (A, B)
    assert second.appointment == first.appointment.model_copy(
        update={"appointment_id": second.appointment.appointment_id}
    )
    gone = rules.expire(second, later + timedelta(hours=24))
    assert gone is not None
    assert (
        rules.hand_on(gone, [A, B], policy, later + timedelta(hours=24), uuid.uuid4(), "d") is None
    )


def test_an_expired_used_or_lost_offer_cannot_be_accepted() -> None:
    made = offer([A])
    assert made is not None
    rules.check_acceptable(made, schedule(), NOW)  # open: fine
    with pytest.raises(rules.OfferGone, match="expired"):
        rules.check_acceptable(made, schedule(), made.expires_at)
    for status, why in (("accepted", "accepted already"), ("slot_taken", "taken")):
        used = made.model_copy(update={"status": status})
        with pytest.raises(rules.OfferGone, match=why):
            rules.check_acceptable(used, schedule(), NOW)


def test_a_client_with_a_consultation_booked_cannot_take_another() -> None:
    made = offer([A])
    assert made is not None
    booked = schedule(
        consultation=slot(NOW + timedelta(days=1)), consultation_status=ev.AppointmentStatus.BOOKED
    )
    with pytest.raises(Refused):
        rules.check_acceptable(made, booked, NOW)
    taken, settled = rules.accepted(schedule(), made)
    assert taken.consultation == made.appointment
    assert taken.consultation_status is ev.AppointmentStatus.BOOKED
    assert settled.status == "accepted"


def test_a_consultation_no_show_is_rebooked_once_then_waitlisted() -> None:
    policy = clinic().policy
    assert rules.rebook_after_no_show(schedule(), policy)
    assert not rules.rebook_after_no_show(schedule(consultation_rebooks=1), policy)
    never = clinic(policy={"consultation_no_show_rebooks": 0}).policy
    assert not rules.rebook_after_no_show(schedule(), never)
