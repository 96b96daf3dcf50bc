from __future__ import annotations

import re
from datetime import timedelta

import pytest

from chassis.measure_links import MeasureLinks
from services.notifier.measures import MeasureRequests
from services.notifier.model import MessageKind, PlannedMessage
from services.notifier.templates import (
    MinimumPhiError,
    RenderedMessage,
    TemplateRenderError,
    TemplateSet,
    render,
)
from tests.unit.notifier.samples import (
    CLIENT,
    CLINIC,
    EMAIL,
    SMS,
    course_booked,
    every_event,
    plan,
)

CLIENT_NAME = "Zeferina Quintal"
# Rule 14: none of these may show in an SMS or an email subject.
FORBIDDEN = (
    "ketamine",
    "esketamine",
    "spravato",
    "depression",
    "depressive",
    "psychosis",
    "mania",
    "ptsd",
    "anxiety",
    "phq",
    "gad",
    "suicide",
    "self-harm",
    "medicine",
)


LINKS = MeasureRequests(
    None,  # type: ignore[arg-type]  # minting reads nothing
    MeasureLinks(["a-test-secret-of-16+"]),
    "https://forms.clinic.example",
    timedelta(hours=72),
)


def sample_messages() -> dict[tuple[MessageKind, str], list[PlannedMessage]]:
    samples: dict[tuple[MessageKind, str], list[PlannedMessage]] = {}
    for prefs in (EMAIL, SMS):
        for event in every_event():
            for message in plan(event, prefs):
                if message.kind == MessageKind.MEASURE_REQUEST:  # linked at hand-over
                    message = LINKS.linked(message, message.send_at, CLINIC.tz)
                samples.setdefault((message.kind, message.channel), []).append(message)
    return samples


SAMPLES = sample_messages()
ALL_SAMPLES = [message for messages in SAMPLES.values() for message in messages]


def rendered(message: PlannedMessage, templates: TemplateSet | None = None) -> RenderedMessage:
    return (templates or TemplateSet()).render(message, client_name=CLIENT_NAME)


def test_samples_cover_every_kind_on_every_channel_it_uses() -> None:
    staff_kinds = {MessageKind.CLINICAL_ALERT, MessageKind.CLINICAL_ALERT_ESCALATION}
    client_kinds = set(MessageKind) - staff_kinds
    expected = {(kind, channel) for kind in client_kinds for channel in ("email", "sms")}
    assert set(SAMPLES) == expected | {(kind, "email") for kind in staff_kinds}


@pytest.mark.parametrize("message", ALL_SAMPLES, ids=lambda m: f"{m.kind}-{m.channel}")
def test_every_kind_renders_on_its_channel(message: PlannedMessage) -> None:
    result = rendered(message)
    assert result.text.strip()
    assert "{{" not in result.text
    assert "{%" not in result.text
    if message.channel == "email":
        assert result.subject
        assert "\n" not in result.subject
        assert (result.html or "").startswith("<!doctype html>")
    else:
        assert (result.subject, result.html) == (None, None)


@pytest.mark.parametrize("message", ALL_SAMPLES, ids=lambda m: f"{m.kind}-{m.channel}")
def test_sms_and_subjects_name_no_drug_no_diagnosis_and_not_the_client(
    message: PlannedMessage,
) -> None:
    result = rendered(message)
    shown = result.text if message.channel == "sms" else result.subject
    assert shown is not None
    words = set(re.findall(r"[a-z0-9-]+", shown.lower()))
    assert words.isdisjoint(FORBIDDEN), shown
    assert "Zeferina" not in shown


def test_client_email_greets_by_first_name() -> None:
    (message,) = SAMPLES[(MessageKind.SCREENING_OUTCOME, "email")][:1]
    result = rendered(message)
    assert result.text.startswith("Dear Zeferina,")
    assert "Dear Zeferina," in (result.html or "")


def test_course_email_lists_every_session_in_clinic_time() -> None:
    (message,) = [m for m in plan(course_booked()) if m.kind == MessageKind.COURSE_BOOKED]
    result = rendered(message)
    for line in (
        "- Monday 30 March 2026, 10:00 WEST: preparation session (60 minutes)",
        "- Wednesday 1 April 2026, 10:00 WEST: medicine session (180 minutes)",
        "- Thursday 2 April 2026, 10:00 WEST: integration session (60 minutes)",
    ):
        assert line in result.text


def test_session_instructions_cover_everything_rule_9_asks() -> None:
    (message,) = [m for m in plan(course_booked()) if m.kind == MessageKind.SESSION_INSTRUCTIONS]
    text = rendered(message).text
    for instruction in (
        "eye shades",
        "music playlist",
        "ride home",
        "not drive for the rest of the day",
        "No food from 08:00",
        "no liquids from 09:30",
    ):
        assert instruction in text


def test_a_cancelled_consultation_says_when_it_was_in_clinic_time_on_both_channels() -> None:
    [mail] = SAMPLES[(MessageKind.CONSULTATION_CANCELLED, "email")]
    [sms] = SAMPLES[(MessageKind.CONSULTATION_CANCELLED, "sms")]
    when = "Thursday 26 March 2026, 15:00 WET"
    email = rendered(mail)
    assert email.subject == f"Your consultation on {when} has been cancelled"
    assert f"free consultation on {when} has been cancelled" in email.text
    assert "arrange another time" in email.text
    assert rendered(sms).text == (
        f"Lisbon Wellbeing Clinic: we are sorry, your consultation on {when} has been "
        "cancelled. Please reply or call us to arrange another time."
    )


def test_screening_refusal_does_not_name_the_contraindication() -> None:
    refusal = next(
        m
        for m in SAMPLES[(MessageKind.SCREENING_OUTCOME, "email")]
        if m.context["eligible"] is False
    )
    result = rendered(refusal)
    assert "psychosis" not in result.text.lower()
    assert "not the right option" in result.text


def test_clinical_alert_email_gives_staff_the_record_but_not_the_score() -> None:
    alert = SAMPLES[(MessageKind.CLINICAL_ALERT, "email")][0]
    result = TemplateSet().render(alert)
    assert result.subject == "Urgent: clinical alert for a client"
    assert "PHQ-9 item 9 answered non-zero at enrolment" in result.text
    assert f"/clinics/lisbon/clients/{CLIENT}/intake" in result.text
    assert "Maria" not in result.text


@pytest.mark.parametrize(
    ("reason", "copy"),
    [
        ("blood_pressure_over_limit", "Blood pressure over the clinic's limit at the check-in"),
        ("severe_adverse_event", "A severe adverse event recorded in a medicine session"),
    ],
)
def test_check_in_and_record_alerts_say_why_without_measurements(reason: str, copy: str) -> None:
    sample = SAMPLES[(MessageKind.CLINICAL_ALERT, "email")][0]
    alert = sample.model_copy(update={"context": {**sample.context, "reason": reason}})
    result = TemplateSet().render(alert)
    assert copy in result.text
    assert copy in (result.html or "").replace("&#39;", "'")
    assert "PHQ-9" not in result.text
    assert "mmHg" not in result.text


def test_an_alert_queued_before_reasons_existed_still_renders_as_item_9() -> None:
    sample = SAMPLES[(MessageKind.CLINICAL_ALERT, "email")][0]
    context = {k: v for k, v in sample.context.items() if k != "reason"}
    result = TemplateSet().render(sample.model_copy(update={"context": context}))
    assert "PHQ-9 item 9 answered non-zero at enrolment" in result.text


def test_html_escapes_variables() -> None:
    (message,) = SAMPLES[(MessageKind.SCREENING_OUTCOME, "email")][:1]
    result = TemplateSet().render(message, client_name="<script>alert(1)</script>")
    assert "<script>" not in (result.html or "")
    assert "&lt;script&gt;" in (result.html or "")


def test_clinic_overrides_win_over_the_built_in_templates() -> None:
    templates = TemplateSet(
        {
            "reminder_2h": {
                "sms": "{{ clinic_name }}: see you at {{ starts_at }}!",
                "subject": "See you soon",
            },
        }
    )
    sms = next(m for m in SAMPLES[(MessageKind.REMINDER_2H, "sms")])
    email = next(m for m in SAMPLES[(MessageKind.REMINDER_2H, "email")])
    assert rendered(sms, templates).text.startswith("Lisbon Wellbeing Clinic: see you at ")
    assert rendered(email, templates).subject == "See you soon"
    assert rendered(email, templates).text == rendered(email).text


def test_html_override_may_extend_the_layout_and_is_escaped() -> None:
    templates = TemplateSet(
        {
            "booster_due": {
                "html": '{% extends "_layout.html" %}'
                "{% block content %}<p>{{ due_at }}</p>{% endblock %}"
            }
        }
    )
    message = SAMPLES[(MessageKind.BOOSTER_DUE, "email")][0]
    html = TemplateSet.render(templates, message, client_name="A&B").html or ""
    assert "Dear A&amp;B," in html
    assert f"<p>{message.context['due_at']}</p>" in html


def test_missing_variable_fails_with_a_template_error() -> None:
    message = SAMPLES[(MessageKind.REMINDER_24H, "sms")][0]
    broken = message.model_copy(update={"context": {"clinic_name": "Lisbon Wellbeing Clinic"}})
    with pytest.raises(TemplateRenderError, match=r"reminder_24h.*starts_at"):
        rendered(broken)


def test_client_email_without_the_client_name_fails() -> None:
    message = SAMPLES[(MessageKind.COURSE_COMPLETED, "email")][0]
    with pytest.raises(TemplateRenderError, match="first_name"):
        render(message)


def test_override_naming_the_drug_in_an_sms_is_refused() -> None:
    templates = TemplateSet({"reminder_2h": {"sms": "Your ketamine session is at {{ starts_at }}"}})
    message = SAMPLES[(MessageKind.REMINDER_2H, "sms")][0]
    with pytest.raises(MinimumPhiError, match="ketamine"):
        rendered(message, templates)


def test_override_naming_the_treatment_in_a_subject_is_refused() -> None:
    templates = TemplateSet({"reminder_24h": {"subject": "Your medicine session tomorrow"}})
    message = SAMPLES[(MessageKind.REMINDER_24H, "email")][0]
    with pytest.raises(MinimumPhiError, match="medicine"):
        rendered(message, templates)


def test_broken_override_fails_when_the_clinic_is_loaded() -> None:
    with pytest.raises(TemplateRenderError, match="session_booked"):
        TemplateSet({"session_booked": {"sms": "{% if %}"}})


def test_override_for_an_unknown_kind_or_part_fails_when_the_clinic_is_loaded() -> None:
    with pytest.raises(ValueError, match="unknown message kind"):
        TemplateSet({"welcome": {"sms": "hi"}})
    with pytest.raises(ValueError, match="unknown part"):
        TemplateSet({"booster_due": {"body": "hi"}})


def test_clinical_alert_has_no_sms_template() -> None:
    with pytest.raises(TemplateRenderError, match="no template"):
        TemplateSet().render_kind(MessageKind.CLINICAL_ALERT, "sms", {})
