"""When the broker is gone, intake says so (503) and records nothing half-done."""

from __future__ import annotations

import hashlib
import time

import httpx
import pytest
from redis.asyncio import Redis

from services.intake.config import Settings
from services.intake.main import create_app
from tests import infra
from tests.helpers import auth, serving

pytestmark = pytest.mark.integration


async def test_kafka_unreachable_gives_503_with_retry_after_and_no_partial_state(
    kafka_endpoint: infra.Endpoint, intake_settings: Settings, redis_client: Redis, unique: str
) -> None:
    if kafka_endpoint.origin != "local":
        pytest.skip("stops the broker: only done to the project's own local Kafka")
    email = f"down.{unique}@example.org"
    body = {"name": "Ada Example", "email": email, "preferred_channel": "email"}
    headers = {**auth("lisbon"), "Idempotency-Key": f"down-{unique}"}
    app = create_app(intake_settings)
    async with serving(app) as intake:
        infra.restart_local("kafka.sh", "down")
        try:
            started = time.monotonic()
            response = await intake.post(
                "/v1/clinics/lisbon/consultation-requests", json=body, headers=headers
            )
            waited = time.monotonic() - started
        finally:
            infra.restart_local("kafka.sh", "up")
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"]
        assert waited < 30
        digest = hashlib.sha256(email.encode()).hexdigest()
        assert await redis_client.exists(f"intake:{{lisbon}}:contact:{digest}") == 0
        idem = hashlib.sha256(f"down-{unique}".encode()).hexdigest()
        assert await redis_client.exists(f"intake:{{lisbon}}:idempotency:{idem}") == 0

        # Once the broker is back the same request goes through.
        retried = await _retry_until_accepted(intake, body, headers)
        assert retried.status_code == 202


async def _retry_until_accepted(
    intake: httpx.AsyncClient, body: dict[str, str], headers: dict[str, str]
) -> httpx.Response:
    deadline = time.monotonic() + 60
    while True:
        response = await intake.post(
            "/v1/clinics/lisbon/consultation-requests", json=body, headers=headers
        )
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
