"""The unit of work's crash points (chassis/unit_of_work.py), each met by a SIGKILL.

A writer process is killed before its write, after it, and after its publish;
then the input comes again (a redelivery) or the relay runs. Judged from the
topic and Redis: the state changed once, the event is on the topic under one
id (twice only after a publish whose outbox was not cleared: the same id, a
duplicate readers drop), and the outbox is empty.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from chassis.unit_of_work import UnitOfWork
from ops.reading import read_to_end
from shared import topics
from tests.integration.chassis.crash_writer import GRACE_MS, state_key

pytestmark = pytest.mark.integration

TOPIC = topics.CONSULTATION_REQUESTED.name


async def _ends(bootstrap: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(TOPIC, p) for p in consumer.partitions_for_topic(TOPIC) or ()]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def _written(bootstrap: str, redis_url: str, point: str, clinic: str, client: str) -> int:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "REDIS_URL": redis_url}
    args = [sys.executable, "-m", "tests.integration.chassis.crash_writer"]
    done = await asyncio.to_thread(
        subprocess.run, [*args, point, clinic, client, f"input-{client}"], env=env, timeout=60
    )
    return done.returncode


async def _copies(bootstrap: str, since: dict[TopicPartition, int], client: str) -> list[str]:
    """The ids of the client's events on the topic since `since`."""
    records = await read_to_end(bootstrap, [TOPIC], since)
    return [
        dict(r.headers)["ce_id"].decode()
        for r in records
        if r.key is not None and r.key.decode() == client
    ]


@pytest.mark.parametrize("point", ["before_write", "after_write", "after_publish"])
async def test_a_sigkill_at_each_crash_point_loses_nothing_and_applies_nothing_twice(
    point: str,
    uow: UnitOfWork,
    kafka_bootstrap: str,
    redis_url: str,
    redis_client: Redis,
    unique: str,
) -> None:
    clinic, client = f"crash-{unique}", str(uuid.uuid4())
    since = await _ends(kafka_bootstrap)

    assert await _written(kafka_bootstrap, redis_url, point, clinic, client) == -9
    written = await redis_client.get(state_key(clinic, client))
    assert written == (None if point == "before_write" else "1")
    on_topic = await _copies(kafka_bootstrap, since, client)
    assert len(on_topic) == (1 if point == "after_publish" else 0)
    assert await uow.pending(clinic) == (0 if point == "before_write" else 1)

    # The input comes again (Kafka redelivers what was not committed, after the dead
    # consumer's session ends): it finds its handled mark, or is handled now.
    await asyncio.sleep(GRACE_MS / 1000)
    assert await _written(kafka_bootstrap, redis_url, "none", clinic, client) == 0
    assert await redis_client.get(state_key(clinic, client)) == "1"
    copies = await _copies(kafka_bootstrap, since, client)
    assert len(copies) == (2 if point == "after_publish" else 1)
    assert len(set(copies)) == 1  # a second copy carries the same id
    assert await uow.pending(clinic) == 0


async def test_the_relay_publishes_what_a_killed_writer_left_in_the_outbox(
    uow: UnitOfWork, kafka_bootstrap: str, redis_url: str, unique: str
) -> None:
    clinic, client = f"crash-{unique}", str(uuid.uuid4())
    since = await _ends(kafka_bootstrap)
    assert await _written(kafka_bootstrap, redis_url, "after_write", clinic, client) == -9
    assert await _copies(kafka_bootstrap, since, client) == []

    assert await uow.relay_once([clinic], grace_ms=60_000) == 0  # not yet orphaned
    assert await uow.relay_once([clinic], grace_ms=0) == 1
    assert len(await _copies(kafka_bootstrap, since, client)) == 1
    assert await uow.pending(clinic) == 0


async def test_what_a_killed_writer_left_is_relayed_by_the_replica_owning_its_bucket(
    uow: UnitOfWork, kafka_bootstrap: str, redis_url: str, redis_client: Redis, unique: str
) -> None:
    # Two replicas' relays on the one outbox index, no sweep: the index alone finds it.
    uow.relay_grace_ms = GRACE_MS
    replicas = [uow.outbox.relay_work(list, lease_ms=300, sweep_s=3600) for _ in range(2)]
    deadline = time.monotonic() + 10
    while not all(r.owners.owned for r in replicas):  # the buckets split between them
        assert time.monotonic() < deadline, "the replicas did not share the buckets"
        for replica in replicas:
            await uow.outbox.relay_due(replica)
        await asyncio.sleep(0.05)

    clinic, client = f"crash-{unique}", str(uuid.uuid4())
    index = uow.outbox.index
    since = await _ends(kafka_bootstrap)
    try:
        assert await _written(kafka_bootstrap, redis_url, "after_write", clinic, client) == -9
        assert await redis_client.zscore(index.key(index.bucket(clinic)), clinic) is not None
        while await uow.pending(clinic):
            assert time.monotonic() < deadline + 10, "the relay did not publish what was left"
            for replica in replicas:
                await uow.outbox.relay_due(replica)
            await asyncio.sleep(0.05)
        owners = [r for r in replicas if index.bucket(clinic) in r.owners.owned]
    finally:
        for replica in replicas:
            await replica.owners.release()

    assert len(owners) == 1
    assert len(await _copies(kafka_bootstrap, since, client)) == 1
    # Settled: an empty outbox leaves the index, so no later round looks at it.
    assert await redis_client.zscore(index.key(index.bucket(clinic)), clinic) is None
