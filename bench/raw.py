"""The baseline: what a plain aiokafka producer and consumer group do on this machine.

One hop, the same messages the system is fed (payloads, keys, headers), the
same partitions and producer guarantees (acks=all, idempotent), JSON decoding
of every value, and offsets committed after the records are handled (the
partitions that moved, after each fetched batch, as an at-least-once consumer
may). Nothing else: this is the practical limit a Python service on this client
can approach.

Two ways to run it. `run` sends while a consumer waits (the pairs beside the
system, a run of a few hundred milliseconds, mostly producing and start-up).
`sustained` produces a backlog of tens of thousands first, untimed, then times
one consumer group consuming all of it: the consumer's own rate and CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from bench.workload import Message
from shared.topics import LIFECYCLE_PARTITIONS

RAW_TOPIC = "bench.raw.v1"
BATCH = 500  # records per getmany: a few hundred, as a batching service takes them


async def ensure_topic(bootstrap: str, *names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = await admin.list_topics()
        for name in [n for n in names or (RAW_TOPIC,) if n not in existing]:
            topic = NewTopic(name, num_partitions=LIFECYCLE_PARTITIONS, replication_factor=1)
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


def moved(batches: Mapping[TopicPartition, list[ConsumerRecord]]) -> dict[TopicPartition, int]:
    """The offsets to commit after a batch: only its partitions, each past its last record."""
    return {tp: records[-1].offset + 1 for tp, records in batches.items() if records}


async def ends(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(LIFECYCLE_PARTITIONS)]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def commit_for(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Start a new group at `offsets`: it consumes from there, not from `auto_offset_reset`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


class Clock(ConsumerRebalanceListener):  # type: ignore[misc]
    """Wall and CPU clocks started at the first assignment: nothing is fetched before it,
    and the join itself (start-up, not consumption) is left out."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.cpu = 0.0

    def start(self) -> None:
        self.started, self.cpu = time.time(), time.process_time()

    async def on_partitions_revoked(self, revoked: object) -> None:
        pass

    async def on_partitions_assigned(self, assigned: object) -> None:
        if self.started is None and assigned:
            self.start()

    async def wait(self) -> None:
        while self.started is None:  # noqa: ASYNC110 - set by the group's first assignment
            await asyncio.sleep(0.01)

    def figures(self) -> dict[str, float]:
        assert self.started is not None
        return {
            "started_at": self.started,
            "finished_at": time.time(),
            "cpu_s": time.process_time() - self.cpu,
        }


async def child(*argv: str) -> dict[str, Any]:
    """Run a consumer in its own process (as each service is); its last line is its result."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, *argv, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=600)
    if process.returncode != 0:
        raise RuntimeError(f"{argv[:2]} exited {process.returncode}")
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result


async def consume(bootstrap: str, group: str, count: int, backlog: bool) -> None:
    """The baseline consumer: say when ready (timing starts), then its result.

    With `backlog` the group's offsets were committed before the messages were
    produced: it starts there. Without, it pins "latest" before anything is sent.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="latest",
    )
    clock = Clock()
    consumer.subscribe([RAW_TOPIC], listener=clock)
    await consumer.start()
    try:
        await clock.wait()
        if not backlog:
            for tp in consumer.assignment():
                await consumer.position(tp)  # fix "latest" now, before anything is sent
            clock.start()
        print("ready", flush=True)
        consumed = 0
        while consumed < count:
            batches = await consumer.getmany(timeout_ms=200, max_records=BATCH)
            for records in batches.values():
                for record in records:
                    json.loads(record.value or b"null")
                    consumed += 1
            if batches:
                await consumer.commit(moved(batches))
        print(json.dumps({"events": consumed, **clock.figures()}), flush=True)
    finally:
        await consumer.stop()


async def run(bootstrap: str, messages: Sequence[Message]) -> dict[str, float]:
    """Produce `messages` to the baseline topic; a consumer process consumes them all."""
    argv = [sys.executable, "-m", "bench.raw", bootstrap, f"bench-raw-{uuid.uuid4().hex[:8]}"]
    process = await asyncio.create_subprocess_exec(
        *argv, str(len(messages)), stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    kafka = producer(bootstrap)
    await kafka.start()
    try:
        ready = await asyncio.wait_for(process.stdout.readline(), timeout=60)
        if ready.strip() != b"ready":
            raise RuntimeError("the baseline consumer did not start")
        started = time.time()
        await send_all(kafka, messages, RAW_TOPIC)
        result = json.loads(await asyncio.wait_for(process.stdout.readline(), timeout=300))
    finally:
        await kafka.stop()
        await process.wait()
    seconds = result["finished_at"] - started
    return {
        "events": result["events"],
        "seconds": seconds,
        "events_per_s": result["events"] / seconds,
        "cpu_s_per_1k": result["cpu_s"] / result["events"] * 1000,
    }


async def sustained(bootstrap: str, messages: Sequence[Message]) -> dict[str, float]:
    """Produce `messages` first (not timed), then time one new group consuming them all."""
    await ensure_topic(bootstrap, RAW_TOPIC)
    group = f"bench-raw-{uuid.uuid4().hex[:8]}"
    await commit_for(bootstrap, group, await ends(bootstrap, RAW_TOPIC))
    kafka = producer(bootstrap)
    await kafka.start()
    try:
        await send_all(kafka, messages, RAW_TOPIC)
    finally:
        await kafka.stop()
    result = await child("-m", "bench.raw", bootstrap, group, str(len(messages)), "backlog")
    seconds = result["finished_at"] - result["started_at"]
    return {
        "messages": result["events"],
        "seconds": round(seconds, 3),
        "messages_per_s": result["events"] / seconds,
        "cpu_s_per_1k": result["cpu_s"] / result["events"] * 1000,
    }


if __name__ == "__main__":
    bootstrap, group, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    asyncio.run(consume(bootstrap, group, count, backlog=sys.argv[4:] == ["backlog"]))
