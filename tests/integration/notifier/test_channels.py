"""Email and SMS on real servers: consent and opt-out, refusals that are final, and
outages that are retried until the message goes, once."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared import events as ev
from shared import topics
from tests.integration.notifier.support import Rig, appointment, at, course

pytestmark = pytest.mark.integration


async def test_sms_goes_only_with_recorded_consent(rig: Rig) -> None:
    rig.clock.set(at("2026-03-23T10:00+00:00"))
    no_consent = rig.person("Ada Lovelace", preferred_channel="sms", sms_consent=False)
    consented = rig.person("Grace Hopper", preferred_channel="sms", sms_consent=True)
    await rig.request(no_consent)
    client_id, _ = await rig.request(consented)

    await rig.mails(no_consent.email)
    [text] = await rig.texts(str(consented.phone))
    await rig.settled()
    assert rig.texts_now(str(no_consent.phone)) == []
    assert rig.mailbox.to(consented.email) == []
    assert text["from"] == "+15005550006"
    assert text["account_sid"] == "AC-local"
    assert text["body"] == (
        f"{rig.clinic.name}: we have received your consultation request "
        "and will confirm a time shortly."
    )
    [sent] = await rig.outcomes(client_id, topics.NOTIFICATION_SENT)
    assert sent["value"]["channel"] == "sms"
    assert text["idempotency_key"] == sent["value"]["notification_id"]


async def test_an_sms_opt_out_is_honoured_for_messages_already_planned(rig: Rig) -> None:
    rig.clock.set(at("2026-03-23T10:00+00:00"))
    grace = rig.person("Grace Hopper", preferred_channel="sms", sms_consent=True)
    client_id, _ = await rig.request(grace)
    session = appointment(ev.AppointmentKind.INTEGRATION, at("2026-03-26T15:00+00:00"))
    await rig.publish(course(rig, client_id, session))
    await rig.texts(str(grace.phone), 2)
    planned = {n["kind"]: n["channel"] for n in await rig.notifications(client_id)}
    assert planned["reminder_24h"] == planned["reminder_2h"] == "sms"

    opt_out = ev.ContactPreferencesChanged(**rig.fields(client_id), channel="sms", opted_out=True)
    await rig.publish(opt_out)
    # Each reminder when it falls due (one found half a day late would be too late to send).
    await rig.step_to(at("2026-03-25T15:00+00:00"))
    await rig.step_to(at("2026-03-26T13:00+00:00"))

    reminders = await rig.mails(grace.email, 2)
    assert [m["Subject"] for m in reminders] == [
        "Reminder: your appointment on Thursday 26 March 2026, 15:00 WET",
        "Your appointment is coming up: Thursday 26 March 2026, 15:00 WET",
    ]
    assert len(rig.texts_now(str(grace.phone))) == 2  # acknowledgement and confirmation only
    sent = await rig.outcomes(client_id, topics.NOTIFICATION_SENT, expect=4)
    by_kind = {s["value"]["message_kind"]: s["value"] for s in sent}
    assert by_kind["reminder_2h"]["channel"] == "email"
    assert reminders[1]["Message-ID"] == f"<{by_kind['reminder_2h']['notification_id']}@kap>"


async def test_an_address_the_mail_server_refuses_fails_at_once_and_for_good(rig: Rig) -> None:
    rig.clock.set(at("2026-03-23T10:00+00:00"))
    refused = rig.person(email=f"nobody.{rig.unique}@reject.example")
    client_id, request = await rig.request(refused)

    [failed] = await rig.outcomes(client_id, topics.NOTIFICATION_FAILED)
    assert failed["value"]["permanent"] is True
    assert failed["value"]["reason"] == "smtp recipient refused (550)"
    assert failed["value"]["cause_event_id"] == request.id
    assert failed["headers"]["ce_correlationid"] == request.correlation_id
    [notification] = await rig.notifications(client_id)
    assert (notification["state"], notification["attempts"]) == ("failed", 1)


async def test_a_mail_server_outage_is_retried_with_backoff_and_the_mail_sent_once(
    rig: Rig,
) -> None:
    rig.clock.set(at("2026-03-23T10:00+00:00"))
    ada = rig.person()
    rig.mailbox.stop()
    try:
        client_id, _ = await rig.request(ada)

        first = await rig.attempted(client_id, 1)
        assert (first["state"], first["reason"]) == (
            "planned",
            "smtp unavailable (SMTPConnectError)",
        )
        rig.clock.advance(timedelta(seconds=59))
        await rig.settled()  # not due again before a minute has passed
        assert (await rig.attempted(client_id, 1))["state"] == "planned"
        rig.clock.advance(timedelta(seconds=1))
        await rig.attempted(client_id, 2)
    finally:
        rig.mailbox.start()
    rig.clock.advance(timedelta(minutes=2))
    await rig.mails(ada.email)
    await rig.settled()
    assert len(rig.mailbox.to(ada.email)) == 1
    [notification] = await rig.notifications(client_id)
    assert (notification["state"], notification["attempts"]) == ("sent", 3)
    assert await rig.outcomes(client_id, topics.NOTIFICATION_FAILED, expect=0) == []


async def test_an_sms_provider_outage_is_retried_and_a_refused_number_fails_for_good(
    rig: Rig,
) -> None:
    rig.clock.set(at("2026-03-23T10:00+00:00"))
    grace = rig.person("Grace Hopper", preferred_channel="sms", sms_consent=True)
    invalid = rig.person(
        "Alan Turing", phone="+15005550001", preferred_channel="sms", sms_consent=True
    )
    rig.sms.fail_next(2)
    client_id, _ = await rig.request(grace)
    await rig.attempted(client_id, 1)
    rig.clock.advance(timedelta(minutes=1))
    await rig.attempted(client_id, 2)
    rig.clock.advance(timedelta(minutes=2))
    notification = await rig.attempted(client_id, 3)
    [text] = await rig.texts(str(grace.phone))
    assert notification["state"] == "sent"
    assert text["idempotency_key"] == notification["notification_id"]

    refused_id, _ = await rig.request(invalid)
    [failed] = await rig.outcomes(refused_id, topics.NOTIFICATION_FAILED)
    assert failed["value"]["permanent"] is True
    assert failed["value"]["reason"] == "sms provider answered 400 (code 21211)"
