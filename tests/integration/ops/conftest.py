"""Fixtures of the ops tests: the spare Redis database a rebuild writes into."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis


@pytest.fixture
def rebuilt_url(redis_url: str, request: pytest.FixtureRequest) -> str:
    """The test module's own spare database (its `REBUILT_DB`), flushed by it only."""
    db: int = request.module.REBUILT_DB
    return urlsplit(redis_url)._replace(path=f"/{db}").geturl()


@pytest.fixture
async def rebuilt_redis(rebuilt_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(rebuilt_url, decode_responses=True)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()
