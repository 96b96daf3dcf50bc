"""One clinic never sees another's data: every clinic route of every service, tried
with the wrong clinic's key, with no key, and with another clinic's client."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from services.intake.config import Settings as IntakeSettings
from services.intake.main import create_app as intake_app
from services.notifier.config import Settings as NotifierSettings
from services.notifier.main import create_app as notifier_app
from services.scheduler.config import Settings as SchedulerSettings
from services.scheduler.main import create_app as scheduler_app
from tests.helpers import auth, serving, write_clinics

pytestmark = pytest.mark.integration


@pytest.fixture
async def apps(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> AsyncIterator[dict[str, tuple[FastAPI, httpx.AsyncClient]]]:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "REDIS_URL": redis_url,
        "KAP_CLINICS_FILE": write_clinics(tmp_path / "clinics.json"),
    }
    built = {
        "intake": intake_app(IntakeSettings(**env)),
        "scheduler": scheduler_app(SchedulerSettings(**env)),
        "notifier": notifier_app(NotifierSettings(**env)),
    }
    async with (
        serving(built["intake"]) as intake,
        serving(built["scheduler"]) as scheduler,
        serving(built["notifier"]) as notifier,
    ):
        clients = {"intake": intake, "scheduler": scheduler, "notifier": notifier}
        yield {name: (built[name], clients[name]) for name in built}


def clinic_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every clinic-scoped operation, as the service's own OpenAPI document lists it."""
    return [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/v1/clinics/{clinic_id}")
        for method in sorted(operations)
    ]


def fill(path: str, clinic: str, client: str) -> str:
    return (
        path.replace("{clinic_id}", clinic)
        .replace("{client_id}", client)
        .replace("{appointment_id}", str(uuid.uuid4()))
    )


async def test_every_clinic_route_refuses_other_clinics_and_strangers(
    apps: dict[str, tuple[FastAPI, httpx.AsyncClient]], unique: str
) -> None:
    intake = apps["intake"][1]
    created = await intake.post(
        "/v1/clinics/lisbon/consultation-requests",
        json={"name": "Ada Example", "email": f"iso.{unique}@example.org"},
        headers=auth("lisbon"),
    )
    assert created.status_code == 202
    lisbon_client = created.json()["client_id"]
    tried = 0
    for service, (app, client) in apps.items():
        routes = clinic_routes(app)
        assert routes, f"{service} has no clinic routes"
        for method, path in routes:
            foreign_key = await client.request(
                method, fill(path, "lisbon", lisbon_client), headers=auth("boston"), json={}
            )
            assert foreign_key.status_code == 404, (service, method, path, foreign_key.text)
            assert lisbon_client not in foreign_key.text
            stranger = await client.request(method, fill(path, "lisbon", lisbon_client), json={})
            assert stranger.status_code == 401, (service, method, path)
            if "{client_id}" in path and method == "GET":
                # Boston's own key, Boston's own path, Lisbon's client: not found.
                crossed = await client.get(
                    fill(path, "boston", lisbon_client), headers=auth("boston")
                )
                assert crossed.status_code == 404, (service, path)
            tried += 1
    assert tried >= 15
