"""A client's journey through the notifier on real Kafka, Redis and SMTP: what arrives in
the mailbox, when by the clinic's clock, and what the notifier publishes about it."""

from __future__ import annotations

import uuid

import pytest

from shared import events as ev
from shared import topics
from tests.integration.notifier.support import Rig, appointment, at, course, sent_at, text_of

pytestmark = pytest.mark.integration

Kind = ev.AppointmentKind
REMINDER = "Reminder: your appointment on "
COMING_UP = "Your appointment is coming up: "


async def test_a_consultation_request_is_acknowledged_by_email_at_once(rig: Rig) -> None:
    rig.clock.set(at("2026-03-23T10:00+00:00"))
    ada = rig.person()
    client_id, request = await rig.request(ada)

    [mail] = await rig.mails(ada.email)
    assert mail["Subject"] == f"Your consultation request at {rig.clinic.name}"
    assert mail["From"] == f"{rig.clinic.name} <notifications@kap.example>"
    assert "Dear Ada," in text_of(mail)
    assert sent_at(mail) == rig.clock.now()

    [sent] = await rig.outcomes(client_id, topics.NOTIFICATION_SENT)
    assert mail["Message-ID"] == f"<{sent['value']['notification_id']}@kap>"
    assert sent["value"]["message_kind"] == "consultation_request_received"
    assert sent["value"]["channel"] == "email"
    assert sent["value"]["cause_event_id"] == request.id
    assert sent["headers"]["ce_causationid"] == request.id
    assert sent["headers"]["ce_correlationid"] == request.correlation_id
    assert sent["headers"]["ce_source"] == "/kap/notifier"


async def test_a_booked_course_is_confirmed_and_each_reminder_arrives_on_time_in_clinic_time(
    rig: Rig,
) -> None:
    # Monday 23 March 2026 in Lisbon; clocks go forward on Sunday 29 March.
    rig.clock.set(at("2026-03-23T10:00+00:00"))
    ada = rig.person()
    client_id, _ = await rig.request(ada)
    preparation = appointment(Kind.PREPARATION, at("2026-03-26T10:00+00:00"))
    dose = appointment(Kind.MEDICINE, at("2026-03-31T10:00+01:00"), 180, dose=1)
    integration = appointment(Kind.INTEGRATION, at("2026-04-01T10:00+01:00"))
    await rig.publish(course(rig, client_id, preparation, dose, integration))

    subject = f"Your appointments at {rig.clinic.name} are booked"
    [confirmation] = [m for m in await rig.mails(ada.email, 2) if m["Subject"] == subject]
    body = text_of(confirmation)
    assert "- Thursday 26 March 2026, 10:00 WET: preparation session (60 minutes)" in body
    assert "- Tuesday 31 March 2026, 10:00 WEST: medicine session (180 minutes)" in body
    assert "- Wednesday 1 April 2026, 10:00 WEST: integration session (60 minutes)" in body

    # (when, what the client reads): 24 h before on the clinic's calendar; 2 h
    # before but not before the window opens at 09:00; instructions 48 h before.
    prep, dosing, integ = (
        "Thursday 26 March 2026, 10:00 WET",
        "Tuesday 31 March 2026, 10:00 WEST",
        "Wednesday 1 April 2026, 10:00 WEST",
    )
    expected = [
        ("2026-03-25T10:00+00:00", f"{REMINDER}{prep}"),
        ("2026-03-26T09:00+00:00", f"{COMING_UP}{prep}"),
        ("2026-03-29T10:00+01:00", f"Preparing for your appointment on {dosing}"),
        ("2026-03-30T10:00+01:00", f"{REMINDER}{dosing}"),
        ("2026-03-31T09:00+01:00", f"{COMING_UP}{dosing}"),
        ("2026-03-31T10:00+01:00", f"{REMINDER}{integ}"),
        ("2026-04-01T09:00+01:00", f"{COMING_UP}{integ}"),
    ]
    planned = await rig.notifications(client_id)
    assert sorted(n["send_at"] for n in planned if n["state"] == "planned") == sorted(
        at(when).isoformat().replace("+00:00", "Z") for when, _ in expected
    )
    for count, (when, subject) in enumerate(expected, start=3):
        await rig.step_to(at(when))
        latest = (await rig.mails(ada.email, count))[-1]
        assert (latest["Subject"], sent_at(latest)) == (subject, at(when))
    assert len(rig.mailbox.to(ada.email)) == 2 + len(expected)
    instructions = text_of(rig.mailbox.to(ada.email)[4])
    assert "No food from 08:00 (2 hours before) and no liquids from 09:30" in instructions


async def test_a_redelivered_event_sends_nothing_twice(rig: Rig) -> None:
    rig.clock.set(at("2026-03-23T10:00+00:00"))
    ada = rig.person()
    client_id = uuid.uuid4()
    request = ev.ConsultationRequested(**rig.fields(client_id), contact=ada)
    envelope = await rig.publish(request)
    [first] = await rig.mails(ada.email)

    # The same message again (a redelivery after a lost commit), twice, then a
    # repeat request behind it on the same partition: once that one is handled,
    # so are the copies.
    await rig.inputs.publish(request, envelope)
    await rig.inputs.publish(request, envelope)
    repeat = ev.ConsultationRequested(**rig.fields(client_id), contact=ada, repeat_request=True)
    await rig.publish(repeat)
    mails = await rig.mails(ada.email, 2)
    await rig.settled()

    assert [m["Message-ID"] for m in rig.mailbox.to(ada.email)].count(first["Message-ID"]) == 1
    assert "getting in touch again" in text_of(mails[1])
    assert len(rig.mailbox.to(ada.email)) == 2
    sent = await rig.outcomes(client_id, topics.NOTIFICATION_SENT, expect=2)
    assert len(sent) == 2
    assert len({s["headers"]["ce_id"] for s in sent}) == 2


async def test_a_clinical_alert_reaches_staff_at_once_even_at_night(rig: Rig) -> None:
    night = at("2026-03-24T02:30+00:00")
    rig.clock.set(night)
    client_id = uuid.uuid4()  # staff are told even of a client the notifier never heard of
    alert = ev.ClinicalAlertRaised(
        **rig.fields(client_id),
        reason="phq9_item9_positive",
        phq9_item9=2,
        raised_during="enrolment",
    )
    await rig.publish(alert)

    [mail] = await rig.mails(rig.clinic.staff_email)
    assert mail["Subject"] == "Urgent: clinical alert for a client"
    assert sent_at(mail) == night
    body = text_of(mail)
    assert str(client_id) in body
    assert f"/clinics/{rig.clinic.id}/clients/{client_id}/intake" in body
    assert "Tuesday 24 March 2026, 02:30 WET" in body
    [sent] = await rig.outcomes(client_id, topics.NOTIFICATION_SENT)
    assert sent["value"]["message_kind"] == "clinical_alert"


async def test_operators_see_what_was_planned_and_sent_without_contact_details(rig: Rig) -> None:
    rig.clock.set(at("2026-03-23T10:00+00:00"))
    ada = rig.person()
    client_id, request = await rig.request(ada)
    await rig.mails(ada.email)
    await rig.settled()

    [notification] = await rig.notifications(client_id)
    assert notification["kind"] == "consultation_request_received"
    assert notification["state"] == "sent"
    assert notification["channel"] == notification["sent_channel"] == "email"
    assert notification["cause_event_id"] == request.id
    assert notification["attempts"] == 1
    listing = str(await rig.notifications(client_id))
    assert ada.email not in listing
    assert "Ada" not in listing

    path = f"/v1/clinics/{rig.clinic.id}/clients/{client_id}/notifications"
    assert (await rig.http.get(path)).status_code == 401
    assert (await rig.http.get(path, headers={"X-API-Key": "wrong"})).status_code == 404
