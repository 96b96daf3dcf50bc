"""Reading topics back as they stand: from the first kept record to the current end."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

# How long a reader looks again for a topic its first metadata answer lacked: a
# metadata answer can miss a topic that exists (a rebuild once read none of
# notification.sent's records, silently); one that is truly absent costs this wait.
LOOK_AGAIN_S = 2.0
REQUIRED_WAIT_S = 15.0


class MissingTopics(RuntimeError):
    """Topics a reader needs (a rebuild, an export) are not on the cluster."""


async def read_to_end(
    bootstrap: str,
    topics: Iterable[str],
    since: Mapping[TopicPartition, int] | None = None,
    *,
    security: Mapping[str, Any] | None = None,
    required: bool = False,
) -> list[Any]:
    """Every record now on `topics` (no consumer group, nothing committed).

    With `since`, a partition it names is read from that offset instead of its start.
    `security`: the login and TLS options of `chassis.kafka.client_options`.
    `required`: a topic not found is an error (MissingTopics), not an empty topic.
    """
    found: list[Any] = []
    async with assigned(bootstrap, topics, security, required) as (consumer, partitions):
        if not partitions:
            return found
        await consumer.seek_to_beginning(*partitions)
        for tp, offset in (since or {}).items():
            if tp in partitions:
                consumer.seek(tp, offset)
        ends = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > (since or {}).get(tp, 0)}
        while remaining:
            for records in (await consumer.getmany(*remaining, timeout_ms=500)).values():
                found += records
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
        return found


async def in_kafka_order(
    bootstrap: str,
    topics: Iterable[str],
    *,
    follow: bool = False,
    security: Mapping[str, Any] | None = None,
    required: bool = False,
) -> AsyncIterator[Any]:
    """Every record now on `topics`, streamed in one order: each partition's own (offset)
    order exactly, partitions merged by record time (as a service consuming them all
    met them, within its lag). Held in memory: one fetch per partition, not the topics.

    Up to the end offsets found at the start; with `follow`, then on to the ends found
    after, until a look finds nothing new (what was written while reading).
    `required`: as read_to_end's."""
    async with assigned(bootstrap, topics, security, required) as (consumer, partitions):
        if not partitions:
            return
        starts = await consumer.beginning_offsets(partitions)
        for tp, start in starts.items():  # an explicit position, not a reset to race
            consumer.seek(tp, start)
        done = dict(starts)  # per partition, the next offset to yield
        ends = await consumer.end_offsets(partitions)
        while True:
            async for record in _merged(consumer, ends):
                done[TopicPartition(record.topic, record.partition)] = record.offset + 1
                yield record
            if not follow:
                return
            ends = await consumer.end_offsets(partitions)
            behind = [tp for tp in partitions if ends[tp] > done[tp]]
            if not behind:
                return
            for tp in behind:
                consumer.seek(tp, done[tp])


@contextlib.asynccontextmanager
async def assigned(
    bootstrap: str,
    topics: Iterable[str],
    security: Mapping[str, Any] | None,
    required: bool = False,
) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A consumer with no group, assigned every partition of `topics`, stopped
    afterwards. A topic the metadata lacks is looked for again (LOOK_AGAIN_S, or
    REQUIRED_WAIT_S when `required`); then it is read as empty, or, when `required`,
    MissingTopics is raised."""
    # Earliest: the default ("latest") reset, begun in the background on assignment,
    # could land after a seek to the beginning and leave a reader at the end, reading
    # nothing (a rebuild once read no record at all, about one run in fifteen).
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **(security or {}),
    )
    await consumer.start()
    try:
        wanted = list(dict.fromkeys(topics))
        deadline = time.monotonic() + (REQUIRED_WAIT_S if required else LOOK_AGAIN_S)
        while True:
            await consumer._client.force_metadata_update()
            missing = [t for t in wanted if not consumer.partitions_for_topic(t)]
            if not missing or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.25)
        if missing and required:
            raise MissingTopics(f"not on the cluster at {bootstrap}: {', '.join(missing)}")
        partitions = [
            TopicPartition(topic, p)
            for topic in wanted
            for p in consumer.partitions_for_topic(topic) or ()
        ]
        if partitions:
            consumer.assign(partitions)
        yield consumer, partitions
    finally:
        await consumer.stop()


async def _merged(
    consumer: AIOKafkaConsumer, ends: Mapping[TopicPartition, int]
) -> AsyncIterator[Any]:
    """A k-way merge by (record time, topic, partition): a partition is refilled when its
    buffer runs dry, so every partition not yet at its end has a record in the heap."""
    buffers: dict[TopicPartition, deque[Any]] = {tp: deque() for tp in ends}
    heap: list[tuple[int, str, int, TopicPartition]] = []

    async def refill(wanted: list[TopicPartition]) -> None:
        wanted = [tp for tp in wanted if await consumer.position(tp) < ends[tp]]
        while wanted:
            for tp, records in (await consumer.getmany(*wanted, timeout_ms=500)).items():
                buffers[tp].extend(r for r in records if r.offset < ends[tp])
            for tp in wanted:
                if buffers[tp]:
                    head = buffers[tp][0]
                    heapq.heappush(heap, (head.timestamp, tp.topic, tp.partition, tp))
            wanted = [
                tp for tp in wanted if not buffers[tp] and await consumer.position(tp) < ends[tp]
            ]

    await refill(list(ends))
    while heap:
        _, _, _, tp = heapq.heappop(heap)
        yield buffers[tp].popleft()
        if buffers[tp]:
            head = buffers[tp][0]
            heapq.heappush(heap, (head.timestamp, tp.topic, tp.partition, tp))
        else:
            await refill([tp])
