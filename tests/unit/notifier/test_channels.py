from __future__ import annotations

import uuid
from datetime import time

import pytest
from pydantic import ValidationError

from services.notifier.model import ClinicSettings, MessageKind, notification_id
from services.notifier.prefs import ContactPrefs, client_channel, readdress
from shared import events as ev
from tests.unit.notifier.samples import CLIENT, NOW, SMS, plan

APPOINTMENT = uuid.uuid4()


def test_sms_is_used_when_preferred_with_consent_and_a_phone() -> None:
    assert client_channel(SMS) == "sms"


def test_sms_is_refused_without_recorded_consent() -> None:
    prefs = SMS.model_copy(update={"sms_consent": False})
    assert client_channel(prefs) == "email"


def test_sms_is_refused_without_a_phone() -> None:
    prefs = SMS.model_copy(update={"has_phone": False})
    assert client_channel(prefs) == "email"


def test_opted_out_sms_falls_back_to_email() -> None:
    assert client_channel(SMS.model_copy(update={"opted_out": frozenset({"sms"})})) == "email"


def test_client_opted_out_of_everything_gets_nothing() -> None:
    prefs = SMS.model_copy(update={"opted_out": frozenset({"sms", "email"})})
    assert client_channel(prefs) is None
    assert (
        plan(
            ev.ScreeningCompleted(
                clinic_id="lisbon", client_id=CLIENT, occurred_at=NOW, eligible=True
            ),
            prefs,
        )
        == []
    )


def test_email_opt_out_moves_a_consenting_client_to_sms() -> None:
    prefs = SMS.model_copy(update={"preferred_channel": "email", "opted_out": frozenset({"email"})})
    assert client_channel(prefs) == "sms"


def test_opt_out_and_opt_back_in_are_honoured() -> None:
    change = {"clinic_id": "lisbon", "client_id": CLIENT, "occurred_at": NOW, "channel": "sms"}
    opted_out = SMS.updated(ev.ContactPreferencesChanged(**change, opted_out=True))
    assert client_channel(opted_out) == "email"
    assert (
        client_channel(opted_out.updated(ev.ContactPreferencesChanged(**change, opted_out=False)))
        == "sms"
    )


def test_prefs_from_a_contact_keep_earlier_opt_outs() -> None:
    contact = ev.Contact(
        name="Maria",
        email="m@example.org",
        phone="+351912345678",
        preferred_channel="sms",
        sms_consent=True,
    )
    prefs = ContactPrefs.from_contact(contact, opted_out=frozenset({"sms"}))
    assert client_channel(prefs) == "email"


def test_planned_sms_is_readdressed_to_email_after_an_opt_out() -> None:
    (message,) = [m for m in plan(_screening(), SMS)]
    moved = readdress(message, SMS.model_copy(update={"opted_out": frozenset({"sms"})}))
    assert moved is not None
    assert moved.channel == "email"
    assert moved.notification_id != message.notification_id


def test_planned_message_is_dropped_when_no_channel_is_left() -> None:
    (message,) = plan(_screening(), SMS)
    assert (
        readdress(message, SMS.model_copy(update={"opted_out": frozenset({"sms", "email"})}))
        is None
    )


def test_planned_message_on_an_allowed_channel_is_unchanged() -> None:
    (message,) = plan(_screening(), SMS)
    assert readdress(message, SMS) == message


def test_same_inputs_give_the_same_notification_id() -> None:
    first = notification_id("cause-1", MessageKind.REMINDER_2H, "sms", "client", APPOINTMENT)
    again = notification_id("cause-1", MessageKind.REMINDER_2H, "sms", "client", APPOINTMENT)
    assert first == again


def test_different_channel_gives_a_different_notification_id() -> None:
    by_sms = notification_id("cause-1", MessageKind.REMINDER_2H, "sms", "client", APPOINTMENT)
    by_email = notification_id("cause-1", MessageKind.REMINDER_2H, "email", "client", APPOINTMENT)
    assert by_sms != by_email


def test_each_appointment_and_kind_gets_its_own_notification_id() -> None:
    ids = {
        notification_id("cause-1", kind, "email", "client", appointment)
        for kind in (MessageKind.REMINDER_24H, MessageKind.REMINDER_2H)
        for appointment in (APPOINTMENT, uuid.uuid4(), None)
    }
    assert len(ids) == 6


def test_clinic_name_naming_the_treatment_is_refused() -> None:
    with pytest.raises(ValidationError, match="ketamine"):
        ClinicSettings(clinic_id="lisbon", name="Lisbon Ketamine Clinic", timezone="Europe/Lisbon")


def test_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValidationError, match="time zone"):
        ClinicSettings(clinic_id="lisbon", name="Clinic", timezone="Europe/Atlantis")


def test_send_window_must_open_before_it_closes() -> None:
    with pytest.raises(ValidationError, match="window"):
        ClinicSettings(
            clinic_id="lisbon",
            name="Clinic",
            timezone="Europe/Lisbon",
            send_window=(time(20), time(9)),
        )


def _screening() -> ev.ScreeningCompleted:
    return ev.ScreeningCompleted(
        clinic_id="lisbon", client_id=CLIENT, occurred_at=NOW, eligible=True
    )
