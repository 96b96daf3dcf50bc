"""Reading topics back as they stand: from the first kept record to the current end."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


async def read_to_end(
    bootstrap: str,
    topics: Iterable[str],
    since: Mapping[TopicPartition, int] | None = None,
    *,
    security: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Every record now on `topics` (no consumer group, nothing committed).

    With `since`, a partition it names is read from that offset instead of its start.
    `security`: the login and TLS options of `chassis.kafka.client_options`.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **(security or {})
    )
    await consumer.start()
    found: list[Any] = []
    try:
        await consumer._client.force_metadata_update()
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in consumer.partitions_for_topic(topic) or ()
        ]
        if not partitions:
            return found
        consumer.assign(partitions)
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
    finally:
        await consumer.stop()
