"""Measure requests (issue 17): planned from MeasureDue, linked at hand-over with a token that
names the client, the clinic and the measure, neutral on screens, stale once closed."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from chassis.measure_links import LinkExpired, MeasureLinks
from services.notifier.measures import MeasureRequests
from services.notifier.model import MessageKind, PlannedMessage
from services.notifier.templates import TemplateSet
from tests.unit.notifier.samples import CLIENT, CLINIC, EMAIL, NOW, SMS, measures_due, plan

SECRET = "a-test-secret-of-16+"
REQUESTS = MeasureRequests(
    None,  # type: ignore[arg-type]  # minting and the closed check read nothing
    MeasureLinks([SECRET]),
    "https://forms.clinic.example/",
    timedelta(hours=72),
)


def request(index: int = 0, prefs: object = EMAIL) -> PlannedMessage:
    [message] = plan(measures_due()[index], prefs)  # type: ignore[arg-type]
    return message


def test_a_measure_due_plans_one_request_when_it_opens_inside_the_send_window() -> None:
    pre_dose, follow_up = measures_due()
    before_dose, later = request(0), request(1)

    assert before_dose.kind == MessageKind.MEASURE_REQUEST
    assert before_dose.send_at == NOW  # open now, at 10:00: inside the window
    assert before_dose.appointment_id == pre_dose.appointment_id
    assert before_dose.context["measure_id"] == str(pre_dose.measure_id)
    assert before_dose.context["before_session"] is True
    assert later.appointment_id is None
    assert later.context["measure_id"] == str(follow_up.measure_id)
    night = follow_up.model_copy(update={"opens_at": NOW.replace(hour=23)})
    [late] = plan(night)
    assert late.send_at.astimezone(CLINIC.tz).hour == 9  # the next morning's window


def test_the_link_reads_back_to_the_client_the_clinic_and_the_measure_and_expires_after_72h() -> (
    None
):
    message = REQUESTS.linked(request(), NOW, CLINIC.tz)
    url = str(message.context["measure_url"])

    assert url.startswith("https://forms.clinic.example/m/")
    token = url.rsplit("/", 1)[1]
    link = MeasureLinks([SECRET]).read(token, NOW)
    assert (link.clinic_id, link.client_id) == ("lisbon", CLIENT)
    assert str(link.measure_id) == message.context["measure_id"]
    assert link.expires_at == NOW + timedelta(hours=72)
    with pytest.raises(LinkExpired):
        MeasureLinks([SECRET]).read(token, NOW + timedelta(hours=72))
    late = REQUESTS.linked(request(), NOW + timedelta(hours=5), CLINIC.tz)  # sent late
    late_token = str(late.context["measure_url"]).rsplit("/", 1)[1]
    assert MeasureLinks([SECRET]).read(late_token, NOW).expires_at == NOW + timedelta(hours=77)


@pytest.mark.parametrize("prefs", [EMAIL, SMS], ids=["email", "sms"])
def test_the_request_shows_no_score_and_a_neutral_subject(prefs: object) -> None:
    message = REQUESTS.linked(request(1, prefs), NOW, CLINIC.tz)
    rendered = TemplateSet().render(message, client_name="Maria Silva")
    shown = rendered.text + (rendered.subject or "") + (rendered.html or "")

    assert str(message.context["measure_url"]) in shown
    if prefs is EMAIL:
        assert rendered.subject == "A short check-in from Lisbon Wellbeing Clinic"
    for word in ("phq", "gad", "score", "depress", "anxi", "diagnos"):
        assert word not in shown.lower()
    assert not re.search(r"\b\d+ ?/ ?27\b", shown)


async def test_a_request_is_stale_once_its_measure_closed() -> None:
    message = request()
    closes = measures_due()[0].closes_at

    assert await REQUESTS.staleness(message, closes) == "stale: the measure closed"
