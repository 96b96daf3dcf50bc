"""When each record first became readable: a consumer of no group, tailing topics.

Kafka's record time is the producer's (CreateTime): a record may become readable by
any consumer (below the high watermark, once its in-sync replicas hold it) some
hundreds of milliseconds later on a busy three-broker cluster. The auditor judges
a message that crossed a change in flight from when the change could first have
been read, and the services cannot tell it that: this witness, outside them, can.
It starts at the topics' ends and notes, per event id (`ce_id`), the real time it
first saw the record. It runs on a thread of its own, with its own event loop, so
the demo's driving does not delay its readings; what delay is left (a fetch returns
as soon as a record is there, plus the process's share of two cores) makes the
judgement that much more lenient, which `delays_ms` shows (seen minus the record's
own time, per record).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ops.reading import assigned


class Witness:
    def __init__(self) -> None:
        self.seen_ms: dict[str, int] = {}  # event id -> real ms first seen
        self.delays_ms: list[int] = []  # first seen minus the record's own time
        self.errors = 0  # fetches that failed (a broker killed on purpose), tried again

    def note(self, records: Iterable[Any], now_ms: int) -> None:
        for record in records:
            named = dict(record.headers or ())
            event_id = named.get("ce_id")
            if isinstance(event_id, bytes) and event_id.decode() not in self.seen_ms:
                self.seen_ms[event_id.decode()] = now_ms
                self.delays_ms.append(now_ms - record.timestamp)


async def _tail(
    witness: Witness,
    bootstrap: str,
    topics: list[str],
    security: Mapping[str, Any] | None,
    started: threading.Event,
    stop: threading.Event,
) -> None:
    async with assigned(bootstrap, topics, security) as (consumer, partitions):
        if partitions:
            await consumer.seek_to_end(*partitions)
            for tp in partitions:  # the ends resolved now, not lazily after the first fetch
                await consumer.position(tp)
        started.set()
        while partitions and not stop.is_set():
            try:
                batches = await consumer.getmany(timeout_ms=100)
            except Exception:  # a broker killed on purpose: look again
                witness.errors += 1
                await asyncio.sleep(0.05)
                continue
            now_ms = int(time.time() * 1000)
            for records in batches.values():
                witness.note(records, now_ms)


@contextlib.contextmanager
def watching(
    bootstrap: str, topics: Iterable[str], *, security: Mapping[str, Any] | None = None
) -> Iterator[Witness]:
    """A witness of `topics` from their ends when the block begins, for the block."""
    witness = Witness()
    started, stop = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(_tail(witness, bootstrap, list(topics), security, started, stop))
        except BaseException as error:  # reported when the block ends
            failed.append(error)
            started.set()

    thread = threading.Thread(target=run, name="witness", daemon=True)
    thread.start()
    started.wait(timeout=60)
    try:
        yield witness
    finally:
        stop.set()
        thread.join(timeout=10)
        if failed:
            raise RuntimeError("the witness stopped reading") from failed[0]
