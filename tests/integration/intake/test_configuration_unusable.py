"""A clinics file that never parsed answers 503, not 500 (issue 14, fault 7, at the front door)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.intake.config import Settings
from services.intake.main import create_app
from tests.helpers import auth, serving

pytestmark = pytest.mark.integration


async def test_an_unusable_clinics_file_answers_503_with_retry_after(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    clinics = tmp_path / "clinics.json"
    clinics.write_text('[{"id": "lisbon", "na')  # caught half-written, never good
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, REDIS_URL=redis_url, KAP_CLINICS_FILE=clinics
    )
    async with serving(create_app(settings)) as intake:
        response = await intake.post(
            "/v1/clinics/lisbon/consultation-requests",
            json={"name": "Ada Example", "email": "ada@example.org"},
            headers=auth("lisbon"),
        )
    assert response.status_code == 503, response.text[:300]
    assert response.headers["Retry-After"]
    assert "configuration" in response.json()["detail"]
