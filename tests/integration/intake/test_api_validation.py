"""Intake over HTTP: well-typed but wrong input is a 422 that names the field, and
nothing of the request is recorded."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.helpers import auth

pytestmark = pytest.mark.integration

ARABIC_INDIC = "\u0665\u0665\u0665\u0661\u0662\u0663\u0664\u0665\u0666\u0667"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timezone", "x" * 10_000),
        ("timezone", "Europe"),
        ("timezone", "Europe/" + "a" * 300),
        ("preferred_times", [{"weekday": 0, "start": "09:00", "end": "10:00Z"}]),
        ("preferred_times", [{"weekday": 0, "start": "09:00+01:00", "end": "10:00"}]),
        ("phone", "+1" + ARABIC_INDIC),
    ],
)
async def test_wrong_but_well_typed_input_is_a_422_naming_the_field(
    intake: httpx.AsyncClient, redis_client: Redis, unique: str, field: str, value: Any
) -> None:
    email = f"v.{unique}@example.org"
    response = await intake.post(
        "/v1/clinics/lisbon/consultation-requests",
        json={"name": "Ada Example", "email": email, field: value},
        headers={**auth("lisbon"), "Idempotency-Key": f"v-{unique}"},
    )
    assert response.status_code == 422, response.text[:500]
    locations = [error["loc"] for error in response.json()["detail"]]
    assert any(field in location for location in locations), locations
    digest = hashlib.sha256(email.encode()).hexdigest()
    assert await redis_client.exists(f"intake:{{lisbon}}:contact:{digest}") == 0
