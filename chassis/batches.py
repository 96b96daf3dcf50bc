"""Consuming in batches with the guarantees of one message at a time (issue 19).

FastStream's per-message subscriber acknowledged each message with a commit of
*every* assigned partition's position (18 in the scheduler, 90 in the notifier): a
Kafka round trip and a request naming them all, per message. A service's one
consumer now takes what `getmany` has (FastStream's batch subscriber, up to
KAP_CONSUMER_MAX_RECORDS), and for each batch:
- a partition's records are handled in offset order (so each client's, keyed by
  client id), partitions side by side, at most KAP_CONSUMER_CONCURRENCY records at
  once (a step holds a Redis connection or two: with all 90 of a notifier's
  partitions at once, the pool ran out; issue 19): each record through its topic's
  handler, the same typed handler and single write step as before. The next free turn
  goes to the waiting record produced first (its Kafka timestamp), and the partitions
  start oldest first: topics are not ordered with each other, but a batch catching up
  after a replica died handles a client's events across topics in about the order
  they happened (a request planned after its client's course had ended and been
  tidied, ten service days later on a fast clock, was dropped as too late: make test's
  chaos run, 2026-11-30);
- a record's error is classed as the dead-letter policy says (chassis.dead_letters):
  the message's own fault is dead-lettered (published, acks=all, before the commit)
  and its partition goes on; an unknown error is retried, then dead-lettered; the
  infrastructure's fault (Redis, Kafka down) stops that partition: it is sought back
  to the record, which comes again in the next batch, after a backoff;
- then one commit, of the partitions that moved only, each up to its last handled
  record: the prefix before a failure is committed, nothing after it.
A rebalance (chassis.kafka.GroupMembership) commits what the batch has handled of the
partitions leaving, and the batch abandons their remaining records: the new owner
starts after the last commit, and a record handled twice changes nothing twice
(handled marks, in the same write as the effect).

Each record is handled in its own trace context (its `traceparent`) and log context,
as the per-message middlewares gave it, so a journey stays one trace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from opentelemetry import context as otel_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from chassis.dead_letters import DeadLetterPolicy, classify, dead_letter
from chassis.events import envelope_of
from chassis.logs import context_of, message_context
from chassis.turns import Turns
from shared.topics import Topic

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, ConsumerRecord
    from faststream.kafka import KafkaBroker

    from chassis.metrics import ServiceMetrics

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[None]]
CONCURRENCY = 16  # KAP_CONSUMER_CONCURRENCY
_TRACE = TraceContextTextMapPropagator()


class Progress:
    """Per partition, the next offset to commit: handled but not yet committed.

    Shared by the batch being handled and the group listener, which commits a leaving
    partition's progress before it goes and marks it revoked, so the batch stops
    handling it."""

    def __init__(self) -> None:
        self.handled: dict[TopicPartition, int] = {}
        self.revoked: set[TopicPartition] = set()

    def taken(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The progress of `partitions`, forgotten here (it is about to be committed)."""
        return {tp: self.handled.pop(tp) for tp in partitions if tp in self.handled}


class BatchHandler:
    """The handler of a service's batch subscriber: see the module's docstring."""

    def __init__(
        self,
        service: str,
        routes: Sequence[tuple[Topic, Handler]],
        broker: KafkaBroker,
        progress: Progress,
        metrics: ServiceMetrics | None = None,
        policy: DeadLetterPolicy | None = None,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self._service = service
        self._routes: Mapping[str, tuple[Topic, Handler]] = {t.name: (t, h) for t, h in routes}
        self._broker = broker
        self._progress = progress
        self._metrics = metrics
        self._policy = policy or DeadLetterPolicy()
        self._turns = Turns(concurrency)

    async def handle(self, records: Sequence[ConsumerRecord[bytes, bytes]], consumer: Any) -> None:
        by_partition: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        for record in records:
            by_partition.setdefault(TopicPartition(record.topic, record.partition), []).append(
                record
            )
        oldest_first = sorted(by_partition.items(), key=lambda item: item[1][0].timestamp)
        try:
            stopped = await asyncio.gather(
                *(self._partition(tp, batch) for tp, batch in oldest_first)
            )
        except BaseException:
            # Not one record's fault (those are classed per record): every partition
            # goes back to its first record not handled, so nothing is skipped.
            for tp, batch in by_partition.items():
                if tp not in self._progress.revoked:
                    consumer.seek(tp, self._progress.handled.get(tp, batch[0].offset))
            raise
        await self.commit(consumer)
        rewound = [(tp, offset) for tp, offset in stopped if offset is not None]
        for tp, offset in rewound:
            if tp not in self._progress.revoked:
                consumer.seek(tp, offset)  # comes again in the next batch
        if rewound:
            await asyncio.sleep(self._policy.max_backoff_s)

    async def commit(
        self, consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition] | None = None
    ) -> None:
        """Commit the handled progress (of `partitions`, or every partition still held)."""
        if partitions is None:
            partitions = [tp for tp in self._progress.handled if tp not in self._progress.revoked]
        offsets = self._progress.taken(partitions)
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as error:
            # Not committed: these records come again (to this replica or the partition's
            # next owner), and a record handled twice changes nothing twice.
            log.warning("commit of %d partition(s) failed: %s", len(offsets), type(error).__name__)

    async def _partition(
        self, tp: TopicPartition, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> tuple[TopicPartition, int | None]:
        """Handle one partition's records in order; the offset to seek back to, if one
        could not be handled now."""
        for record in records:
            if tp in self._progress.revoked:
                return tp, None  # another replica's now: abandoned, not rewound
            if not await self._one(record):
                return tp, record.offset
            self._progress.handled[tp] = record.offset + 1
        return tp, None

    async def _one(self, record: ConsumerRecord[bytes, bytes]) -> bool:
        """Handle, retry or dead-letter one record; False: redeliver it later."""
        headers = {name: value.decode("utf-8", "replace") for name, value in record.headers or ()}
        log_token = message_context.set(context_of(headers))
        trace_token = otel_context.attach(_TRACE.extract(headers))
        try:
            return await self._attempts(record)
        finally:
            otel_context.detach(trace_token)
            message_context.reset(log_token)

    async def _attempts(self, record: ConsumerRecord[bytes, bytes]) -> bool:
        attempt = 0
        while True:
            attempt += 1
            try:
                # A turn bounds the steps (and Redis connections) in flight, not the
                # backoffs or dead-letter publishes between attempts.
                async with self._turns.turn(record.timestamp):
                    await self._handle(record)
                return True
            except Exception as error:
                outcome = classify(error)
                if outcome == "redeliver":
                    log.warning("cannot be handled now (%s); will redeliver", type(error).__name__)
                    return False
                if outcome == "dead_letter" or attempt >= self._policy.attempts:
                    return await self._dead_letter(record, error, attempt)
                await asyncio.sleep(self._policy.backoff(attempt))

    async def _handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        topic, handler = self._routes[record.topic]
        data = orjson.loads(record.value or b"")
        envelope = envelope_of(record)
        await handler(topic.event.model_validate(data), envelope)

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], error: Exception, attempts: int
    ) -> bool:
        try:
            await dead_letter(self._broker, self._service, record, error, attempts, self._metrics)
        except Exception as failed:  # Kafka down: not lost, the record comes again
            log.warning("could not dead-letter (%s); will redeliver", type(failed).__name__)
            return False
        return True
