"""How far the notifier's view of the schedule lags behind the scheduler's topics.

A time-bound message (reminder, instructions) is true only if no change to its
appointment is still waiting unread on Kafka. While the notifier has left such
a change unapplied for longer than a bound (default 5 s, real time: Kafka's
record times are wall-clock), the message waits.

Measured from Kafka, as `kapctl lag` does (ops.operations.group_lags: the
group's committed offsets against the partitions' ends), so it covers every
replica's partitions, not only this process's, and keeps no state between
checks but a cache of the records it read (they never change). One round asks,
for every partition its messages need (a client's schedule changes are on one
partition of each topic, lag_records.partition_of), the group's committed
offset and the partition's end (two requests, together); on a partition with
records not committed, those records are read (`READ_LIMIT` at most: beyond
that, everything on it waits), and which of
them hold a message back is lag_records.waiting's: only an unapplied change
of its client's that names its appointment, older than the bound.

The bound is the smaller of the configured real span and the same span on the
service clock (`real_bound_s`): on the demo's clock (a clinic day per real
second) 5 s is 58 real microseconds, so in effect any record of an earlier
millisecond (Kafka's resolution) that is still unhandled; there, tens of real
milliseconds of lag are clinic hours.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from chassis.clock import Clock
from services.notifier.lag_records import Change, Input, Subject, partition_of, uncommitted, waiting
from shared import topics
from shared.topics import Topic

log = logging.getLogger(__name__)

ASK_TIMEOUT_S = 2.0  # real seconds; no answer by then counts as behind
# How long one fetch of uncommitted records may wait on the broker (they exist: at once).
READ_WAIT_MS = 50
# More uncommitted records than this on a partition: not read, everything on it waits.
READ_LIMIT = 1000

# The scheduler's topics that change when or whether an appointment takes place.
SCHEDULE_TOPICS: tuple[Topic, ...] = (
    topics.CONSULTATION_BOOKED,
    topics.CONSULTATION_CANCELLED,
    topics.COURSE_BOOKED,
    topics.SESSION_SCHEDULED,
    topics.SESSION_RESCHEDULED,
    topics.SESSION_CANCELLED,
    topics.SESSION_MISSED,
    topics.SESSION_COMPLETED,
    topics.BOOSTER_SESSION_BOOKED,
)


def real_bound_s(bound_s: float, clock: Clock | None) -> float:
    """The smaller of `bound_s` real seconds and `bound_s` on `clock`, in real seconds.

    A clock that does not move by itself (a test's) says 0 for any span: the
    real bound then stands alone.
    """
    if clock is None:
        return bound_s
    on_the_clock = clock.real_seconds(timedelta(seconds=bound_s))
    return min(bound_s, on_the_clock) if on_the_clock > 0 else bound_s


# Which of these (clinic id, event id, client id) the notifier applied to its view already.
Applied = Callable[[Collection[Input]], Awaitable[set[Input]]]


@dataclass
class _Read:
    """What one partition's uncommitted records said, read once: offsets [since, upto)."""

    since: int
    upto: int
    items: list[tuple[int, int, Change]] = field(default_factory=list)  # offset, time, change

    def forget_before(self, offset: int) -> None:
        """Committed since: no longer asked about."""
        if offset > self.since:
            self.items = [item for item in self.items if item[0] >= offset]
            self.since = offset

    def add(self, items: Iterable[tuple[int, int, Change]]) -> None:
        self.items += [item for item in items if item[0] >= self.upto]

    def changes(self, start: int, end: int, older_than_ms: int) -> list[Change]:
        return [c for offset, at, c in self.items if start <= offset < end and at < older_than_ms]


class ScheduleLag:
    """Asks Kafka which clients' partitions the notifier's group is behind on."""

    def __init__(
        self,
        bootstrap_servers: str,
        group: str,
        bound_s: float,
        client_options: Mapping[str, Any] | None = None,
        schedule_topics: Sequence[Topic] = SCHEDULE_TOPICS,
        *,
        clock: Clock | None = None,
        applied: Applied | None = None,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._group = group
        self.bound_s = real_bound_s(bound_s, clock)
        self._options = dict(client_options or {})
        self._topics = [t.name for t in schedule_topics]
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: AIOKafkaConsumer | None = None  # reads the uncommitted records
        self._applied = applied
        self._asking = asyncio.Lock()
        self._read: dict[TopicPartition, _Read] = {}  # records read, by partition

    async def behind(self, subjects: Collection[Subject]) -> set[Subject]:
        """The (client, appointment) pairs with a change older than the bound unhandled.

        One batch of requests for all of them. Unknown (Kafka not answering)
        counts as behind: a change may be waiting, and a time-bound message is
        better late than untrue.
        """
        if not subjects:
            return set()
        try:
            # One request at a time (one set of subjects), and never long: while Kafka
            # is away every caller learns so within ASK_TIMEOUT_S.
            async with self._asking:
                return await asyncio.wait_for(self._behind(subjects), ASK_TIMEOUT_S)
        except Exception:
            log.warning("could not measure the schedule lag; time-bound sends wait", exc_info=True)
            await self.close()  # reconnect next time
            return set(subjects)

    async def _behind(self, subjects: Collection[Subject]) -> set[Subject]:
        admin, consumer = await self._clients()
        counts = {name: len(consumer.partitions_for_topic(name) or ()) for name in self._topics}
        if not all(counts.values()):
            await consumer._client.force_metadata_update()
            counts = {name: len(consumer.partitions_for_topic(name) or ()) for name in self._topics}
        wanted: dict[TopicPartition, set[Subject]] = {}
        for subject in subjects:
            for name, count in counts.items():
                if count:
                    tp = TopicPartition(name, partition_of(subject[0], count))
                    wanted.setdefault(tp, set()).add(subject)
        partitions = list(wanted)
        # Independent requests (the group's coordinator, the partitions' leaders): together.
        offsets, ends = await asyncio.gather(
            admin.list_consumer_group_offsets(self._group, partitions=partitions),
            consumer.end_offsets(partitions),
        )
        ranges = uncommitted({tp: meta.offset for tp, meta in offsets.items()}, ends)
        if not ranges:
            return set()
        older_than_ms = int((time.time() - self.bound_s) * 1000)
        changes = await self._changes_in(ranges, older_than_ms)
        events = {c.event for found in changes.values() for c in found or () if c.event}
        applied = await self._applied(events) if self._applied and events else set()
        late = waiting(wanted, changes, applied)
        if late:
            log.info(
                "schedule lag above %.4fs on %d partition(s): %d of %d message subject(s) "
                "wait for a change not yet applied",
                self.bound_s,
                len(ranges),
                len(late),
                len(subjects),
            )
        return late

    async def _changes_in(
        self, ranges: Mapping[TopicPartition, tuple[int, int]], older_than_ms: int
    ) -> dict[TopicPartition, list[Change] | None]:
        """The changes older than `older_than_ms` (Kafka's record time) in each partition's
        [from, to) offsets, read from Kafka; None for a partition with more than READ_LIMIT
        records to read (the group is far behind: everything on it waits).

        A record is read and decoded once (`_Read`): while a backlog lasts it is asked
        about many times a second, and decoding it anew each time made this gate the
        notifier's largest cost, which made the backlog grow. Only records not yet
        committed are kept, at most READ_LIMIT per partition.
        """
        changes: dict[TopicPartition, list[Change] | None] = {
            tp: None for tp, (start, end) in ranges.items() if end - start > READ_LIMIT
        }
        for tp in changes:
            self._read.pop(tp, None)
        spans = {tp: span for tp, span in ranges.items() if tp not in changes}
        reading: dict[TopicPartition, int] = {}
        for tp, (start, end) in spans.items():
            known = self._read.get(tp)
            if known is None or not known.since <= start <= known.upto:
                known = self._read[tp] = _Read(since=start, upto=start)
            known.forget_before(start)
            if known.upto < end:
                reading[tp] = end
        if reading:
            await self._read_on(reading)
        found = {
            tp: self._read[tp].changes(start, end, older_than_ms)
            for tp, (start, end) in spans.items()
        }
        return {**changes, **found}

    async def _read_on(self, reading: dict[TopicPartition, int]) -> None:
        """Read each partition from where it was read up to to `reading[tp]`."""
        reader = await self._reader_on(list(reading))
        for tp in reading:
            reader.seek(tp, self._read[tp].upto)
        reader.resume(*reading)
        try:
            while reading:
                fetched = await reader.getmany(*reading, timeout_ms=READ_WAIT_MS)
                for tp, records in fetched.items():
                    self._read[tp].add(
                        (r.offset, r.timestamp, Change.of(r.key, r.value, r.headers))
                        for r in records
                        if r.offset < reading[tp]
                    )
                # The position moves past gaps (compaction, transaction markers) too.
                for tp in list(reading):
                    position = await reader.position(tp)
                    self._read[tp].upto = max(self._read[tp].upto, min(position, reading[tp]))
                    if position >= reading[tp]:
                        del reading[tp]
        finally:
            # Assigned partitions are fetched ahead in the background: not while paused.
            reader.pause(*reader.assignment())

    async def _reader_on(self, partitions: list[TopicPartition]) -> AIOKafkaConsumer:
        """The reader, assigned every partition asked about so far, all paused.

        Assigning anew each time would refresh metadata and restart the fetcher:
        the assignment only grows (a client's partitions are few and fixed).
        """
        if self._reader is None:
            reader = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                enable_auto_commit=False,
                # Below the log's start (retention): from the first record kept.
                auto_offset_reset="earliest",
                fetch_max_wait_ms=READ_WAIT_MS,
                **self._options,
            )
            await reader.start()
            self._reader = reader
        reader = self._reader
        assigned = reader.assignment()
        if not set(partitions) <= assigned:
            reader.assign([*assigned, *partitions])
            reader.pause(*reader.assignment())
        return reader

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, **self._options)
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap, enable_auto_commit=False, **self._options
            )
            await admin.start()
            try:
                await consumer.start()
            except Exception:
                await admin.close()
                raise
            self._admin, self._consumer = admin, consumer
        return self._admin, self._consumer

    async def close(self) -> None:
        admin, consumers = self._admin, (self._consumer, self._reader)
        self._admin = self._consumer = self._reader = None
        self._read.clear()
        for consumer in consumers:
            if consumer is None:
                continue
            try:
                await consumer.stop()
            except Exception:
                log.debug("closing a lag consumer failed", exc_info=True)
        if admin is not None:
            try:
                await admin.close()
            except Exception:
                log.debug("closing the lag admin client failed", exc_info=True)
