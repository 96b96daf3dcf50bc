"""The intake path on real Kafka and Redis: what the API answers, what lands on
the topics, and what is kept in Redis."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from shared import topics
from tests.helpers import auth, end_offsets, topic_messages

pytestmark = pytest.mark.integration

ELIGIBLE_SCREENING = {
    "systolic_bp": 122,
    "diastolic_bp": 78,
    "pregnant_or_breastfeeding": False,
    "active_psychosis_or_mania": False,
    "substance_use_disorder_last_3_months": False,
    "aneurysmal_vascular_disease_or_avm": False,
    "intracerebral_haemorrhage_history": False,
    "notes": "sleeps badly",
}
PHQ9 = [2, 2, 3, 1, 2, 2, 1, 1, 0]
GAD7 = [1, 2, 2, 1, 1, 2, 1]


def person(unique: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "Ada Example",
        "email": f"ada.{unique}@example.org",
        "phone": "+3519" + str(int(unique, 16) % 10**8).zfill(8),
        "preferred_channel": "email",
        "sms_consent": True,
        "preferred_times": [{"weekday": 1, "start": "09:00", "end": "12:00"}],
        **extra,
    }


async def requested(intake: httpx.AsyncClient, unique: str, clinic: str = "lisbon") -> str:
    response = await intake.post(
        f"/v1/clinics/{clinic}/consultation-requests", json=person(unique), headers=auth(clinic)
    )
    assert response.status_code == 202, response.text
    return str(response.json()["client_id"])


async def screened(intake: httpx.AsyncClient, client: str, screening: dict[str, Any]) -> Any:
    base = f"/v1/clinics/lisbon/clients/{client}"
    held = await intake.post(
        f"{base}/consultation-outcome",
        json={"outcome": "proceed_to_screening"},
        headers=auth("lisbon"),
    )
    assert held.status_code == 202, held.text
    return await intake.post(f"{base}/screening", json=screening, headers=auth("lisbon"))


async def test_an_eligible_person_is_enrolled_with_every_step_published(
    intake: httpx.AsyncClient, kafka_bootstrap: str, redis_client: Redis, unique: str
) -> None:
    client = await requested(intake, unique)
    screening = await screened(intake, client, ELIGIBLE_SCREENING)
    assert screening.json() == {
        "client_id": client,
        "status": "screened_eligible",
        "eligible": True,
        "contraindications": [],
    }
    enrolled = await intake.post(
        f"/v1/clinics/lisbon/clients/{client}/enrolment",
        json={"consent_given": True, "phq9": PHQ9, "gad7": GAD7},
        headers=auth("lisbon"),
    )
    assert enrolled.status_code == 202, enrolled.text
    assert enrolled.json()["phq9_total"] == 14
    assert enrolled.json()["phq9_band"] == "moderate"
    assert enrolled.json()["gad7_total"] == 10
    viewed = await intake.get(f"/v1/clinics/lisbon/clients/{client}", headers=auth("lisbon"))
    assert viewed.json()["consent_recorded_at"] is not None

    request_event = (
        await topic_messages(kafka_bootstrap, topics.CONSULTATION_REQUESTED.name, key=client)
    )[0]
    assert request_event["value"]["contact"]["email"] == f"ada.{unique}@example.org"
    assert request_event["headers"]["ce_clinicid"] == "lisbon"
    journey = request_event["headers"]["ce_correlationid"]
    for topic in (topics.CONSULTATION_HELD, topics.SCREENING_COMPLETED, topics.CLIENT_ENROLLED):
        [message] = await topic_messages(kafka_bootstrap, topic.name, key=client)
        assert message["headers"]["ce_correlationid"] == journey
        assert message["headers"]["ce_subject"] == client
    [enrolment] = await topic_messages(kafka_bootstrap, topics.CLIENT_ENROLLED.name, key=client)
    assert enrolment["value"]["phq9_total"] == 14
    assert (
        await topic_messages(
            kafka_bootstrap, topics.CLINICAL_ALERT_RAISED.name, key=client, wait_s=1
        )
        == []
    )

    stored = await redis_client.get(f"intake:{{lisbon}}:client:{client}")
    assert stored is not None
    assert '"status":"enrolled"' in stored
    view = (await intake.get(f"/v1/clinics/lisbon/clients/{client}", headers=auth("lisbon"))).json()
    assert view["status"] == "enrolled"
    assert [h["step"] for h in view["history"]] == [
        "consultation_requested",
        "consultation_held",
        "screened",
        "enrolled",
    ]


async def test_an_ineligible_person_gets_the_reasons_and_cannot_be_enrolled(
    intake: httpx.AsyncClient, kafka_bootstrap: str, unique: str
) -> None:
    client = await requested(intake, unique)
    screening = await screened(
        intake,
        client,
        {**ELIGIBLE_SCREENING, "systolic_bp": 152, "pregnant_or_breastfeeding": True},
    )
    assert screening.status_code == 202
    assert screening.json()["eligible"] is False
    assert screening.json()["contraindications"] == [
        "uncontrolled_hypertension",
        "pregnancy_or_breastfeeding",
    ]
    [published] = await topic_messages(kafka_bootstrap, topics.SCREENING_COMPLETED.name, key=client)
    assert published["value"]["contraindications"] == [
        "uncontrolled_hypertension",
        "pregnancy_or_breastfeeding",
    ]
    refused = await intake.post(
        f"/v1/clinics/lisbon/clients/{client}/enrolment",
        json={"consent_given": True, "phq9": PHQ9, "gad7": GAD7},
        headers=auth("lisbon"),
    )
    assert refused.status_code == 409
    assert "screened_ineligible" in refused.json()["detail"]
    assert (
        await topic_messages(kafka_bootstrap, topics.CLIENT_ENROLLED.name, key=client, wait_s=1)
        == []
    )


async def test_a_positive_item_9_alerts_staff_even_when_enrolment_is_refused(
    intake: httpx.AsyncClient, kafka_bootstrap: str, unique: str
) -> None:
    client = await requested(intake, unique)
    await screened(intake, client, {**ELIGIBLE_SCREENING, "active_psychosis_or_mania": True})
    response = await intake.post(
        f"/v1/clinics/lisbon/clients/{client}/enrolment",
        json={"consent_given": True, "phq9": [*PHQ9[:8], 2], "gad7": GAD7},
        headers=auth("lisbon"),
    )
    assert response.status_code == 409
    [alert] = await topic_messages(kafka_bootstrap, topics.CLINICAL_ALERT_RAISED.name, key=client)
    assert alert["value"]["reason"] == "phq9_item9_positive"
    assert alert["value"]["phq9_item9"] == 2


async def test_a_retried_request_returns_the_first_answer_and_publishes_nothing_new(
    intake: httpx.AsyncClient, kafka_bootstrap: str, unique: str
) -> None:
    headers = {**auth("lisbon"), "Idempotency-Key": f"req-{unique}"}
    url = "/v1/clinics/lisbon/consultation-requests"
    first = await intake.post(url, json=person(unique), headers=headers)
    again = await intake.post(url, json=person(unique), headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    client = first.json()["client_id"]
    published = await topic_messages(
        kafka_bootstrap, topics.CONSULTATION_REQUESTED.name, key=client
    )
    assert len(published) == 1

    other = await intake.post(url, json=person(unique, name="Someone Else"), headers=headers)
    assert other.status_code == 422
    assert "Idempotency-Key" in other.json()["detail"]


async def test_the_same_person_asking_twice_is_linked_not_duplicated(
    intake: httpx.AsyncClient, kafka_bootstrap: str, unique: str
) -> None:
    first = await requested(intake, unique)
    again = await intake.post(
        "/v1/clinics/lisbon/consultation-requests",
        json=person(unique, phone="+351900000000"),
        headers=auth("lisbon"),
    )
    assert again.json() == {
        "client_id": first,
        "status": "consultation_requested",
        "repeat_request": True,
    }
    messages = await topic_messages(
        kafka_bootstrap, topics.CONSULTATION_REQUESTED.name, key=first, expect=2
    )
    assert [m["value"]["repeat_request"] for m in messages] == [False, True]


async def test_another_clinics_key_sees_nothing_not_even_that_the_client_exists(
    intake: httpx.AsyncClient, unique: str
) -> None:
    client = await requested(intake, unique)
    foreign = await intake.get(f"/v1/clinics/lisbon/clients/{client}", headers=auth("boston"))
    unknown = await intake.get(f"/v1/clinics/lisbon/clients/{uuid.uuid4()}", headers=auth("lisbon"))
    no_such_clinic = await intake.get(
        f"/v1/clinics/nowhere/clients/{client}", headers=auth("boston")
    )
    assert foreign.status_code == unknown.status_code == no_such_clinic.status_code == 404
    assert foreign.json() == no_such_clinic.json()
    in_own_clinic = await intake.get(f"/v1/clinics/boston/clients/{client}", headers=auth("boston"))
    assert in_own_clinic.status_code == 404
    anonymous = await intake.get(f"/v1/clinics/lisbon/clients/{client}")
    assert anonymous.status_code == 401


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"phone": "0912 345 678"}, "phone"),
        ({"preferred_channel": "pigeon"}, "preferred_channel"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"preferred_times": [{"weekday": 9, "start": "09:00", "end": "10:00"}]}, "weekday"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
async def test_a_malformed_consultation_request_names_the_field_and_publishes_nothing(
    intake: httpx.AsyncClient, kafka_bootstrap: str, unique: str, change: dict[str, Any], field: str
) -> None:
    before = await end_offsets(kafka_bootstrap, topics.CONSULTATION_REQUESTED.name)
    response = await intake.post(
        "/v1/clinics/lisbon/consultation-requests",
        json=person(unique, **change),
        headers=auth("lisbon"),
    )
    assert response.status_code == 422
    assert field in str(response.json()["detail"])
    assert await end_offsets(kafka_bootstrap, topics.CONSULTATION_REQUESTED.name) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"consent_given": True, "phq9": PHQ9[:8], "gad7": GAD7}, "phq9"),
        ({"consent_given": True, "phq9": [*PHQ9[:8], 4], "gad7": GAD7}, "phq9"),
        ({"consent_given": True, "phq9": PHQ9, "gad7": [*GAD7, 1]}, "gad7"),
        ({"consent_given": False, "phq9": PHQ9, "gad7": GAD7}, "consent_given"),
    ],
)
async def test_malformed_scores_are_refused_naming_the_field(
    intake: httpx.AsyncClient, unique: str, body: dict[str, Any], field: str
) -> None:
    client = await requested(intake, unique)
    response = await intake.post(
        f"/v1/clinics/lisbon/clients/{client}/enrolment", json=body, headers=auth("lisbon")
    )
    assert response.status_code == 422
    assert field in str(response.json()["detail"])


async def test_an_oversized_body_is_refused(intake: httpx.AsyncClient, unique: str) -> None:
    huge = person(unique, name="x" * 100_000)
    response = await intake.post(
        "/v1/clinics/lisbon/consultation-requests", json=huge, headers=auth("lisbon")
    )
    assert response.status_code == 413


async def test_metrics_count_what_the_service_published_per_clinic(
    intake: httpx.AsyncClient, unique: str
) -> None:
    def published(text: str) -> float:
        for line in text.splitlines():
            if line.startswith("kap_events_published_total{") and (
                'topic="intake.consultation.requested.v1"' in line and 'clinic="lisbon"' in line
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = published((await intake.get("/metrics")).text)
    await requested(intake, unique)
    after = (await intake.get("/metrics")).text
    assert published(after) == before + 1
    assert "faststream_published_messages_total" in after
