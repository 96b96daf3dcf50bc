"""/readyz tells the truth: not ready while Redis is gone, ready again when it is back."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests import infra

pytestmark = pytest.mark.integration


async def ready(client: httpx.AsyncClient, want: int, wait_s: float = 30) -> httpx.Response:
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        response = await client.get("/readyz")
        if response.status_code == want or asyncio.get_running_loop().time() > deadline:
            return response
        await asyncio.sleep(0.3)


async def test_readyz_fails_without_redis_and_recovers_when_it_returns(
    redis_url: str, kafka_endpoint: infra.Endpoint, scheduler: httpx.AsyncClient
) -> None:
    if kafka_endpoint.origin != "local" or not redis_url.startswith("redis://127.0.0.1"):
        pytest.skip("stops Redis: only done to the project's own local Redis")
    before = await ready(scheduler, 200)
    assert before.json()["checks"] == {"kafka": True, "redis": True, "consumers": True}
    await asyncio.to_thread(infra.restart_local, "redis.sh", "down")
    try:
        down = await ready(scheduler, 503)
        assert down.status_code == 503
        assert down.json()["checks"]["redis"] is False
    finally:
        await asyncio.to_thread(infra.restart_local, "redis.sh", "up")
    again = await ready(scheduler, 200)
    assert again.status_code == 200
