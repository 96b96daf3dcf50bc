"""Kafka is the record: intake's Redis, rebuilt from its facts on the topics
(`kapctl rebuild intake`) into a wiped database, answers as the old one did.

Real Kafka and Redis; an intake of the test's own (its own clinic) on the live Redis,
then one on db 7 (flushed here) after the rebuild. The comparison is over intake's
HTTP API; what the topics do not hold (the screening's details, the enrolment's item
answers) is reported by the rebuild, and the API shows neither.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from ops import kapctl
from services.intake.config import Settings
from services.intake.main import create_app
from shared import topics
from tests.helpers import serving, topic_messages, write_clinics
from tests.integration.intake.test_intake_journey import ELIGIBLE_SCREENING, GAD7, PHQ9, person

pytestmark = pytest.mark.integration

REBUILT_DB = 7  # a spare database, flushed by this test only
INELIGIBLE_SCREENING = {**ELIGIBLE_SCREENING, "systolic_bp": 162}


@pytest.fixture
def clinic(unique: str) -> dict[str, str]:
    return {"id": f"c-{unique}", "key": f"key-{unique}"}


@pytest.fixture
def clinics_path(tmp_path: Path, clinic: dict[str, str]) -> Path:
    spec = {"name": "Rebuilt", "timezone": "Europe/Lisbon", "key": clinic["key"]}
    return write_clinics(tmp_path / "clinics.json", {clinic["id"]: spec})


def _settings(kafka: str, redis: str, clinics: Path) -> Settings:
    return Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka,
        REDIS_URL=redis,
        KAP_CLINICS_FILE=clinics,
        KAP_FORM_RATE_PER_ADDRESS=0,
        KAP_CONSULTATION_RATE_PER_ADDRESS=0,
        KAP_CONSULTATION_RATE_PER_CLIENT=0,
    )


class Desk:
    """The clinic's front desk: intake's API, with the clinic's key."""

    def __init__(self, http: httpx.AsyncClient, clinic: dict[str, str]) -> None:
        self.http, self.base, self.headers = (
            http,
            f"/v1/clinics/{clinic['id']}",
            {"X-API-Key": clinic["key"]},
        )

    async def post(self, path: str, body: dict[str, Any], status: int = 202) -> dict[str, Any]:
        answer = await self.http.post(self.base + path, json=body, headers=self.headers)
        assert answer.status_code == status, answer.text
        return dict(answer.json())

    async def client(self, client_id: str) -> dict[str, Any]:
        answer = await self.http.get(f"{self.base}/clients/{client_id}", headers=self.headers)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


async def _lifecycle(desk: Desk, unique: str) -> tuple[list[str], str]:
    """Three people: Ada enrolled (item 9 positive), her preferences changed, a scheduled
    measure entered by staff; Bob screened ineligible; Cy asked twice, not proceeding."""
    ada = (await desk.post("/consultation-requests", person(unique)))["client_id"]
    await desk.post(f"/clients/{ada}/consultation-outcome", {"outcome": "proceed_to_screening"})
    await desk.post(f"/clients/{ada}/screening", ELIGIBLE_SCREENING)
    item9 = [*PHQ9[:8], 1]
    await desk.post(
        f"/clients/{ada}/enrolment", {"consent_given": True, "phq9": item9, "gad7": GAD7}
    )
    await desk.post(f"/clients/{ada}/contact-preferences", {"channel": "sms", "opted_out": True})
    measure = str(uuid.uuid4())
    entered = {"phq9": PHQ9, "gad7": GAD7, "entered_by": "staff-1", "measure_id": measure}
    await desk.post(f"/clients/{ada}/measures", entered)

    bob_person = person(uuid.uuid4().hex[:12], name="Bob Example")
    bob = (await desk.post("/consultation-requests", bob_person))["client_id"]
    await desk.post(f"/clients/{bob}/consultation-outcome", {"outcome": "proceed_to_screening"})
    await desk.post(f"/clients/{bob}/screening", INELIGIBLE_SCREENING)

    cy_person = person(uuid.uuid4().hex[:12], name="Cy Example")
    cy = (await desk.post("/consultation-requests", cy_person))["client_id"]
    again = await desk.post("/consultation-requests", {**cy_person, "name": "Cy Again"})
    assert again == {"client_id": cy, "status": "consultation_requested", "repeat_request": True}
    await desk.post(f"/clients/{cy}/consultation-outcome", {"outcome": "not_proceeding"})
    return [ada, bob, cy], measure


async def test_intake_rebuilt_from_its_facts_answers_as_before_and_reports_what_is_not_there(
    kafka_bootstrap: str,
    redis_url: str,
    rebuilt_url: str,
    rebuilt_redis: Redis,
    clinic: dict[str, str],
    clinics_path: Path,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with serving(create_app(_settings(kafka_bootstrap, redis_url, clinics_path))) as http:
        desk = Desk(http, clinic)
        clients, measure = await _lifecycle(desk, unique)
        before = {c: await desk.client(c) for c in clients}
    assert [before[c]["status"] for c in clients] == [
        "enrolled",
        "screened_ineligible",
        "not_proceeding",
    ]

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("KAP_CLINICS_FILE", str(clinics_path))
    command = ["rebuild", "intake", "--redis", rebuilt_url, "--clinic", clinic["id"]]
    assert await asyncio.to_thread(kapctl.main, command) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["applied"] == 13, counts  # 12 steps' facts and Ada's alert
    assert counts["unreadable"] == counts["refused"] == 0
    assert counts["keys_written"] == len(await rebuilt_redis.keys("*"))
    # Said, not silent: two screenings' details and one enrolment's items are not there.
    assert counts["not_rebuilt"] == {"screening_details": 2, "enrolment_item_scores": 1}

    async with serving(create_app(_settings(kafka_bootstrap, rebuilt_url, clinics_path))) as http:
        desk = Desk(http, clinic)
        assert {c: await desk.client(c) for c in clients} == before

        # The measure's link stays used up, and the person is found by contact: nothing
        # new is recorded or published for either.
        ada = clients[0]
        answered = await topic_messages(
            kafka_bootstrap, topics.MEASURE_ANSWERED.name, key=ada, wait_s=2
        )
        entered = {"phq9": PHQ9, "gad7": GAD7, "entered_by": "staff-2", "measure_id": measure}
        await desk.post(f"/clients/{ada}/measures", entered, status=409)
        assert await desk.client(ada) == before[ada]
        again = await topic_messages(
            kafka_bootstrap, topics.MEASURE_ANSWERED.name, key=ada, wait_s=2
        )
        assert len(again) == len(answered) == 1
        repeat = await desk.post("/consultation-requests", person(unique))
        assert repeat["client_id"] == ada
        assert repeat["repeat_request"] is True
