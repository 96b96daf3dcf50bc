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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared import topics
from shared.topics import Topic

log = logging.getLogger(__name__)

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
    """Asks Kafka whether the notifier's group is behind on the schedule topics."""

    def __init__(
        self,
        bootstrap_servers: str,
        group: str,
        bound_s: float,
        client_options: Mapping[str, Any] | None = None,
        schedule_topics: Sequence[Topic] = SCHEDULE_TOPICS,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._group = group
        self.bound_s = bound_s
        self._options = dict(client_options or {})
        self._topics = [t.name for t in schedule_topics]
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def lagging(self) -> bool:
        """True while a schedule change older than the bound is unhandled, or when unknown.

        Unknown (Kafka not answering) counts as lagging: a change may be waiting,
        and a time-bound message is better late than untrue.
        """
        try:
            late = await self._late_partitions()
        except Exception:
            log.warning("could not measure the schedule lag; time-bound sends wait", exc_info=True)
            await self.close()  # reconnect next time
            return True
        if late:
            log.info(
                "schedule lag above %.1fs on %d partition(s); time-bound sends wait",
                self.bound_s,
                len(late),
            )
        return bool(late)

    async def _late_partitions(self) -> list[TopicPartition]:
        admin, consumer = await self._clients()
        partitions = [
            TopicPartition(name, p)
            for name in self._topics
            for p in consumer.partitions_for_topic(name) or ()
        ]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [
                TopicPartition(name, p)
                for name in self._topics
                for p in consumer.partitions_for_topic(name) or ()
            ]
        offsets = await admin.list_consumer_group_offsets(self._group, partitions=partitions)
        committed = {tp: meta.offset for tp, meta in offsets.items()}
        since_ms = int((time.time() - self.bound_s) * 1000)
        found = await consumer.offsets_for_times(dict.fromkeys(partitions, since_ms))
        young_from = {tp: (at.offset if at is not None else None) for tp, at in found.items()}
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
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
