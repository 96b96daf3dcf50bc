"""A service is not ready on a Redis that evicts: an evicted handled mark or effect record
would let an input apply twice. Proved on real redis-servers started here (loopback,
ports KAP_TEST_REDIS_PORT_BASE and the next one), one of them with CONFIG renamed as
managed Redis services do, so the policy is read from INFO memory instead."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from chassis.config import ServiceSettings
from chassis.service import ServiceRuntime

pytestmark = pytest.mark.integration

BASE_PORT = int(os.environ.get("KAP_TEST_REDIS_PORT_BASE", "17020"))
RENAMED_CONFIG = "kap-hidden-config"


async def _started(port: int) -> None:
    client = Redis(port=port)
    try:
        for _ in range(100):
            try:
                if await client.ping():
                    return
            except Exception:
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError(f"redis-server on {port} did not answer")
    finally:
        await client.aclose()


@pytest.fixture
def evicting_servers(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """Two evicting servers (allkeys-lru): CONFIG as usual, and CONFIG renamed."""
    if not shutil.which("redis-server"):
        pytest.skip("needs Debian's redis-server (infra/redis.sh installs it)")
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    common += ["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]
    processes = [
        subprocess.Popen(
            ["redis-server", "--port", str(port), "--dir", str(tmp_path), *common, *extra],
            stdout=subprocess.DEVNULL,
        )
        for port, extra in (
            (BASE_PORT, []),
            (BASE_PORT + 1, ["--rename-command", "CONFIG", RENAMED_CONFIG]),
        )
    ]
    try:
        yield BASE_PORT, BASE_PORT + 1
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


async def _readiness(port: int) -> dict[str, bool]:
    settings = ServiceSettings(redis_url=f"redis://127.0.0.1:{port}/0")
    runtime = ServiceRuntime.create("scheduler", settings)
    try:
        return await runtime.readiness()
    finally:
        await runtime.redis.aclose()


async def test_an_evicting_redis_keeps_the_service_unready_until_set_to_noeviction(
    evicting_servers: tuple[int, int],
) -> None:
    plain, renamed = evicting_servers
    for port in (plain, renamed):
        await _started(port)
        checks = await _readiness(port)
        assert checks["redis"] is True
        assert checks["redis_noeviction"] is False, port

    plain_client = Redis(port=plain)
    renamed_client = Redis(port=renamed)
    try:
        await plain_client.config_set("maxmemory-policy", "noeviction")
        await renamed_client.execute_command(
            RENAMED_CONFIG, "SET", "maxmemory-policy", "noeviction"
        )
    finally:
        await plain_client.aclose()
        await renamed_client.aclose()
    # True for the renamed one can only come from INFO memory: CONFIG GET fails there.
    for port in (plain, renamed):
        assert (await _readiness(port))["redis_noeviction"] is True, port
