"""A pipeline's replies are read under one deadline, not a timer each (issue 19: redis-py's
timer per reply was 8% of the notifier's CPU samples), and a Redis that stops answering
still fails the pipeline within that deadline, as the infrastructure's fault."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio.connection as redis_connection
from redis.asyncio import Redis
from redis.exceptions import TimeoutError as RedisTimeoutError

from chassis.dead_letters import classify
from chassis.redis_client import POOL_TIMEOUT_S, connect_redis

pytestmark = pytest.mark.integration

COMMANDS = 100


async def test_a_pipelines_replies_take_one_deadline_not_a_timer_each(
    redis_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    timers: list[float] = []
    real_timeout = redis_connection.async_timeout

    def counted(delay: float | None) -> Any:
        timers.append(delay or 0.0)
        return real_timeout(delay)

    async def replies_timed(client: Redis) -> list[float]:
        await client.ping()  # connected before counting
        timers.clear()
        monkeypatch.setattr(redis_connection, "async_timeout", counted)
        async with client.pipeline(transaction=False) as reads:
            for n in range(COMMANDS):
                reads.get(f"tests:{{{unique}}}:{n}")
            assert await reads.execute() == [None] * COMMANDS
        monkeypatch.setattr(redis_connection, "async_timeout", real_timeout)
        await client.aclose()
        return list(timers)

    assert len(await replies_timed(Redis.from_url(redis_url))) == COMMANDS  # redis-py's own
    # Ours: only the wait for a connection of the pool (one a pipeline; the deadline is
    # one asyncio timeout of the pipeline itself).
    assert await replies_timed(connect_redis(redis_url)) == [POOL_TIMEOUT_S]


@pytest.fixture
def paused_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of the test's own (Debian's), to stop with SIGSTOP."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed (make test installs it)")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    process = subprocess.Popen(
        [server, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        process.kill()
        process.wait()


async def test_a_redis_that_stops_answering_fails_the_pipeline_within_its_deadline(
    paused_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, server = paused_redis
    client = connect_redis(f"{url}?socket_timeout=0.3")
    try:
        await client.set("tests:{deadline}:k", "v")
        server.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        tx = client.pipeline(transaction=True)
        tx.get("tests:{deadline}:k")
        tx.incr("tests:{deadline}:n")
        with pytest.raises(RedisTimeoutError) as late:
            await tx.execute()
        assert time.monotonic() - started < 2.0
        assert classify(late.value) == "redeliver"
        server.send_signal(signal.SIGCONT)
        async with client.pipeline(transaction=True) as tx:  # a new connection: answered
            tx.get("tests:{deadline}:k")
            assert await asyncio.wait_for(tx.execute(), 5) == ["v"]
    finally:
        server.send_signal(signal.SIGCONT)
        await client.aclose()
