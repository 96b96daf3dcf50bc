"""The local three-broker Kafka (`KAFKA_NODES=3 infra/kafka.sh`): a topic created as the
services create theirs, with KAP_TOPIC_REPLICATION_FACTOR=3, keeps every acknowledged
event exactly once and in order per key while one broker is killed and restarted
under an idempotent acks=all producer."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from chassis.config import ServiceSettings
from chassis.kafka import apply_topics, make_broker
from shared.topics import SESSION_SCHEDULED
from tests import infra

pytestmark = pytest.mark.integration

BASE_PORT = 19100  # nodes on 19100, 19102, 19104; controllers one above each
KEYS = [f"client-{i}" for i in range(12)]
ROUNDS_BEFORE_KILL = 20
ROUNDS_WHILE_DOWN = 20
ROUNDS_AFTER_RESTART = 20
IN_FLIGHT_PER_KEY = 4


@pytest.fixture(scope="module")  # three JVMs: stopped before the next module's tests
def cluster() -> Iterator[infra.KafkaCluster]:
    if shutil.which("java") is None:
        pytest.skip("Java is not installed: the local Kafka cluster needs Java 17+")
    with infra.kafka_cluster(BASE_PORT) as running:
        yield running


async def topic_layout(bootstrap: str, topic: str) -> tuple[list[dict[str, Any]], str | None]:
    """The topic's partitions (leader, replicas, in-sync set) and its min.insync.replicas
    (None while the broker that answered has not yet learnt of the new topic)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    entries = {name: value for name, value, *_ in configs[0].resources[0][4]}
    return described["partitions"], entries.get("min.insync.replicas")


async def wait_for_full_isr(bootstrap: str, topic: str, count: int) -> list[dict[str, Any]]:
    """The topic's partitions once all `count` exist with three replicas in sync (new
    topics reach every broker's metadata a moment after creation; a restarted node
    rejoins the in-sync sets once it has caught up)."""
    partitions, _ = await wait_for_layout(bootstrap, topic, count)
    return partitions


async def wait_for_layout(
    bootstrap: str, topic: str, count: int
) -> tuple[list[dict[str, Any]], str | None]:
    """The topic's layout once every partition has three replicas in sync and the
    answering broker reports its configs (a broker that has not yet seen a new topic
    answers with no entries: a clean clone read KeyError here once)."""
    deadline = time.monotonic() + 30
    while True:
        partitions, min_insync = await topic_layout(bootstrap, topic)
        complete = len(partitions) == count and all(len(p["isr"]) == 3 for p in partitions)
        if complete and min_insync is not None:
            return partitions, min_insync
        assert time.monotonic() < deadline, (
            f"in-sync replicas not 3 everywhere or no configs: {partitions}, {min_insync}"
        )
        await asyncio.sleep(0.5)


async def read_all(bootstrap: str, topic: str, count: int) -> list[tuple[str, int]]:
    """Every (key, sequence) on the topic, from the start to the current end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        seen: list[tuple[str, int]] = []
        deadline = time.monotonic() + 20
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, "could not read the topic to its end"
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    assert record.key is not None
                    assert record.value is not None
                    key, sequence = record.value.decode().split(":")
                    assert key == record.key.decode()
                    seen.append((key, int(sequence)))
        return seen
    finally:
        await consumer.stop()


async def test_acknowledged_events_survive_a_killed_broker_once_each_and_in_order(
    cluster: infra.KafkaCluster, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The topic is made as a service makes its own at start (chassis.kafka.apply_topics
    # with the configured replication factor), which sets min in-sync replicas to 2.
    monkeypatch.setenv("KAP_TOPIC_REPLICATION_FACTOR", "3")
    settings = ServiceSettings(kafka_bootstrap_servers=cluster.bootstrap)
    topic = dataclasses.replace(SESSION_SCHEDULED, name=f"test.cluster.{unique}.v1")
    created = await apply_topics(
        settings.kafka_bootstrap_servers,
        settings.topic_replication_factor,
        topics=[topic],
        records=(),
    )
    assert set(created) == {topic.name, topic.dead_letters}
    partitions, min_insync = await wait_for_layout(cluster.bootstrap, topic.name, topic.partitions)
    assert all(len(p["replicas"]) == 3 for p in partitions)
    assert min_insync == "2"

    producer = AIOKafkaProducer(
        bootstrap_servers=cluster.bootstrap,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=30_000,
    )
    await producer.start()
    acknowledged: set[tuple[str, int]] = set()
    failed: set[tuple[str, int]] = set()
    sequence = 0

    async def produce(rounds: int) -> None:
        # Several events per key in flight at once in each round: the idempotent
        # producer must keep each key's order across the retries a lost leader causes.
        nonlocal sequence
        for _ in range(rounds):
            sent = []
            for _ in range(IN_FLIGHT_PER_KEY):
                for key in KEYS:
                    value = f"{key}:{sequence}".encode()
                    future = await producer.send(topic.name, value, key=key.encode())
                    sent.append(((key, sequence), future))
                sequence += 1
            for event, future in sent:
                try:
                    await future
                    acknowledged.add(event)
                except Exception:
                    failed.add(event)

    try:
        await produce(ROUNDS_BEFORE_KILL)
        # The node leading partition 0 (any node leads some partitions, and each one
        # follows all of them, so the producer's writes must move to new leaders).
        victim = partitions[0]["leader"]
        os.kill(cluster.pid(victim), signal.SIGKILL)
        await produce(ROUNDS_WHILE_DOWN)
        restart = asyncio.create_task(asyncio.to_thread(cluster.up))
        await produce(ROUNDS_AFTER_RESTART)
        await restart
        await produce(5)
    finally:
        await producer.stop()

    await wait_for_full_isr(cluster.bootstrap, topic.name, topic.partitions)
    seen = await read_all(cluster.bootstrap, topic.name, topic.partitions)
    counts = Counter(seen)
    assert not failed, f"{len(failed)} sends failed although two replicas stayed in sync"
    assert len(acknowledged) == len(KEYS) * sequence
    assert counts.keys() <= acknowledged, "events on the topic that were never sent"
    missing = acknowledged - counts.keys()
    duplicated = {event: n for event, n in counts.items() if n > 1}
    assert not missing, f"{len(missing)} acknowledged events are not on the topic"
    assert not duplicated, f"events written more than once: {sorted(duplicated)[:5]}"
    per_key: dict[str, list[int]] = defaultdict(list)
    for key, number in seen:
        per_key[key].append(number)
    for key, numbers in per_key.items():
        assert numbers == sorted(numbers), f"{key}'s events out of order"


async def test_a_service_broker_connects_to_every_broker_the_setting_lists(
    cluster: infra.KafkaCluster, unique: str
) -> None:
    """KAFKA_BOOTSTRAP_SERVERS names several brokers, comma-separated, as a managed
    cluster's does. The services' broker once passed the whole string as one host
    ("Unable to bootstrap from [('127.0.0.1:19100,...', ...)]"): no service could start."""
    settings = ServiceSettings(KAFKA_BOOTSTRAP_SERVERS=cluster.bootstrap)
    assert "," in settings.kafka_bootstrap_servers
    topic = dataclasses.replace(SESSION_SCHEDULED, name=f"test.bootstrap.{unique}.v1")
    await apply_topics(settings.kafka_bootstrap_servers, 3, topics=[topic], records=())
    broker = make_broker(settings, "tests")
    await broker.start()
    try:
        await broker.publish(b"listed", topic=topic.name, key=b"k")
    finally:
        await broker.stop()
    consumer = AIOKafkaConsumer(
        topic.name, bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=10_000)
    finally:
        await consumer.stop()
    assert [r.value for records in batches.values() for r in records] == [b"listed"]
