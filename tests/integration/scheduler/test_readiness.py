"""/readyz tells the truth: not ready while Redis is gone, ready again when it is back."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from chassis.clock import FrozenClock
from services.scheduler.config import Settings
from services.scheduler.main import create_app
from tests import infra
from tests.helpers import serving

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
    assert before.json()["checks"] == {
        "kafka": True,
        "redis": True,
        "redis_noeviction": True,
        "consumers": True,
        "workers": True,
    }
    await asyncio.to_thread(infra.restart_local, "redis.sh", "down")
    try:
        down = await ready(scheduler, 503)
        assert down.status_code == 503
        assert down.json()["checks"]["redis"] is False
    finally:
        await asyncio.to_thread(infra.restart_local, "redis.sh", "up")
    again = await ready(scheduler, 200)
    assert again.status_code == 200


async def test_readyz_fails_while_a_background_loop_is_down(
    scheduler_settings: Settings, clock: FrozenClock
) -> None:
    """A loop that keeps failing is restarted with backoff and shows on /readyz meanwhile."""
    app = create_app(scheduler_settings, clock)

    async def failing_loop() -> None:
        raise RuntimeError("a loop that cannot run")

    app.state.runtime.workers.append(failing_loop)
    async with serving(app) as client:
        down = await ready(client, 503)
        assert down.status_code == 503
        assert down.json()["checks"]["workers"] is False
        assert down.json()["checks"]["redis"] is True
