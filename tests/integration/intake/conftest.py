from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.intake.config import Settings
from services.intake.main import create_app
from tests.helpers import serving, write_clinics


@pytest.fixture
def intake_settings(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        REDIS_URL=redis_url,
        KAP_CLINICS_FILE=write_clinics(tmp_path / "clinics.json"),
        # Every test calls from one address, into the same clinics of one Redis: the
        # per-address limits are tested on their own (test_rate_limits.py).
        KAP_FORM_RATE_PER_ADDRESS=0,
        KAP_CONSULTATION_RATE_PER_ADDRESS=0,
        KAP_CONSULTATION_RATE_PER_CLIENT=0,
    )


@pytest.fixture
async def intake(intake_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(intake_settings)) as client:
        yield client
