"""When each record first became readable: a consumer of no group, tailing topics.

Kafka's record time is the producer's (CreateTime): a record may become readable by
any consumer (below the high watermark, once its in-sync replicas hold it) some
hundreds of milliseconds later on a busy three-broker cluster. The auditor judges
a message that crossed a change in flight from when the change could first have
been read, and the services cannot tell it that: this witness, outside them, can.
It starts at the topics' ends and notes, per event id (`ce_id`), the real time it
first saw the record; its own delay (a fetch returns as soon as a record is there,
plus its process's share of the CPU) makes the judgement that much more lenient,
which `delays` shows (seen minus the record's time, per record).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from ops.reading import assigned


class Witness:
    def __init__(self) -> None:
        self.seen_ms: dict[str, int] = {}  # event id -> real ms first seen
        self.delays_ms: list[int] = []  # first seen minus the record's own time

    def note(self, records: Iterable[Any], now_ms: int) -> None:
        for record in records:
            event_id = next((v.decode() for k, v in record.headers if k == "ce_id"), None)
            if event_id is not None and event_id not in self.seen_ms:
                self.seen_ms[event_id] = now_ms
                self.delays_ms.append(now_ms - record.timestamp)


@contextlib.asynccontextmanager
async def watching(
    bootstrap: str, topics: Iterable[str], *, security: Mapping[str, Any] | None = None
) -> AsyncIterator[Witness]:
    """A witness of `topics` from their ends now, for the block (Kafka away for a while:
    it keeps trying, and records what it sees once back)."""
    witness = Witness()
    async with assigned(bootstrap, topics, security) as (consumer, partitions):
        if partitions:
            await consumer.seek_to_end(*partitions)
            for tp in partitions:  # the ends resolved now, not lazily after the first fetch
                await consumer.position(tp)

        async def tail() -> None:
            while True:
                try:
                    batches = await consumer.getmany(timeout_ms=100)
                except Exception:  # a broker killed on purpose: look again
                    await asyncio.sleep(0.05)
                    continue
                now_ms = int(time.time() * 1000)
                for records in batches.values():
                    witness.note(records, now_ms)

        task = asyncio.create_task(tail()) if partitions else None
        try:
            yield witness
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
