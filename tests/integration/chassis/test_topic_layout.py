"""A service checks its topics before it consumes: missing ones (KAP_CREATE_TOPICS=false,
managed elsewhere) and ones with another partition count than configured refuse the
start, naming the topic, instead of failing every publish or breaking per-client order."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest

from chassis.kafka import TopicLayoutError, apply_topics, check_topics
from shared.topics import SESSION_SCHEDULED

pytestmark = pytest.mark.integration


async def test_topics_as_configured_pass_and_a_missing_one_is_named(kafka_bootstrap: str) -> None:
    topic = dataclasses.replace(
        SESSION_SCHEDULED, name=f"test.layout.{uuid.uuid4().hex[:8]}.v1", partitions=3
    )
    with pytest.raises(TopicLayoutError, match="missing") as refused:
        await check_topics(kafka_bootstrap, [topic], records=(), wait_s=1)
    assert topic.name in str(refused.value)
    created = await apply_topics(kafka_bootstrap, topics=[topic], records=())
    assert set(created) == {topic.name, topic.dead_letters}
    await check_topics(kafka_bootstrap, [topic], records=())


async def test_another_partition_count_than_configured_is_refused(kafka_bootstrap: str) -> None:
    topic = dataclasses.replace(
        SESSION_SCHEDULED, name=f"test.layout.{uuid.uuid4().hex[:8]}.v1", partitions=3
    )
    await apply_topics(kafka_bootstrap, topics=[topic], records=())
    resized = dataclasses.replace(topic, partitions=12)
    # apply_topics leaves an existing topic as it is: it never re-partitions in place.
    assert await apply_topics(kafka_bootstrap, topics=[resized], records=()) == []
    with pytest.raises(TopicLayoutError, match="3 on Kafka, 12 configured"):
        await check_topics(kafka_bootstrap, [resized], records=())


async def test_topics_created_while_the_check_looks_are_found(kafka_bootstrap: str) -> None:
    """A service (or a replica beside it) creating the topics as it starts: they reach the
    brokers' metadata a moment after creation. A clean clone's first start once found all
    90 missing and exited; the check now looks again for a while."""
    topic = dataclasses.replace(
        SESSION_SCHEDULED, name=f"test.layout.{uuid.uuid4().hex[:8]}.v1", partitions=3
    )

    async def create_later() -> None:
        await asyncio.sleep(1.5)
        await apply_topics(kafka_bootstrap, topics=[topic], records=())

    await asyncio.gather(
        check_topics(kafka_bootstrap, [topic], records=(), wait_s=10), create_later()
    )
