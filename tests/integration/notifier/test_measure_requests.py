"""Issue 17 on real Kafka, Redis and SMTP: a measure falling due reaches the client as a mail
whose link names them, their clinic and the measure; one answered meanwhile is not sent."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest

from chassis.config import DEV_MEASURE_LINK_SECRET  # every service's default
from chassis.measure_links import MeasureLinks
from shared import events as ev
from shared import topics
from tests.integration.notifier.support import Rig, at, html_of, sent_at, text_of

pytestmark = pytest.mark.integration

LINK = re.compile(r"http://127\.0\.0\.1:8001/m/(\S+)")


def follow_up(rig: Rig, client_id: uuid.UUID, opens_in: timedelta) -> ev.MeasureDue:
    opens = rig.clock.now() + opens_in
    return ev.MeasureDue(
        **rig.fields(client_id),
        measure_id=uuid.uuid4(),
        course_id=uuid.uuid4(),
        point=ev.MeasurePoint.MONTH_1,
        instruments=(ev.Instrument.PHQ9, ev.Instrument.GAD7),
        opens_at=opens,
        closes_at=opens + timedelta(days=14),
    )


async def test_a_measure_due_sends_a_mail_whose_link_reads_back_to_client_clinic_and_measure(
    rig: Rig,
) -> None:
    rig.clock.set(at("2026-05-11T09:00+01:00"))
    ada = rig.person()
    client_id, _ = await rig.request(ada)
    due = follow_up(rig, client_id, timedelta(0))
    await rig.publish(due)

    subject = f"A short check-in from {rig.clinic.name}"
    [mail] = [m for m in await rig.mails(ada.email, 2) if m["Subject"] == subject]
    [token] = LINK.findall(text_of(mail))
    link = MeasureLinks([DEV_MEASURE_LINK_SECRET]).read(token, rig.clock.now())
    assert (link.clinic_id, link.client_id, link.measure_id) == (
        rig.clinic.id,
        client_id,
        due.measure_id,
    )
    assert link.expires_at == sent_at(mail) + timedelta(hours=72)
    assert f'href="http://127.0.0.1:8001/m/{token}"' in html_of(mail)
    assert not {"PHQ", "GAD", "score"} & set(re.findall(r"\w+", text_of(mail)))
    sent = await rig.outcomes(client_id, topics.NOTIFICATION_SENT, expect=2)
    [request] = [m for m in sent if m["value"]["message_kind"] == "measure_request"]
    assert request["value"]["notification_id"] in mail["Message-ID"]


async def test_a_measure_answered_before_its_request_goes_out_is_not_sent(rig: Rig) -> None:
    rig.clock.set(at("2026-05-11T22:00+01:00"))  # after the send window: goes in the morning
    ada = rig.person()
    client_id, _ = await rig.request(ada)
    due = follow_up(rig, client_id, timedelta(0))
    await rig.publish(due)
    answered = ev.MeasureAnswered(
        **rig.fields(client_id),
        responses=(
            ev.QuestionnaireResponse(
                questionnaire=ev.Instrument.PHQ9,
                items=(0, 1, 0, 1, 0, 0, 1, 0, 0),
                total=3,
                loinc="44261-6",
                authored=rig.clock.now(),
            ),
        ),
        source="staff",
        measure_id=due.measure_id,
        course_id=due.course_id,
        point=due.point,
        entered_by="staff-7",
    )
    await rig.publish(answered)
    await rig.step_to(at("2026-05-12T09:30+01:00"))

    [failed] = await rig.outcomes(client_id, topics.NOTIFICATION_FAILED)
    assert failed["value"]["message_kind"] == "measure_request"
    assert failed["value"]["reason"] == "stale: the measure was answered"
    subjects = [m["Subject"] for m in rig.mailbox.to(ada.email)]
    assert f"A short check-in from {rig.clinic.name}" not in subjects
