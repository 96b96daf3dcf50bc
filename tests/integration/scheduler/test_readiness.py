"""/readyz tells the truth: not ready while Redis is gone, ready again when it is back."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from chassis.clock import FrozenClock
from chassis.kafka import group_id
from services.scheduler.config import Settings
from services.scheduler.main import create_app
from shared import topics
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


SCHEDULER_TOPICS = [
    topics.CONSULTATION_REQUESTED,
    topics.CONSULTATION_HELD,
    topics.CLIENT_ENROLLED,
    topics.MEASURE_ANSWERED,
]


async def test_readyz_stays_ready_through_rebalances_and_with_no_partitions(
    kafka_bootstrap: str, scheduler: httpx.AsyncClient
) -> None:
    """As many members join the scheduler's group as its topics have partitions, named to
    sort first, so the round-robin assignor deals them every partition and the serving
    replica none (a replica beyond the partition count); then they leave. The replica is healthy
    throughout (it takes partitions back at the next rebalance): /readyz must not say
    otherwise, or a load balancer pulls replicas at every deploy and scale-out."""
    assert (await ready(scheduler, 200)).status_code == 200
    statuses: list[int] = []
    watching = True

    async def watch() -> None:
        while watching:
            statuses.append((await scheduler.get("/readyz")).status_code)
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    others = [
        AIOKafkaConsumer(
            *(topic.name for topic in SCHEDULER_TOPICS),
            bootstrap_servers=kafka_bootstrap,
            group_id=group_id("scheduler"),
            client_id=f"a-standby-{n}",  # member ids sort before the scheduler's "kap-..."
            enable_auto_commit=False,
            heartbeat_interval_ms=500,
        )
        for n in range(sum(topic.partitions for topic in SCHEDULER_TOPICS))
    ]
    held = 0
    try:
        await asyncio.gather(*(consumer.start() for consumer in others))
        deadline = asyncio.get_running_loop().time() + 30
        while held < len(others):
            assert asyncio.get_running_loop().time() < deadline, f"they hold {held} partitions"
            await asyncio.gather(*(c.getmany(timeout_ms=100) for c in others))
            held = sum(len(c.assignment()) for c in others)
        await asyncio.sleep(2)  # the serving replica holds no partition all this while
    finally:
        await asyncio.gather(*(consumer.stop() for consumer in others))
    await asyncio.sleep(2)  # they left: the serving replica takes every partition back
    watching = False
    await watcher
    assert len(statuses) > 50
    assert set(statuses) == {200}, f"{statuses.count(503)} of {len(statuses)} answers were 503"
