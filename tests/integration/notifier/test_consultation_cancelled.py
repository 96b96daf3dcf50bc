"""A consultation the clinic cancels: the client hears of it at once, by the channel they
chose, in the clinic's time, and is no longer reminded of it."""

from __future__ import annotations

import uuid

import pytest

from services.notifier.model import phi_terms_in
from shared import events as ev
from shared import topics
from tests.integration.notifier.support import Rig, appointment, at, sent_at, text_of

pytestmark = pytest.mark.integration

BOSTON = {"timezone": "America/New_York"}
# 15:00 UTC on Thursday 26 March 2026 is 11:00 in Boston (on summer time since 8 March).
STARTS = "2026-03-26T15:00+00:00"
SHOWN = "Thursday 26 March 2026, 11:00 EDT"


async def booked_then_cancelled(rig: Rig, client_id: uuid.UUID) -> ev.ConsultationCancelled:
    consultation = appointment(ev.AppointmentKind.CONSULTATION, at(STARTS), 30)
    await rig.publish(ev.ConsultationBooked(**rig.fields(client_id), appointment=consultation))
    rig.clock.set(at("2026-03-23T15:00+00:00"))
    cancelled = ev.ConsultationCancelled(
        **rig.fields(client_id),
        appointment_id=consultation.appointment_id,
        starts_at=consultation.starts_at,
    )
    await rig.publish(cancelled)
    return cancelled


@pytest.mark.parametrize("clinic_spec", [BOSTON], indirect=True)
async def test_a_cancelled_consultation_is_told_by_email_in_the_clinics_time(rig: Rig) -> None:
    rig.clock.set(at("2026-03-23T14:00+00:00"))
    ada = rig.person()
    client_id, _ = await rig.request(ada)
    await booked_then_cancelled(rig, client_id)

    mails = await rig.mails(ada.email, 3)
    notice = mails[-1]
    assert notice["Subject"] == f"Your consultation on {SHOWN} has been cancelled"
    assert phi_terms_in(notice["Subject"]) == []
    assert sent_at(notice) == at("2026-03-23T15:00+00:00")  # at once
    body = text_of(notice)
    assert "Dear Ada," in body
    assert f"free consultation on {SHOWN} has been cancelled" in body
    sent = await rig.outcomes(client_id, topics.NOTIFICATION_SENT, expect=3)
    assert [s["value"]["message_kind"] for s in sent][-1] == "consultation_cancelled"

    # Past the consultation: neither reminder went, and nothing else did.
    await rig.step_to(at("2026-03-26T16:00+00:00"))
    assert len(rig.mailbox.to(ada.email)) == 3
    states = {n["kind"]: n["state"] for n in await rig.notifications(client_id)}
    assert states["consultation_cancelled"] == "sent"
    assert states["reminder_24h"] == states["reminder_2h"] == "cancelled"


@pytest.mark.parametrize("clinic_spec", [BOSTON], indirect=True)
async def test_a_client_who_chose_sms_is_texted_of_the_cancellation_and_mailed_nothing(
    rig: Rig,
) -> None:
    rig.clock.set(at("2026-03-23T14:00+00:00"))
    grace = rig.person("Grace Hopper", preferred_channel="sms", sms_consent=True)
    client_id, _ = await rig.request(grace)
    await booked_then_cancelled(rig, client_id)

    texts = await rig.texts(str(grace.phone), 3)
    assert texts[-1]["body"] == (
        f"{rig.clinic.name}: we are sorry, your consultation on {SHOWN} has been cancelled. "
        "Please reply or call us to arrange another time."
    )
    assert phi_terms_in(texts[-1]["body"]) == []
    await rig.settled()
    assert rig.mailbox.to(grace.email) == []
