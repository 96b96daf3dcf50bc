from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from faststream.kafka import KafkaBroker

from chassis.clock import FrozenClock
from chassis.config import ServiceSettings
from chassis.events import EventPublisher
from chassis.kafka import make_broker
from services.scheduler.config import Settings
from services.scheduler.main import create_app
from shared import topics
from tests.helpers import CLINICS, serving, write_clinics

WEEKDAYS = {str(day): [{"start": "08:00", "end": "19:00"}] for day in range(5)}
CALENDAR: dict[str, Any] = {
    "opening_hours": WEEKDAYS,
    "therapists": [
        {"id": "t-ana", "display_name": "Ana", "availability": WEEKDAYS},
        {
            "id": "t-bea",
            "display_name": "Bea",
            "availability": {
                "1": [{"start": "09:00", "end": "17:00"}],
                "3": [{"start": "09:00", "end": "17:00"}],
            },
        },
    ],
    "rooms": [
        {"id": "recliner-1", "name": "Recliner 1"},
        {"id": "recliner-2", "name": "Recliner 2"},
    ],
}
# A Monday morning in a week of its own: tests share Redis, so each starts in an
# empty stretch of the calendar instead of cleaning up after the others.
START = datetime(2027, 1, 4, 7, 0, tzinfo=UTC)  # a Monday


@pytest.fixture
def clinics_file(tmp_path: Path) -> Path:
    clinics = {
        clinic_id: {**spec, "sections": {"scheduler": CALENDAR}}
        for clinic_id, spec in CLINICS.items()
    }
    return write_clinics(tmp_path / "clinics.json", clinics)


@pytest.fixture
def clock() -> FrozenClock:
    # Each test its own week too (tests book the same clinic's therapists).
    return FrozenClock(START + timedelta(weeks=random.randrange(52 * 40)))


@pytest.fixture
def scheduler_settings(kafka_bootstrap: str, redis_url: str, clinics_file: Path) -> Settings:
    return Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        REDIS_URL=redis_url,
        KAP_CLINICS_FILE=clinics_file,
        KAP_TIMER_POLL_MS=50,
    )


@pytest.fixture
def scheduler_app(
    scheduler_settings: Settings, clock: FrozenClock
) -> Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]]:
    """A fresh scheduler process (same settings, same clock) each time it is entered."""
    return lambda: serving(create_app(scheduler_settings, clock))


@pytest.fixture
async def scheduler(
    scheduler_app: Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]],
) -> AsyncIterator[httpx.AsyncClient]:
    async with scheduler_app() as client:
        yield client


@pytest.fixture
async def intake_events(kafka_bootstrap: str) -> AsyncIterator[EventPublisher]:
    """Publishes as the intake service would."""
    broker: KafkaBroker = make_broker(
        ServiceSettings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap), "intake"
    )
    publisher = EventPublisher(broker, "intake", topics.produced_by("intake"))
    await broker.start()
    yield publisher
    await broker.stop()
