"""Moved and cancelled sessions: their reminders move or go, and rapid changes inside the
clinic's grace period reach the client as one notice."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from shared import events as ev
from tests.integration.notifier.support import Rig, appointment, at, course, sent_at, text_of

pytestmark = pytest.mark.integration

Kind = ev.AppointmentKind
GRACE = timedelta(minutes=3)


def moved(
    rig: Rig, client_id: uuid.UUID, session: ev.Appointment, to: str
) -> tuple[ev.SessionRescheduled, ev.Appointment]:
    starts_at = at(to)
    new = session.model_copy(
        update={
            "starts_at": starts_at,
            "ends_at": starts_at + (session.ends_at - session.starts_at),
        }
    )
    event = ev.SessionRescheduled(
        **rig.fields(client_id),
        course_id=uuid.uuid4(),
        appointment=new,
        previous_starts_at=session.starts_at,
    )
    return event, new


async def test_a_rescheduled_session_takes_its_reminders_to_the_new_time(rig: Rig) -> None:
    rig.clock.set(at("2026-03-23T10:00+00:00"))
    ada = rig.person()
    client_id, _ = await rig.request(ada)
    session = appointment(Kind.INTEGRATION, at("2026-03-26T10:00+00:00"))
    await rig.publish(course(rig, client_id, session))
    await rig.mails(ada.email, 2)

    rig.clock.set(at("2026-03-23T11:00+00:00"))
    rescheduled, _ = moved(rig, client_id, session, "2026-03-28T15:00+00:00")
    await rig.publish(rescheduled)

    new_time = "Saturday 28 March 2026, 15:00 WET"
    expected = [
        ("2026-03-23T11:03+00:00", f"Your appointment has moved to {new_time}"),
        ("2026-03-27T15:00+00:00", f"Reminder: your appointment on {new_time}"),
        ("2026-03-28T13:00+00:00", f"Your appointment is coming up: {new_time}"),
    ]
    for count, (when, subject) in enumerate(expected, start=3):
        await rig.step_to(at(when))
        latest = (await rig.mails(ada.email, count))[-1]
        assert (latest["Subject"], sent_at(latest)) == (subject, at(when))
    notice = rig.mailbox.to(ada.email)[2]
    assert "moved from Thursday 26 March 2026, 10:00 WET" in text_of(notice)

    await rig.step_to(at("2026-03-29T00:00+00:00"))
    assert len(rig.mailbox.to(ada.email)) == 2 + len(expected)
    states = {(n["kind"], n["state"]) for n in await rig.notifications(client_id)}
    assert ("reminder_24h", "cancelled") in states
    assert ("reminder_2h", "cancelled") in states


async def test_rapid_changes_within_the_grace_period_reach_the_client_as_one_notice(
    rig: Rig,
) -> None:
    rig.clock.set(at("2026-03-23T10:00+00:00"))
    ada = rig.person()
    client_id, _ = await rig.request(ada)
    session = appointment(Kind.PREPARATION, at("2026-04-06T10:00+01:00"))
    await rig.publish(
        ev.SessionScheduled(**rig.fields(client_id), course_id=uuid.uuid4(), appointment=session)
    )
    for minutes, to in ((1, "2026-04-07T10:00+01:00"), (2, "2026-04-08T16:00+01:00")):
        rig.clock.set(at("2026-03-23T10:00+00:00") + timedelta(minutes=minutes))
        rescheduled, session = moved(rig, client_id, session, to)
        await rig.publish(rescheduled)

    # The first notice would have been due at 10:03; the last change restarted the wait.
    await rig.step_to(at("2026-03-23T10:04:59+00:00"))
    assert len(rig.mailbox.to(ada.email)) == 1
    await rig.step_to(at("2026-03-23T10:05+00:00"))
    [_, notice] = await rig.mails(ada.email, 2)
    # Booked and moved before the client heard of it: announced once, as booked.
    assert notice["Subject"] == "Appointment booked: Wednesday 8 April 2026, 16:00 WEST"
    assert sent_at(notice) == at("2026-03-23T10:05+00:00")
    await rig.step_to(at("2026-03-23T12:00+00:00"))
    assert len(rig.mailbox.to(ada.email)) == 2


async def test_a_session_booked_and_cancelled_within_the_grace_period_is_never_announced(
    rig: Rig,
) -> None:
    rig.clock.set(at("2026-03-23T10:00+00:00"))
    ada = rig.person()
    client_id, _ = await rig.request(ada)
    session = appointment(Kind.MEDICINE, at("2026-03-26T10:00+00:00"), 180, dose=2)
    course_id = uuid.uuid4()
    await rig.publish(
        ev.SessionScheduled(**rig.fields(client_id), course_id=course_id, appointment=session)
    )
    rig.clock.set(at("2026-03-23T10:01+00:00"))
    cancelled = ev.SessionCancelled(
        **rig.fields(client_id),
        course_id=course_id,
        appointment_id=session.appointment_id,
        kind=session.kind,
        late=False,
    )
    await rig.publish(cancelled)

    await rig.step_to(at("2026-03-27T00:00+00:00"))
    assert len(rig.mailbox.to(ada.email)) == 1  # the request's acknowledgement only
    states = {n["kind"]: n["state"] for n in await rig.notifications(client_id)}
    assert states == {
        "consultation_request_received": "sent",
        "session_booked": "cancelled",
        "session_instructions": "cancelled",
        "reminder_24h": "cancelled",
        "reminder_2h": "cancelled",
    }
