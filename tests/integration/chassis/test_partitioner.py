"""The services' producer partitions by client with the Java client's murmur2, hashing a
client's key once for all its records (chassis.kafka.KeyPartitioner, issue 19)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner

from chassis import kafka
from chassis.config import ServiceSettings
from chassis.events import EventPublisher
from shared import events as ev
from shared import topics
from tests.helpers import topic_messages


async def partition_count(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        return len(consumer.partitions_for_topic(topic) or ())
    finally:
        await consumer.stop()


pytestmark = pytest.mark.integration


async def test_a_clients_events_land_on_its_murmur2_partition_hashed_once(
    kafka_bootstrap: str,
) -> None:
    settings = ServiceSettings(kafka_bootstrap_servers=kafka_bootstrap)
    broker = kafka.make_broker(settings, "scheduler")
    publisher = EventPublisher(broker, "scheduler", topics.produced_by("scheduler"))
    client = uuid.uuid4()
    now = datetime.now(UTC)
    events = [
        ev.BoosterDue(
            clinic_id="partitioner-test",
            client_id=client,
            occurred_at=now,
            course_id=uuid.uuid4(),
            booster_number=n,
            due_at=now,
        )
        for n in (1, 2, 3)
    ]
    await kafka.apply_topics(kafka_bootstrap)
    await broker.start()
    try:
        hashed_before = kafka._key_hash.cache_info().misses
        await publisher.publish_all([(e, publisher.envelope_for(e)) for e in events])
        assert kafka._key_hash.cache_info().misses == hashed_before + 1
    finally:
        await broker.stop()
    found = await topic_messages(
        kafka_bootstrap, topics.BOOSTER_DUE.name, key=str(client), expect=3
    )
    partitions = list(range(await partition_count(kafka_bootstrap, topics.BOOSTER_DUE.name)))
    expected = DefaultPartitioner()(str(client).encode(), partitions, partitions)
    assert {m["partition"] for m in found} == {expected}
