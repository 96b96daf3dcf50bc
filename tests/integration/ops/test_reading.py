"""Reading topics back (ops.reading) on real Kafka: a topic the reader cannot find is
never read as an empty one where the reader needs it (a rebuild, which would otherwise
leave out that topic's facts without a word)."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ops import reading, witness

pytestmark = pytest.mark.integration


async def _topic_with(bootstrap: str, name: str, values: list[bytes]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(name, value, key=value)
    finally:
        await producer.stop()


async def _read(bootstrap: str, names: list[str], required: bool) -> list[bytes]:
    ordered = reading.in_kafka_order(bootstrap, names, required=required)
    return sorted([record.value async for record in ordered])


async def test_a_required_topic_missing_is_an_error_naming_it_not_an_empty_read(
    kafka_bootstrap: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    here, absent = f"reading-{unique}", f"reading-absent-{unique}"
    await _topic_with(kafka_bootstrap, here, [b"a", b"b", b"c"])
    monkeypatch.setattr(reading, "REQUIRED_WAIT_S", 1.0)

    with pytest.raises(reading.MissingTopics, match=absent):
        await _read(kafka_bootstrap, [here, absent], required=True)
    # Where a topic may not exist yet (an audit before any traffic), it reads as empty.
    assert await _read(kafka_bootstrap, [here, absent], required=False) == [b"a", b"b", b"c"]
    assert await _read(kafka_bootstrap, [here], required=True) == [b"a", b"b", b"c"]
    records = await reading.read_to_end(kafka_bootstrap, [here], required=True)
    assert sorted(r.value for r in records) == [b"a", b"b", b"c"]


async def test_a_witness_notes_when_each_event_was_first_readable_from_when_it_began(
    kafka_bootstrap: str, unique: str
) -> None:
    name = f"witness-{unique}"
    await _topic_with(kafka_bootstrap, name, [b"before"])
    with witness.watching(kafka_bootstrap, [name]) as seen:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            sent_ms = time.time() * 1000
            await producer.send_and_wait(name, b"{}", key=b"k", headers=[("ce_id", b"e1")])
        finally:
            await producer.stop()
        for _ in range(1000):  # ten seconds at most
            if "e1" in seen.seen_ms:
                break
            await asyncio.sleep(0.01)
    assert set(seen.seen_ms) == {"e1"}  # from the ends: the record before it is not noted
    assert sent_ms - 5 <= seen.seen_ms["e1"] <= time.time() * 1000
    [delay] = seen.delays_ms
    assert 0 <= delay < 10_000
