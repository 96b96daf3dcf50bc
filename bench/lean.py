"""The lean reference pipeline: a service's shape of work per batch, and nothing else.

Per batch of records: one `getmany`; one Redis pipeline with a `SET NX` on each
event id (the handled mark) and one state write per event (the client's last
event, under the clinic's hash tag); one output produced per input whose mark
was new, sent without awaiting each and awaited once for the batch; one commit
of the partitions that moved. What it costs, pipeline process and Redis
together, is what a batching service could come down to on this machine.

Its inputs are produced first (not timed); a new group then consumes them all
in its own process. A second group over the same inputs finds every mark set:
it writes no mark and produces nothing (the state write repeats, and lands on
the same value, since it replays in order).
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from bench import raw
from bench.workload import Message
from shared.envelope import HEADER_CAUSATION, HEADER_CLINIC, HEADER_ID

IN_TOPIC = "bench.lean.in.v1"
OUT_TOPIC = "bench.lean.out.v1"
TTL_S = 3600  # a run's keys go when it is checked; this is for a run that died first


@dataclass(frozen=True)
class Inputs:
    """Messages on the input topic, from `start` on, and the run that owns their keys."""

    start: dict[TopicPartition, int]
    count: int
    run: str


async def redis_cpu(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def pipeline(bootstrap: str, redis_url: str, group: str, run: str, count: int) -> None:
    """The pipeline process: consume `count` records, then print its result."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    clock = raw.Clock()
    consumer.subscribe([IN_TOPIC], listener=clock)
    producer = raw.producer(bootstrap)
    redis = Redis.from_url(redis_url)
    await asyncio.gather(consumer.start(), producer.start())
    try:
        redis_before = await redis_cpu(redis)  # before the clock: counts no less of Redis
        await clock.wait()
        consumed = outputs = 0
        while consumed < count:
            batches = await consumer.getmany(timeout_ms=200, max_records=raw.BATCH)
            records = [r for rs in batches.values() for r in rs]
            if not records:
                continue
            marks = redis.pipeline(transaction=False)
            causes = []
            for record in records:
                headers = dict(record.headers)
                clinic, event_id = headers[HEADER_CLINIC].decode(), headers[HEADER_ID].decode()
                event = json.loads(record.value or b"{}")
                marks.set(f"lean:{{{clinic}}}:{run}:seen:{event_id}", 1, nx=True, ex=TTL_S)
                state = f"lean:{{{clinic}}}:{run}:client:{event['client_id']}"
                marks.set(state, event_id, ex=TTL_S)
                causes.append((record, clinic, event_id, event["client_id"]))
            firsts = (await marks.execute())[::2]
            sends = []
            for (record, clinic, event_id, client_id), first in zip(causes, firsts, strict=True):
                if not first:
                    continue  # handled before: its output went then
                output = {"id": str(uuid.uuid4()), "cause": event_id, "client_id": client_id}
                headers_out = [
                    (HEADER_CAUSATION, event_id.encode()),
                    (HEADER_CLINIC, clinic.encode()),
                ]
                sends.append(
                    await producer.send(
                        OUT_TOPIC, json.dumps(output).encode(), key=record.key, headers=headers_out
                    )
                )
            await asyncio.gather(*sends)
            await consumer.commit(raw.moved(batches))
            consumed, outputs = consumed + len(records), outputs + len(sends)
        clocks = clock.figures()
        result = {
            "consumed": consumed,
            "outputs_sent": outputs,
            "seconds": clocks["finished_at"] - clocks["started_at"],
            "pipeline_cpu_s": clocks["cpu_s"],
            "redis_cpu_s": await redis_cpu(redis) - redis_before,
        }
        print(json.dumps(result), flush=True)
    finally:
        await asyncio.gather(consumer.stop(), producer.stop())
        await redis.aclose()


async def produce(bootstrap: str, messages: Sequence[Message]) -> Inputs:
    """Put `messages` on the input topic (not timed) and say where they start."""
    await raw.ensure_topic(bootstrap, IN_TOPIC, OUT_TOPIC)
    start = await raw.ends(bootstrap, IN_TOPIC)
    kafka = raw.producer(bootstrap)
    await kafka.start()
    try:
        await raw.send_all(kafka, messages, IN_TOPIC)
    finally:
        await kafka.stop()
    return Inputs(start, len(messages), uuid.uuid4().hex[:8])


async def consume(bootstrap: str, redis_url: str, inputs: Inputs) -> dict[str, Any]:
    """A new group consumes `inputs` through the pipeline; its figures, and what it left."""
    group = f"bench-lean-{uuid.uuid4().hex[:8]}"
    await raw.commit_for(bootstrap, group, inputs.start)
    out_before = await raw.ends(bootstrap, OUT_TOPIC)
    argv = ("-m", "bench.lean", bootstrap, redis_url, group, inputs.run, str(inputs.count))
    result = await raw.child(*argv)
    out_after = await raw.ends(bootstrap, OUT_TOPIC)
    consumed, cpu_s = result["consumed"], result["pipeline_cpu_s"] + result["redis_cpu_s"]
    return {
        **result,
        "consumptions_per_s": consumed / result["seconds"],
        "cpu_s_per_1k": cpu_s / consumed * 1000,
        "pipeline_cpu_s_per_1k": result["pipeline_cpu_s"] / consumed * 1000,
        "redis_cpu_s_per_1k": result["redis_cpu_s"] / consumed * 1000,
        "outputs": sum(out_after[tp] - out_before[tp] for tp in out_after),
        "marks": await count_keys(redis_url, f"lean:*:{inputs.run}:seen:*"),
    }


async def count_keys(redis_url: str, pattern: str, delete: bool = False) -> int:
    """Keys matching `pattern` (one Redis, not a cluster: SCAN sees one node)."""
    redis = Redis.from_url(redis_url)
    found = 0
    try:
        async for chunk in _chunks(redis.scan_iter(match=pattern, count=1000)):
            found += len(chunk)
            if delete:
                await redis.unlink(*chunk)
    finally:
        await redis.aclose()
    return found


async def _chunks(keys: Any, size: int = 1000) -> Any:
    chunk: list[bytes] = []
    async for key in keys:
        chunk.append(key)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def measure(bootstrap: str, redis_url: str, messages: Sequence[Message]) -> dict[str, Any]:
    """One sustained run, checked: each input one output and one mark; its keys then removed."""
    inputs = await produce(bootstrap, messages)
    try:
        result = await consume(bootstrap, redis_url, inputs)
    finally:
        await count_keys(redis_url, f"lean:*:{inputs.run}:*", delete=True)
    if not result["consumed"] == result["outputs"] == result["marks"] == inputs.count:
        raise RuntimeError(f"lean pipeline: {inputs.count} inputs, but {result}")
    return result


if __name__ == "__main__":
    bootstrap, redis_url, group, run, count = sys.argv[1:6]
    asyncio.run(pipeline(bootstrap, redis_url, group, run, int(count)))
