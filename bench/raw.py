"""The baseline: what a plain aiokafka producer and consumer group do on this machine.

One hop, the same messages the system is fed (payloads, keys, headers), the
same partitions and producer guarantees (acks=all, idempotent), JSON decoding
of every value, and offsets committed after the records are handled (after
each fetched batch, as an at-least-once consumer may). Nothing else: this is
the practical limit a Python service on this client can approach.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from bench.workload import Message
from shared.topics import LIFECYCLE_PARTITIONS

RAW_TOPIC = "bench.raw.v1"


async def ensure_topic(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if RAW_TOPIC not in await admin.list_topics():
            topic = NewTopic(RAW_TOPIC, num_partitions=LIFECYCLE_PARTITIONS, replication_factor=1)
            with contextlib.suppress(TopicAlreadyExistsError):  # another run made it first
                await admin.create_topics([topic])
    finally:
        await admin.close()


def producer(bootstrap: str) -> AIOKafkaProducer:
    """The producer that feeds both the baseline and the system (same settings as services)."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)


async def send_all(
    kafka: AIOKafkaProducer, messages: Sequence[Message], topic: str | None = None
) -> None:
    """Hand every message to the producer at once and wait for all acknowledgements."""
    pending = [
        await kafka.send(topic or m.topic, m.value, key=m.key, headers=m.headers) for m in messages
    ]
    await asyncio.gather(*pending)


async def consume(bootstrap: str, group: str, count: int) -> None:
    """The baseline consumer (its own process, as each service is): say when ready, then done."""
    consumer = AIOKafkaConsumer(
        RAW_TOPIC,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="latest",
    )
    await consumer.start()
    try:
        while not consumer.assignment():  # noqa: ASYNC110 - joined before the clock starts
            await asyncio.sleep(0.05)
        for tp in consumer.assignment():
            await consumer.position(tp)  # fix "latest" now, before anything is sent
        cpu_before = time.process_time()
        print("ready", flush=True)
        consumed = 0
        while consumed < count:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            for records in batches.values():
                for record in records:
                    json.loads(record.value or b"null")
                    consumed += 1
            if batches:
                await consumer.commit()
        done = {"finished_at": time.time(), "cpu_s": time.process_time() - cpu_before}
        print(json.dumps({"events": consumed, **done}), flush=True)
    finally:
        await consumer.stop()


async def run(bootstrap: str, messages: Sequence[Message]) -> dict[str, float]:
    """Produce `messages` to the baseline topic; a consumer process consumes them all."""
    argv = [sys.executable, "-m", "bench.raw", bootstrap, f"bench-raw-{uuid.uuid4().hex[:8]}"]
    child = await asyncio.create_subprocess_exec(
        *argv, str(len(messages)), stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    kafka = producer(bootstrap)
    await kafka.start()
    try:
        ready = await asyncio.wait_for(child.stdout.readline(), timeout=60)
        if ready.strip() != b"ready":
            raise RuntimeError("the baseline consumer did not start")
        started = time.time()
        await send_all(kafka, messages, RAW_TOPIC)
        result = json.loads(await asyncio.wait_for(child.stdout.readline(), timeout=300))
    finally:
        await kafka.stop()
        await child.wait()
    seconds = result["finished_at"] - started
    return {
        "events": result["events"],
        "seconds": seconds,
        "events_per_s": result["events"] / seconds,
        "cpu_s_per_1k": result["cpu_s"] / result["events"] * 1000,
    }


if __name__ == "__main__":
    asyncio.run(consume(sys.argv[1], sys.argv[2], int(sys.argv[3])))
