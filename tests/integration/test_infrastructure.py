"""The real broker and the real Redis answer, with the guarantees the services rely on."""

from __future__ import annotations

import logging

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from redis.asyncio import Redis

from tests import infra

pytestmark = pytest.mark.integration
log = logging.getLogger("tests.smoke")


async def test_kafka_round_trips_with_acks_all_idempotence_and_committed_offsets(
    kafka_bootstrap: str, unique: str
) -> None:
    topic, group = f"smoke.{unique}", f"smoke-{unique}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 6, 1)])
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()

    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b"hello", key=b"client-1")
    finally:
        await producer.stop()
    log.info(
        "kafka broker: Apache Kafka %s, cluster %s, controller %s",
        infra.local_kafka_version() or "(external)",
        cluster["cluster_id"],
        cluster["controller_id"],
    )
    assert cluster["brokers"], "the cluster reports its brokers"

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        record = await consumer.getone()
        await consumer.commit()
        partition = TopicPartition(topic, record.partition)
        committed = await consumer.committed(partition)
    finally:
        await consumer.stop()

    assert (record.key, record.value) == (b"client-1", b"hello")
    assert record.partition == sent.partition
    assert committed == record.offset + 1


async def test_redis_round_trips_a_value_with_append_only_persistence(
    redis_client: Redis, unique: str
) -> None:
    key = f"smoke:{{{unique}}}:value"
    await redis_client.set(key, "hello", ex=60)
    assert await redis_client.get(key) == "hello"
    persistence = await redis_client.config_get("appendonly")
    info = await redis_client.info("server")
    log.info("redis server: version %s", info["redis_version"])
    assert persistence["appendonly"] == "yes"
