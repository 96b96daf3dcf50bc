from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from tests import infra

log = logging.getLogger("tests")


@pytest.fixture(scope="session")
def kafka_endpoint() -> Iterator[infra.Endpoint]:
    with infra.kafka() as endpoint:
        log.info("kafka at %s (%s)", endpoint.address, endpoint.origin)
        os.environ.setdefault("KAFKA_BOOTSTRAP_SERVERS", endpoint.address)
        yield endpoint


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_endpoint: infra.Endpoint) -> str:
    return kafka_endpoint.address


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with infra.redis() as endpoint:
        log.info("redis at %s (%s)", endpoint.address, endpoint.origin)
        os.environ.setdefault("REDIS_URL", endpoint.address)
        yield endpoint.address


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def unique() -> str:
    """A fresh suffix, so tests use random ids instead of cleaning up."""
    return uuid.uuid4().hex[:10]
