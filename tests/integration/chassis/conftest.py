"""A unit of work publishing as intake does, on the real Kafka and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from chassis.config import ServiceSettings
from chassis.events import EventPublisher
from chassis.kafka import apply_topics, make_broker
from chassis.unit_of_work import UnitOfWork
from shared import topics
from tests.integration.chassis.crash_writer import SERVICE


@pytest.fixture
async def uow(kafka_bootstrap: str, redis_client: Redis) -> AsyncIterator[UnitOfWork]:
    await apply_topics(kafka_bootstrap)
    broker = make_broker(ServiceSettings(kafka_bootstrap_servers=kafka_bootstrap), SERVICE)
    await broker.start()
    yield UnitOfWork(
        redis_client, SERVICE, EventPublisher(broker, "intake", topics.produced_by("intake"))
    )
    await broker.stop()
