"""Urgent alerts someone owns: acknowledged over the API, or escalated to on-call.

Judged from the mailbox and the topics: an unacknowledged alert's escalation is
mailed once, after the clinic's 15 minutes, and announced on its topic; an
acknowledged one is never escalated, and its acknowledgement is one fact however
often it is sent.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from shared import events as ev
from shared import topics
from tests.helpers import topic_messages
from tests.integration.notifier.support import Rig, at, text_of

pytestmark = pytest.mark.integration

NIGHT = at("2026-03-24T02:30+00:00")


async def _alert(rig: Rig) -> tuple[uuid.UUID, str]:
    rig.clock.set(NIGHT)
    client_id = uuid.uuid4()
    alert = ev.ClinicalAlertRaised(
        **rig.fields(client_id), reason="phq9_item9_positive", phq9_item9=2, raised_during="session"
    )
    envelope = await rig.publish(alert)
    await rig.mails(rig.clinic.staff_email)
    return client_id, envelope.id


async def _acknowledge(rig: Rig, alert_id: str, by: str = "nurse-7") -> dict[str, object]:
    response = await rig.http.post(
        f"/v1/clinics/{rig.clinic.id}/alerts/{alert_id}/acknowledge",
        headers={"X-API-Key": rig.clinic.key},
        json={"acknowledged_by": by},
    )
    assert response.status_code == 200, response.text
    found: dict[str, object] = response.json()
    return found


async def test_an_alert_no_one_acknowledges_goes_to_on_call_after_15_minutes(rig: Rig) -> None:
    client_id, alert_id = await _alert(rig)

    await rig.step_to(NIGHT + timedelta(minutes=14))
    assert len(rig.mailbox.to(rig.clinic.staff_email)) == 1  # not yet

    await rig.step_to(NIGHT + timedelta(minutes=15))
    # No on-call address in this clinic's file: the escalation goes to staff again.
    _, escalation = await rig.mails(rig.clinic.staff_email, count=2)
    assert escalation["Subject"] == "Urgent and unacknowledged: clinical alert for a client"
    assert alert_id in text_of(escalation)
    assert str(client_id) in text_of(escalation)
    [escalated] = await rig.outcomes(client_id, topics.CLINICAL_ALERT_ESCALATED)
    assert escalated["value"]["alert_id"] == alert_id
    assert escalated["value"]["unacknowledged_minutes"] == 15


async def test_an_acknowledged_alert_is_never_escalated_and_is_owned_once(rig: Rig) -> None:
    client_id, alert_id = await _alert(rig)
    listed = await rig.http.get(
        f"/v1/clinics/{rig.clinic.id}/alerts", headers={"X-API-Key": rig.clinic.key}
    )
    assert [a["alert_id"] for a in listed.json()] == [alert_id]

    rig.clock.set(NIGHT + timedelta(minutes=3))
    owned = await _acknowledge(rig, alert_id)
    again = await _acknowledge(rig, alert_id, by="someone-else")
    assert owned["acknowledged_by"] == again["acknowledged_by"] == "nurse-7"

    await rig.step_to(NIGHT + timedelta(hours=1))
    assert len(rig.mailbox.to(rig.clinic.staff_email)) == 1  # the alert only
    acknowledged = await topic_messages(
        rig.kafka, topics.CLINICAL_ALERT_ACKNOWLEDGED.name, key=str(client_id), wait_s=3
    )
    assert [m["value"]["acknowledged_by"] for m in acknowledged] == ["nurse-7"]
    assert (
        await topic_messages(
            rig.kafka, topics.CLINICAL_ALERT_ESCALATED.name, key=str(client_id), wait_s=1
        )
        == []
    )
    still_open = await rig.http.get(
        f"/v1/clinics/{rig.clinic.id}/alerts", headers={"X-API-Key": rig.clinic.key}
    )
    assert still_open.json() == []
    escalation = [n for n in await rig.notifications(client_id) if n["recipient"] == "on_call"]
    assert [n["state"] for n in escalation] == ["cancelled"]


async def test_acknowledging_an_unknown_alert_is_not_found_and_a_bad_body_names_the_field(
    rig: Rig,
) -> None:
    unknown = await rig.http.post(
        f"/v1/clinics/{rig.clinic.id}/alerts/no-such-alert/acknowledge",
        headers={"X-API-Key": rig.clinic.key},
        json={"acknowledged_by": "nurse-7"},
    )
    assert unknown.status_code == 404
    bad = await rig.http.post(
        f"/v1/clinics/{rig.clinic.id}/alerts/x/acknowledge",
        headers={"X-API-Key": rig.clinic.key},
        json={"acknowledged_by": "Nurse Ann <ann@example.org>"},
    )
    assert bad.status_code == 422
    assert "acknowledged_by" in bad.text
