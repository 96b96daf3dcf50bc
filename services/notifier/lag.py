"""How far the notifier's view of the schedule lags behind the scheduler's topics.

A time-bound message (reminder, instructions) is true only if no change to its
appointment is still waiting unread on Kafka. While the notifier's consumer
group has left a scheduler event unhandled for longer than a bound (default
5 s, real time: Kafka's record times are wall-clock), such sends wait.

Measured the way `kapctl lag` does (ops.operations.group_lags: the group's
committed offsets against the partitions' ends), so it covers every replica's
partitions, not only this process's, and keeps no state between checks. The
age comes from Kafka itself: the first offset whose record is younger than the
bound (ListOffsets by time); a group committed below it has left an older
record unhandled.

Per client: every event is keyed by client id, so a client's schedule changes
are on one partition of each topic (the default partitioner's, `partition_of`).
A message waits only while that partition is behind, not for another client's
backlog; one round asks once for every partition its messages need.

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
from collections.abc import Collection, Mapping, Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from chassis.clock import Clock
from shared import topics
from shared.topics import Topic

log = logging.getLogger(__name__)

ASK_TIMEOUT_S = 2.0  # real seconds; no answer by then counts as behind

# The scheduler's topics that change when or whether an appointment takes place.
SCHEDULE_TOPICS: tuple[Topic, ...] = (
    topics.CONSULTATION_BOOKED,
    topics.COURSE_BOOKED,
    topics.SESSION_SCHEDULED,
    topics.SESSION_RESCHEDULED,
    topics.SESSION_CANCELLED,
    topics.SESSION_MISSED,
    topics.SESSION_COMPLETED,
)


def partition_of(client_id: UUID, partitions: int) -> int:
    """The partition the default partitioner gives a client's events (keyed by client id)."""
    return int(murmur2(str(client_id).encode()) & 0x7FFFFFFF) % partitions


def real_bound_s(bound_s: float, clock: Clock | None) -> float:
    """The smaller of `bound_s` real seconds and `bound_s` on `clock`, in real seconds.

    A clock that does not move by itself (a test's) says 0 for any span: the
    real bound then stands alone.
    """
    if clock is None:
        return bound_s
    on_the_clock = clock.real_seconds(timedelta(seconds=bound_s))
    return min(bound_s, on_the_clock) if on_the_clock > 0 else bound_s


def behind(
    committed: Mapping[TopicPartition, int],
    starts: Mapping[TopicPartition, int],
    ends: Mapping[TopicPartition, int],
    young_from: Mapping[TopicPartition, int | None],
) -> list[TopicPartition]:
    """The partitions on which the group left a record older than the bound unhandled (pure).

    `committed`: the group's next offset to handle (absent or -1: never
    committed, so it starts from `starts`, each partition's first offset);
    `ends`: each partition's end; `young_from`: the first offset whose record
    is younger than the bound, None when every record is older. A partition
    never committed on is behind by all it holds.
    """
    late = []
    for tp, end in ends.items():
        # Below the log's start (records deleted by retention) counts from the start.
        done = max(committed.get(tp, -1), starts.get(tp, 0))
        young = young_from.get(tp)
        older_up_to = end if young is None else min(young, end)
        if done < older_up_to:
            late.append(tp)
    return late


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
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._group = group
        self.bound_s = real_bound_s(bound_s, clock)
        self._options = dict(client_options or {})
        self._topics = [t.name for t in schedule_topics]
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._asking = asyncio.Lock()

    async def behind(self, clients: Collection[UUID]) -> set[UUID]:
        """The clients with a schedule change older than the bound unhandled on their partition.

        One batch of requests for all of them. Unknown (Kafka not answering)
        counts as behind: a change may be waiting, and a time-bound message is
        better late than untrue.
        """
        if not clients:
            return set()
        try:
            # One request at a time (one set of clients), and never long: while Kafka
            # is away every caller learns so within ASK_TIMEOUT_S.
            async with self._asking:
                return await asyncio.wait_for(self._behind(clients), ASK_TIMEOUT_S)
        except Exception:
            log.warning("could not measure the schedule lag; time-bound sends wait", exc_info=True)
            await self.close()  # reconnect next time
            return set(clients)

    async def _behind(self, clients: Collection[UUID]) -> set[UUID]:
        admin, consumer = await self._clients()
        counts = {name: len(consumer.partitions_for_topic(name) or ()) for name in self._topics}
        if not all(counts.values()):
            await consumer._client.force_metadata_update()
            counts = {name: len(consumer.partitions_for_topic(name) or ()) for name in self._topics}
        wanted: dict[TopicPartition, set[UUID]] = {}
        for client in clients:
            for name, count in counts.items():
                if count:
                    wanted.setdefault(TopicPartition(name, partition_of(client, count)), set()).add(
                        client
                    )
        late = await self._late_partitions(admin, consumer, list(wanted))
        if late:
            log.info(
                "schedule lag above %.4fs on %d partition(s); their time-bound sends wait",
                self.bound_s,
                len(late),
            )
        return {client for tp in late for client in wanted[tp]}

    async def _late_partitions(
        self,
        admin: AIOKafkaAdminClient,
        consumer: AIOKafkaConsumer,
        partitions: list[TopicPartition],
    ) -> list[TopicPartition]:
        if not partitions:
            return []
        since_ms = int((time.time() - self.bound_s) * 1000)
        # Independent requests (coordinator and partition leaders): asked together.
        offsets, found, ends, starts = await asyncio.gather(
            admin.list_consumer_group_offsets(self._group, partitions=partitions),
            consumer.offsets_for_times(dict.fromkeys(partitions, since_ms)),
            consumer.end_offsets(partitions),
            consumer.beginning_offsets(partitions),
        )
        committed = {tp: meta.offset for tp, meta in offsets.items()}
        young_from = {tp: (at.offset if at is not None else None) for tp, at in found.items()}
        return behind(committed, starts, ends, young_from)

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
        admin, consumer = self._admin, self._consumer
        self._admin = self._consumer = None
        if consumer is not None:
            try:
                await consumer.stop()
            except Exception:
                log.debug("closing the lag consumer failed", exc_info=True)
        if admin is not None:
            try:
                await admin.close()
            except Exception:
                log.debug("closing the lag admin client failed", exc_info=True)
