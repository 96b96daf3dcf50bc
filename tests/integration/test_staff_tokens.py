"""Staff tokens on real services (Kafka, Redis): the services check the role a console
call names, and the events the call causes name the actor.

A front desk's token requests a consultation (its event says so) but may not record
its outcome (403) nor a medicine session's dose; a clinician's may; a token of
another clinic, a forged or an expired one is refused; a call with the clinic's key
alone (an integration) is not limited, and its events name no one."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from chassis.staff_tokens import TOKEN_S, Actor, Role, StaffTokens
from services.intake.config import Settings as IntakeSettings
from services.intake.main import create_app as intake_app
from services.scheduler.config import Settings as SchedulerSettings
from services.scheduler.main import create_app as scheduler_app
from shared import topics
from tests.helpers import auth, serving, topic_messages, write_clinics

pytestmark = pytest.mark.integration

SECRET = "staff-token-secret-for-the-tests-0123456789"


def token(role: Role, clinic: str = "lisbon", staff: str = "s-1") -> dict[str, str]:
    return {"X-Staff-Token": StaffTokens([SECRET]).issue(Actor(staff, role, clinic))}


async def test_the_services_check_the_role_and_the_events_name_the_actor(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, unique: str
) -> None:
    clinics = write_clinics(tmp_path / "clinics.json")
    common = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "REDIS_URL": redis_url,
        "KAP_CLINICS_FILE": clinics,
        "KAP_STAFF_TOKEN_SECRETS": SECRET,
    }
    intake = intake_app(IntakeSettings(**common, KAP_CONSULTATION_RATE_PER_ADDRESS=0))  # type: ignore[arg-type]
    async with serving(intake) as http:
        person = {"name": "Rui", "email": f"rui.{unique}@example.org"}
        asked = await http.post(
            "/v1/clinics/lisbon/consultation-requests",
            json=person,
            headers={**auth("lisbon"), **token(Role.FRONT_DESK, staff=f"desk-{unique}")},
        )
        assert asked.status_code == 202, asked.text
        client_id = asked.json()["client_id"]
        outcome = f"/v1/clinics/lisbon/clients/{client_id}/consultation-outcome"
        body = {"outcome": "proceed_to_screening"}

        refused = await http.post(
            outcome, json=body, headers={**auth("lisbon"), **token(Role.FRONT_DESK)}
        )
        assert refused.status_code == 403
        assert "front_desk may not" in refused.text
        elsewhere = await http.post(
            outcome, json=body, headers={**auth("lisbon"), **token(Role.CLINICIAN, "boston")}
        )
        assert elsewhere.status_code == 403
        forged = await http.post(
            outcome, json=body, headers={**auth("lisbon"), "X-Staff-Token": "not.a.token"}
        )
        assert forged.status_code == 401
        held = await http.post(
            outcome,
            json=body,
            headers={**auth("lisbon"), **token(Role.CLINICIAN, staff=f"doc-{unique}")},
        )
        assert held.status_code == 202, held.text

    requested = await topic_messages(
        kafka_bootstrap, topics.CONSULTATION_REQUESTED.name, key=client_id
    )
    assert requested[0]["headers"]["ce_actor"] == f"staff:desk-{unique}/front_desk"
    [held_event] = await topic_messages(
        kafka_bootstrap, topics.CONSULTATION_HELD.name, key=client_id
    )
    assert held_event["headers"]["ce_actor"] == f"staff:doc-{unique}/clinician"

    # The clinic's key alone: an integration, not limited, naming no one.
    async with serving(intake_app(IntakeSettings(**common))) as http:  # type: ignore[arg-type]
        other = await http.post(
            "/v1/clinics/lisbon/consultation-requests",
            json={"name": "Ana", "email": f"ana.{unique}@example.org"},
            headers=auth("lisbon"),
        )
        assert other.status_code == 202
        other_id = other.json()["client_id"]
        screened = await http.post(
            f"/v1/clinics/lisbon/clients/{other_id}/consultation-outcome",
            json={"outcome": "proceed_to_screening"},
            headers=auth("lisbon"),
        )
        assert screened.status_code == 202
    [plain] = await topic_messages(kafka_bootstrap, topics.CONSULTATION_HELD.name, key=other_id)
    assert "ce_actor" not in plain["headers"]

    # A front desk may not record a dose in the scheduler.
    async with serving(scheduler_app(SchedulerSettings(**common))) as http:  # type: ignore[arg-type]
        dose = await http.post(
            f"/v1/clinics/lisbon/appointments/{uuid.uuid4()}/record",
            json={},
            headers={**auth("lisbon"), **token(Role.FRONT_DESK)},
        )
        assert dose.status_code == 403
        assert "front_desk may not" in dose.text


def test_an_expired_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import itsdangerous.timed

    from chassis.staff_tokens import TokenInvalid

    tokens = StaffTokens([SECRET])
    real = itsdangerous.timed.time.time
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real() - TOKEN_S - 5)
    old = tokens.issue(Actor("s-1", Role.CLINICIAN, "lisbon"))
    monkeypatch.setattr(itsdangerous.timed.time, "time", real)
    with pytest.raises(TokenInvalid, match="expired"):
        tokens.verify(old)
    fresh = tokens.issue(Actor("s-1", Role.CLINICIAN, "lisbon"))
    assert tokens.verify(fresh).role is Role.CLINICIAN
    with pytest.raises(TokenInvalid):
        StaffTokens(["another-secret-entirely-0123456789"]).verify(fresh)


def test_a_token_from_a_console_a_little_ahead_is_not_from_the_future(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A console clock 3 s ahead of the service's: the token still verifies (it is
    stamped SKEW_S early); without the backdating its age would be negative: expired."""
    import itsdangerous.timed

    tokens = StaffTokens([SECRET])
    real = itsdangerous.timed.time.time
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real() + 3)
    ahead = tokens.issue(Actor("s-1", Role.FRONT_DESK, "lisbon"))
    monkeypatch.setattr(itsdangerous.timed.time, "time", real)
    assert tokens.verify(ahead).role is Role.FRONT_DESK
