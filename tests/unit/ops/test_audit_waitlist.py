"""The auditor's counts of booked boosters and the consultation waitlist, from the topics.

`booster_sessions_booked`, `waitlisted` and `waitlist_offers_taken` are reported in the
DEMO line (not failures): each counts distinct facts, so a republished one is one, and
a client waiting on the list is no lost request.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest

from ops.audit import Findings
from services.notifier.model import MessageKind
from shared import events as ev
from tests.unit.ops.scenario import Clean, appointment, clean, utc
from tests.unit.ops.test_audit import ZERO, counts, run


@pytest.fixture
def case() -> Clean:
    return clean()


def waits(case: Clean, client: uuid.UUID, at: datetime, times: int = 1) -> None:
    """A request no consultation fitted: the failure with its earliest date, a waitlist place."""
    history = case.history
    contact = ev.Contact(name="Waiting Person", email="waiting@example.test")
    requested = history.add(ev.ConsultationRequested(**history.base(client, at), contact=contact))
    history.send(requested, MessageKind.CONSULTATION_REQUEST_RECEIVED, at)
    earliest = at + timedelta(days=40)
    history.add(
        ev.ConsultationBookingFailed(
            **history.base(client, at),
            reason="no consultation fits the client's times within 28 days",
            earliest_available_at=earliest,
        )
    )
    waitlisted = ev.ConsultationWaitlisted(
        **history.base(client, at), position=1, joined_at=at, earliest_available_at=earliest
    )
    event_id = str(uuid.uuid4())
    for _ in range(times):  # more than once: republished, one fact
        history.add(waitlisted, event_id)


def offered(case: Clean, client: uuid.UUID, at: datetime) -> tuple[uuid.UUID, ev.Appointment]:
    history, offer_id = case.history, uuid.uuid4()
    slot = appointment(ev.AppointmentKind.CONSULTATION, at + timedelta(days=5), 30, "t-2")
    history.add(
        ev.ConsultationSlotOffered(
            **history.base(client, at),
            offer_id=offer_id,
            appointment=slot,
            expires_at=at + timedelta(hours=24),
            accept_url="http://scheduler.test/v1/offers/token/accept",
        )
    )
    return offer_id, slot


def accepted(
    case: Clean, client: uuid.UUID, offer_id: uuid.UUID, slot: ev.Appointment, at: datetime
) -> None:
    history = case.history
    history.consultation(client, at, slot)
    fact = ev.ConsultationOfferAccepted(
        **history.base(client, at), offer_id=offer_id, appointment=slot
    )
    history.add(fact, f"accepted-{offer_id}")
    history.add(fact, f"accepted-{offer_id}")  # republished: one offer taken


def findings(case: Clean) -> Findings:
    return run(case)


def test_a_waitlisted_client_who_takes_an_offer_is_counted_and_is_no_failure(case: Clean) -> None:
    client = uuid.uuid4()
    waits(case, client, utc(5, 23, 8), times=2)
    offer_id, slot = offered(case, client, utc(5, 24, 8))
    accepted(case, client, offer_id, slot, utc(5, 24, 9))
    found = findings(case)
    assert (found.waitlisted, found.waitlist_offers_taken) == (1, 1)
    assert counts(case) == ZERO


def test_each_client_joining_the_waitlist_counts(case: Clean) -> None:
    for hour in (8, 9, 10):
        waits(case, uuid.uuid4(), utc(5, 23, hour))
    assert findings(case).waitlisted == 3
    assert counts(case) == ZERO  # waiting is an answer: no request is lost


def test_an_offer_not_taken_is_not_counted(case: Clean) -> None:
    client = uuid.uuid4()
    waits(case, client, utc(5, 23, 8))
    offer_id, _ = offered(case, client, utc(5, 24, 8))
    case.history.add(
        ev.ConsultationOfferLapsed(
            **case.history.base(client, utc(5, 25, 8)), offer_id=offer_id, lapsed_as="expired"
        )
    )
    found = findings(case)
    assert (found.waitlisted, found.waitlist_offers_taken) == (1, 0)


def test_booster_sessions_booked_are_counted_once_each(case: Clean) -> None:
    history = case.history
    for number, event_id in ((1, "booster-session-1"), (1, "booster-session-1"), (2, None)):
        due = utc(6, 20, 8) + timedelta(days=14 * (number - 1))
        history.add(
            ev.BoosterSessionBooked(
                **history.base(case.client, due),
                course_id=case.course_id,
                booster_number=number,
                due_at=due,
                appointments=(),
            ),
            event_id,
        )
    assert findings(case).booster_sessions_booked == 2


def test_a_clean_history_booked_no_booster_session_and_waitlisted_nobody(case: Clean) -> None:
    found = findings(case)
    assert (found.booster_sessions_booked, found.waitlisted, found.waitlist_offers_taken) == (
        0,
        0,
        0,
    )
