"""A service's batch consumer (chassis.kafka.subscribe) fetches again as soon as a fetch
comes back empty: getmany waits for records itself (BATCH_WAIT_MS) and returns when they
arrive, while FastStream 0.7's batch subscriber slept as long again after an empty one,
blind, so a record arriving then waited for the sleep (issue 19: latency per hop)."""

from __future__ import annotations

import time
from typing import Any

from aiokafka import TopicPartition

from chassis.config import ServiceSettings
from chassis.kafka import BATCH_WAIT_MS, make_broker, subscribe
from shared import events as ev
from shared import topics
from shared.envelope import Envelope


class Consumer:
    """getmany as aiokafka's answers it: records by partition, or nothing after the wait
    (here at once, so only a sleep of the caller's own takes time)."""

    def __init__(self, answers: list[dict[TopicPartition, list[str]]]) -> None:
        self.answers = answers
        self.asked: list[tuple[int, int | None]] = []

    async def getmany(self, timeout_ms: int, max_records: int | None) -> dict[Any, list[str]]:
        self.asked.append((timeout_ms, max_records))
        return self.answers.pop(0)


async def test_an_empty_fetch_is_followed_by_the_next_at_once_and_records_come_in_order() -> None:
    async def handler(event: ev.ConsultationHeld, envelope: Envelope) -> None:
        pass

    settings = ServiceSettings(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")  # never connected
    broker = make_broker(settings, "scheduler")
    subscribe(broker, "scheduler", [(topics.CONSULTATION_HELD, handler)], "", settings)
    [subscriber] = broker.subscribers
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    consumer = Consumer([{}, {}, {}, {a: ["a0", "a1"], b: ["b0"]}])

    started = time.monotonic()
    empty = [await subscriber.get_msg(consumer) for _ in range(3)]  # type: ignore[arg-type]
    took_s = time.monotonic() - started
    records = await subscriber.get_msg(consumer)  # type: ignore[arg-type]

    assert empty == [(), (), ()]
    assert took_s < BATCH_WAIT_MS / 1000  # FastStream's own slept BATCH_WAIT_MS after each
    assert records == ("a0", "a1", "b0")
    assert consumer.asked == [(BATCH_WAIT_MS, settings.consumer_max_records)] * 4
