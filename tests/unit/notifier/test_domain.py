from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Literal

import pytest

from services.notifier.appointment_facts import appointment_facts, superseded_appointments
from services.notifier.domain import messages_for
from services.notifier.model import ClinicSettings, MessageKind
from services.notifier.prefs import ContactPrefs
from shared import events as ev
from tests.unit.notifier.samples import (
    CLINIC,
    CONSULTATION,
    COURSE,
    DOSE_1,
    EMAIL,
    INTEGRATION,
    NOW,
    PREPARATION,
    SMS,
    at,
    course_booked,
    event_fields,
    plan,
)

Kind = MessageKind


def test_clinical_alert_goes_to_staff_by_email_at_once_even_at_night() -> None:
    midnight = at("2026-03-23T23:45+00:00")
    alert = ev.ClinicalAlertRaised(
        **event_fields(midnight),
        reason="phq9_item9_positive",
        phq9_item9=3,
        raised_during="session",
    )
    message, escalation = plan(
        alert, SMS.model_copy(update={"opted_out": frozenset({"email", "sms"})}), midnight
    )
    assert (message.kind, message.recipient, message.channel) == (
        Kind.CLINICAL_ALERT,
        "staff",
        "email",
    )
    assert message.send_at == midnight
    # Unless someone acknowledges it, on-call hears of it 15 minutes later, at night too.
    assert (escalation.kind, escalation.recipient, escalation.channel) == (
        Kind.CLINICAL_ALERT_ESCALATION,
        "on_call",
        "email",
    )
    assert escalation.send_at == midnight + timedelta(minutes=15)


def test_an_alert_escalates_after_the_clinic_s_own_time() -> None:
    alert = ev.ClinicalAlertRaised(
        **event_fields(), reason="phq9_item9_positive", phq9_item9=1, raised_during="session"
    )
    clinic = CLINIC.model_copy(update={"alert_escalation_after": timedelta(minutes=5)})
    _, escalation = messages_for(alert, EMAIL, clinic, NOW, cause_event_id="alert-9")
    assert escalation.send_at == NOW + timedelta(minutes=5)
    assert escalation.context["alert_id"] == "alert-9"
    assert escalation.context["waited_minutes"] == 5


def test_clinical_alert_names_the_client_record_but_not_the_scores() -> None:
    alert = ev.ClinicalAlertRaised(
        **event_fields(), reason="phq9_item9_positive", phq9_item9=3, raised_during="enrolment"
    )
    message, _ = plan(alert)
    assert message.context == {
        "clinic_name": CLINIC.name,
        "client_id": str(alert.client_id),
        "intake_record_path": f"/clinics/lisbon/clients/{alert.client_id}/intake",
        "raised_during": "enrolment",
        "reason": "phq9_item9_positive",
        "raised_at": "Monday 23 March 2026, 10:00 WET",
    }


@pytest.mark.parametrize(
    ("reason", "during"),
    [("blood_pressure_over_limit", "check_in"), ("severe_adverse_event", "session")],
)
def test_check_in_and_session_record_alerts_reach_staff_at_once_without_measurements(
    reason: Literal["blood_pressure_over_limit", "severe_adverse_event"],
    during: Literal["check_in", "session"],
) -> None:
    alert = ev.ClinicalAlertRaised(
        **event_fields(), reason=reason, raised_during=during, appointment_id=uuid.uuid4()
    )
    message, escalation = plan(alert)
    assert escalation.kind == Kind.CLINICAL_ALERT_ESCALATION  # every alert needs an owner
    assert (message.kind, message.recipient, message.channel) == (
        Kind.CLINICAL_ALERT,
        "staff",
        "email",
    )
    assert message.send_at == NOW
    assert message.context["reason"] == reason


def test_course_booked_plans_confirmation_instructions_and_reminders() -> None:
    messages = plan(course_booked())
    kinds = sorted((m.kind, m.appointment_id) for m in messages)
    assert kinds == sorted(
        [(Kind.COURSE_BOOKED, None), (Kind.SESSION_INSTRUCTIONS, DOSE_1.appointment_id)]
        + [
            (reminder, appt.appointment_id)
            for reminder in (Kind.REMINDER_24H, Kind.REMINDER_2H)
            for appt in (PREPARATION, DOSE_1, INTEGRATION)
        ]
    )
    confirmation = next(m for m in messages if m.kind == Kind.COURSE_BOOKED)
    assert confirmation.send_at == NOW


def test_session_instructions_go_48_hours_before_the_medicine_session() -> None:
    (instructions,) = [m for m in plan(course_booked()) if m.kind == Kind.SESSION_INSTRUCTIONS]
    assert instructions.send_at == at("2026-03-30T10:00+01:00")
    assert instructions.context["no_food_from"] == "08:00"
    assert instructions.context["no_liquids_from"] == "09:30"


def test_course_confirmation_lists_the_whole_plan_in_clinic_time() -> None:
    (confirmation,) = [m for m in plan(course_booked()) if m.kind == Kind.COURSE_BOOKED]
    sessions = confirmation.context["sessions"]
    assert isinstance(sessions, list)
    assert [s["starts_at"] for s in sessions if isinstance(s, dict)] == [
        "Monday 30 March 2026, 10:00 WEST",
        "Wednesday 1 April 2026, 10:00 WEST",
        "Thursday 2 April 2026, 10:00 WEST",
    ]


def test_reminders_too_late_for_their_time_are_left_to_the_confirmation() -> None:
    now = at("2026-03-26T10:00+00:00")  # consultation at 15:00 today
    booked = ev.ConsultationBooked(**event_fields(now), appointment=CONSULTATION)
    messages = plan(booked, now=now)
    assert [(m.kind, m.send_at) for m in messages] == [
        (Kind.CONSULTATION_BOOKED, now),
        (Kind.REMINDER_2H, at("2026-03-26T13:00+00:00")),
    ]


def test_late_instructions_still_go_before_a_medicine_session() -> None:
    evening = at("2026-03-31T21:00+01:00")  # the session is tomorrow 10:00; 48 h have passed
    moved = ev.SessionRescheduled(
        **event_fields(evening),
        course_id=COURSE,
        appointment=DOSE_1,
        previous_starts_at=NOW,
    )
    (instructions,) = [m for m in plan(moved, now=evening) if m.kind == Kind.SESSION_INSTRUCTIONS]
    assert instructions.send_at == at("2026-04-01T09:00+01:00")


def test_client_messages_use_the_preferred_channel() -> None:
    assert {m.channel for m in plan(course_booked(), SMS)} == {"sms"}
    assert {m.channel for m in plan(course_booked(), EMAIL)} == {"email"}


def test_screening_outcome_carries_no_contraindication() -> None:
    screening = ev.ScreeningCompleted(
        **event_fields(),
        eligible=False,
        contraindications=(
            ev.Contraindication.PSYCHOSIS_OR_MANIA,
            ev.Contraindication.PREGNANCY_OR_BREASTFEEDING,
        ),
    )
    (message,) = plan(screening)
    assert message.context == {"clinic_name": CLINIC.name, "eligible": False}


def test_screening_outcome_at_night_waits_for_the_send_window() -> None:
    night = at("2026-03-23T22:30+00:00")
    (message,) = plan(ev.ScreeningCompleted(**event_fields(), eligible=True), now=night)
    assert message.send_at == at("2026-03-24T09:00+00:00")


def test_change_notices_wait_for_the_grace_period() -> None:
    cancelled = ev.SessionCancelled(
        **event_fields(),
        course_id=COURSE,
        appointment_id=DOSE_1.appointment_id,
        kind=DOSE_1.kind,
        late=False,
    )
    (notice,) = plan(cancelled)
    assert notice.kind == Kind.SESSION_CANCELLED
    assert notice.send_at == NOW + timedelta(minutes=3)
    assert notice.slot == f"{DOSE_1.appointment_id}/notice"


def test_rescheduling_supersedes_the_sessions_pending_messages() -> None:
    moved = ev.SessionRescheduled(
        **event_fields(),
        course_id=COURSE,
        appointment=DOSE_1,
        previous_starts_at=at("2026-03-31T10:00+01:00"),
    )
    assert superseded_appointments(moved) == (DOSE_1.appointment_id,)
    kinds = {m.kind for m in plan(moved)}
    assert kinds == {
        Kind.SESSION_RESCHEDULED,
        Kind.SESSION_INSTRUCTIONS,
        Kind.REMINDER_24H,
        Kind.REMINDER_2H,
    }


def test_integration_follow_up_goes_the_morning_after_a_medicine_session() -> None:
    afternoon = at("2026-04-01T13:10+01:00")
    completed = ev.SessionCompleted(
        **event_fields(afternoon),
        course_id=COURSE,
        appointment_id=DOSE_1.appointment_id,
        kind=DOSE_1.kind,
        dose_number=1,
        ride_home_confirmed=True,
    )
    (message,) = plan(completed, now=afternoon)
    assert message.kind == Kind.INTEGRATION_FOLLOW_UP
    assert message.send_at == at("2026-04-02T09:00+01:00")


def test_completed_integration_session_sends_nothing() -> None:
    completed = ev.SessionCompleted(
        **event_fields(),
        course_id=COURSE,
        appointment_id=INTEGRATION.appointment_id,
        kind=INTEGRATION.kind,
        ride_home_confirmed=False,
    )
    assert plan(completed) == []


def test_booster_due_at_night_is_announced_when_the_window_opens() -> None:
    due = ev.BoosterDue(
        **event_fields(), course_id=COURSE, booster_number=2, due_at=at("2026-04-20T22:00+01:00")
    )
    (message,) = plan(due)
    assert message.send_at == at("2026-04-21T09:00+01:00")


def test_planning_a_redelivered_event_gives_the_same_messages() -> None:
    assert plan(course_booked()) == plan(course_booked())
    assert plan(course_booked(), cause_event_id="other") != plan(course_booked())


def test_events_of_another_clinic_are_refused() -> None:
    porto = ClinicSettings(clinic_id="porto", name="Porto Clinic", timezone="Europe/Lisbon")
    with pytest.raises(ValueError, match="porto"):
        messages_for(course_booked(), EMAIL, porto, NOW, cause_event_id="cause-1")


def test_events_that_tell_nobody_anything_plan_nothing() -> None:
    stopped = ev.BoostersStopped(**event_fields(), course_id=COURSE, reason="discharged")
    assert plan(stopped) == []


def test_a_consultation_the_clinic_cancelled_is_no_longer_reminded_of() -> None:
    consultation = uuid.uuid4()
    cancelled = ev.ConsultationCancelled(
        **event_fields(), appointment_id=consultation, starts_at=at("2026-04-11T09:00+01:00")
    )
    assert superseded_appointments(cancelled) == (consultation,)
    [fact] = appointment_facts(cancelled)
    assert (fact.appointment_id, fact.status) == (consultation, ev.AppointmentStatus.CANCELLED)


@pytest.mark.parametrize("prefs", [EMAIL, SMS], ids=["email", "sms"])
def test_a_consultation_the_clinic_cancelled_is_told_at_once_in_clinic_time(
    prefs: ContactPrefs,
) -> None:
    consultation = uuid.uuid4()
    cancelled = ev.ConsultationCancelled(
        **event_fields(), appointment_id=consultation, starts_at=at("2026-04-11T09:00+01:00")
    )
    [message] = plan(cancelled, prefs)
    assert (message.kind, message.recipient) == (Kind.CONSULTATION_CANCELLED, "client")
    assert message.channel == ("sms" if prefs is SMS else "email")
    assert message.send_at == NOW
    assert message.appointment_id == consultation
    # Lisbon is on summer time by then: 08:00 UTC is 09:00 WEST.
    assert message.context["starts_at"] == "Saturday 11 April 2026, 09:00 WEST"


def test_a_client_opted_out_of_every_channel_hears_nothing_of_a_cancellation() -> None:
    cancelled = ev.ConsultationCancelled(
        **event_fields(), appointment_id=uuid.uuid4(), starts_at=at("2026-04-11T09:00+01:00")
    )
    silent = EMAIL.model_copy(update={"opted_out": frozenset({"email", "sms"})})
    assert plan(cancelled, silent) == []
