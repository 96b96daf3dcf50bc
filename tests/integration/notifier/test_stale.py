"""Only true messages (issue 14, fault 9): a reminder or instructions are checked against the
notifier's latest view of the appointment when they are sent, never go out after the
session started, and urgent clinical alerts never wait."""

from __future__ import annotations

import uuid

import pytest

from services.notifier.queue import DeliveryQueue
from shared import events as ev
from shared import topics
from tests.integration.notifier.support import (
    Rig,
    appointment,
    at,
    course,
    eventually,
    sent_at,
    text_of,
)

pytestmark = pytest.mark.integration

Kind = ev.AppointmentKind


async def _ended(rig: Rig, client_id: uuid.UUID, wanted: set[str]) -> dict[str, str]:
    """The states of the notifications `wanted` (by id or by kind) once none is still
    planned or being sent, by kind."""

    async def settled() -> dict[str, str] | None:
        states = {
            n["kind"]: n["state"]
            for n in await rig.notifications(client_id)
            if n["notification_id"] in wanted or n["kind"] in wanted
        }
        busy = len(states) < len(wanted) or {"planned", "sending"} & set(states.values())
        return None if busy else states

    return await eventually(settled, f"{sorted(wanted)} to end", wait_s=15)


async def test_a_reminder_held_while_its_session_moved_is_not_sent_for_the_old_time(
    rig: Rig,
) -> None:
    rig.clock.set(at("2026-03-23T10:00+00:00"))
    ada = rig.person()
    client_id, _ = await rig.request(ada)
    session = appointment(Kind.INTEGRATION, at("2026-03-26T15:00+00:00"))
    await rig.publish(course(rig, client_id, session))
    await rig.mails(ada.email, 2)

    # A replica claims the 24 h reminder and dies before sending it...
    due = at("2026-03-25T15:00+00:00")
    [claim] = await DeliveryQueue(rig.redis).claim_due(rig.clinic.id, due, limit=1, lease_ms=1500)
    assert claim.message.kind == "reminder_24h"
    # ...while the session moves to Saturday: the held reminder is not planned any
    # more, so planning cannot cancel it; its lease runs out and it is sent again.
    rig.clock.set(at("2026-03-23T11:00+00:00"))
    new_start = at("2026-03-28T15:00+00:00")
    moved = session.model_copy(update={"starts_at": new_start, "ends_at": new_start})
    await rig.publish(
        ev.SessionRescheduled(
            **rig.fields(client_id),
            course_id=uuid.uuid4(),
            appointment=moved,
            previous_starts_at=session.starts_at,
        )
    )
    rig.clock.set(due)
    states = await _ended(rig, client_id, {str(claim.message.notification_id)})

    old_time = "Thursday 26 March 2026, 15:00 WET"
    subjects = [m["Subject"] for m in rig.mailbox.to(ada.email)]
    assert not [s for s in subjects if s.startswith("Reminder") and old_time in s], subjects
    assert states["reminder_24h"] == "skipped"
    [failed] = [
        m["value"]
        for m in await rig.outcomes(client_id, topics.NOTIFICATION_FAILED)
        if m["value"]["notification_id"] == str(claim.message.notification_id)
    ]
    assert failed["permanent"] is True
    assert failed["reason"].startswith("stale: ")
    assert failed["appointment_id"] == str(session.appointment_id)
    assert failed["refers_to"] == "2026-03-26T15:00:00Z"


async def test_no_reminder_or_instructions_go_out_after_the_session_started(rig: Rig) -> None:
    rig.clock.set(at("2026-03-23T10:00+00:00"))
    ada = rig.person()
    client_id, _ = await rig.request(ada)
    session = appointment(Kind.MEDICINE, at("2026-03-26T10:00+00:00"), 180, dose=1)
    await rig.publish(course(rig, client_id, session))
    await rig.mails(ada.email, 2)

    # The notifier looks again only once the session is under way (an outage, or a
    # clock far faster than its polling): all it had planned is no longer true.
    rig.clock.set(at("2026-03-26T10:30+00:00"))
    ahead = {"session_instructions", "reminder_24h", "reminder_2h"}
    states = await _ended(rig, client_id, ahead)

    assert states == dict.fromkeys(ahead, "skipped")
    assert len(rig.mailbox.to(ada.email)) == 2
    failed = [
        m["value"]
        for m in await rig.outcomes(client_id, topics.NOTIFICATION_FAILED, expect=3)
        if m["value"]["message_kind"] in ahead
    ]
    assert len(failed) == 3
    assert all(f["permanent"] and f["reason"].startswith("stale: ") for f in failed)


async def test_a_clinical_alert_goes_to_staff_at_once_in_the_middle_of_the_night(
    rig: Rig,
) -> None:
    rig.clock.set(at("2026-03-23T23:30+00:00"))  # 23:30 in Lisbon: the send window is shut
    client_id = uuid.uuid4()
    await rig.publish(
        ev.ClinicalAlertRaised(
            **rig.fields(client_id),
            reason="phq9_item9_positive",
            phq9_item9=2,
            raised_during="enrolment",
        )
    )
    [alert] = await rig.mails(rig.clinic.staff_email)
    assert str(client_id) in text_of(alert)
    assert sent_at(alert) == at("2026-03-23T23:30+00:00")
