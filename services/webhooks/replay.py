"""`replay --since`: a partner's window of public events read again from the topics.

A consumer of no group (nothing committed, no other reader disturbed) reads each of
the partner's topics from the first offset at `since` (Kafka's time index) up to the
end each partition had when the replay began, keeps the partner's clinics' events
that fall before `until`, and queues them for the partner with their own ids (the
receiver drops by `webhook-id` what it had). Topics keep public events for their
retention (shared.topics): a window older than that finds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.webhooks.domain import Partner
from services.webhooks.service import Webhooks
from shared.envelope import Envelope, EnvelopeError

CHUNK = 200  # events queued per write
MOST = 100_000  # events a replay reads, at most: a longer window is asked for in parts


class WindowTooLarge(ValueError):
    """More events in the window than one replay reads (MOST)."""


async def read_window(
    bootstrap: str, topics: Sequence[str], since: datetime, until: datetime, **options: Any
) -> list[tuple[Envelope, dict[str, Any]]]:
    """Every event of `topics` written in [since, until), in each partition's order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **options)
    await consumer.start()
    found: list[tuple[Envelope, dict[str, Any]]] = []
    try:
        partitions = await _partitions(consumer, topics)
        if not partitions:
            return []
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.offsets_for_times(
            {tp: int(since.timestamp() * 1000) for tp in partitions}
        )
        left = {}
        for tp in partitions:
            start = starts.get(tp)
            if start is None or start.offset >= ends[tp]:
                continue
            consumer.seek(tp, start.offset)
            left[tp] = ends[tp]
        until_ms = until.timestamp() * 1000
        while left:
            batches = await consumer.getmany(*left, timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= left.get(tp, -1):
                        continue
                    if len(found) >= MOST:
                        raise WindowTooLarge(
                            f"more than {MOST} events since then: replay a shorter window"
                        )
                    if record.timestamp < until_ms:
                        try:
                            envelope = Envelope.from_headers(record.headers or ())
                            found.append((envelope, orjson.loads(record.value or b"")))
                        except (EnvelopeError, orjson.JSONDecodeError):
                            continue  # dead-lettered by the service when it read it
            for tp in list(left):
                if await consumer.position(tp) >= left[tp]:
                    del left[tp]
        return found
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topics: Sequence[str]) -> list[TopicPartition]:
    await consumer._client.force_metadata_update()
    return [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]


class Replayer:
    def __init__(self, webhooks: Webhooks, bootstrap: str, options: dict[str, Any]) -> None:
        self._webhooks = webhooks
        self._bootstrap = bootstrap
        self._options = options

    async def __call__(self, partner: Partner, since: datetime, until: datetime) -> int:
        events = await read_window(
            self._bootstrap, partner.event_types, since, until, **self._options
        )
        by_clinic: dict[str, list[tuple[Envelope, dict[str, Any]]]] = {}
        for envelope, data in events:
            if envelope.clinic_id in partner.clinics:
                by_clinic.setdefault(envelope.clinic_id, []).append((envelope, data))
        queued = 0
        for clinic_id, items in by_clinic.items():
            for start in range(0, len(items), CHUNK):
                queued += await self._webhooks.requeue(
                    partner, clinic_id, items[start : start + CHUNK]
                )
        return queued
