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

A service may name topics whose events it handles together (`Together`: the notifier's
planning): then a batch goes in waves, the first record of each client (its key) in
the first wave, its second in the second, and so on (so a client's events keep their
order, partitions' offsets and their timestamps merged as above), and each wave's
records of one clinic go to the service's handler together: one write step where
each took one (issue 19's "one atomic step per clinic"). Records of other topics,
and records that do not decode, go one at a time in their wave, as above. A group
that fails goes again one record at a time, so each error is classed as its own
record's. A partition stopped at a record (the infrastructure's fault) handles none
of its later records in later waves; the commit is each partition's prefix of
handled records, and it is sought back to its first record not handled.

Each record handled alone is handled in its own trace context (its `traceparent`) and
log context, as the per-message middlewares gave it, so a journey stays one trace. A
step for several records belongs to no one record's trace: the notifier's planning
publishes nothing, so no journey's trace is cut there.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
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
TOGETHER_AT_MOST = 8  # records of one clinic in one group (a conflict retries them all)


@dataclass(frozen=True)
class Together:
    """Topics whose records a service handles several at a time: `handle` gets one
    clinic's decoded (event, envelope) pairs, at most one per client, in one call."""

    topics: frozenset[str]
    handle: Callable[[Sequence[tuple[Any, Any]]], Awaitable[None]]


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
        together: Together | None = None,
    ) -> None:
        self._service = service
        self._routes: Mapping[str, tuple[Topic, Handler]] = {t.name: (t, h) for t, h in routes}
        self._broker = broker
        self._progress = progress
        self._metrics = metrics
        self._policy = policy or DeadLetterPolicy()
        self._turns = Turns(concurrency)
        self._together = together

    async def handle(self, records: Sequence[ConsumerRecord[bytes, bytes]], consumer: Any) -> None:
        if self._together is not None:
            return await self._in_waves(records, consumer)
        by_partition = _by_partition(records)
        oldest_first = sorted(by_partition.items(), key=lambda item: item[1][0].timestamp)
        try:
            stopped = await asyncio.gather(
                *(self._partition(tp, batch) for tp, batch in oldest_first)
            )
        except BaseException:
            self._rewind(consumer, by_partition)
            raise
        await self.commit(consumer)
        rewound = [(tp, offset) for tp, offset in stopped if offset is not None]
        for tp, offset in rewound:
            if tp not in self._progress.revoked:
                consumer.seek(tp, offset)  # comes again in the next batch
        if rewound:
            await asyncio.sleep(self._policy.max_backoff_s)

    def _rewind(
        self,
        consumer: Any,
        by_partition: Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]],
    ) -> None:
        """Not one record's fault (those are classed per record): every partition goes
        back to its first record not handled, so nothing is skipped."""
        for tp, batch in by_partition.items():
            if tp not in self._progress.revoked:
                consumer.seek(tp, self._progress.handled.get(tp, batch[0].offset))

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

    # --- records handled together (`Together`) ------------------------------------

    async def _in_waves(
        self, records: Sequence[ConsumerRecord[bytes, bytes]], consumer: Any
    ) -> None:
        by_partition = _by_partition(records)
        handled: set[tuple[TopicPartition, int]] = set()
        stopped: dict[TopicPartition, int] = {}  # the record a partition stopped at
        try:
            for wave in _waves(by_partition.values()):
                live = [
                    r
                    for r in wave
                    if (tp := TopicPartition(r.topic, r.partition)) not in self._progress.revoked
                    and r.offset < stopped.get(tp, r.offset + 1)
                ]
                outcomes = await asyncio.gather(*self._wave(live))
                for record, ok in (pair for outcome in outcomes for pair in outcome):
                    tp = TopicPartition(record.topic, record.partition)
                    if ok:
                        handled.add((tp, record.offset))
                    else:
                        stopped[tp] = min(stopped.get(tp, record.offset), record.offset)
                self._moved(by_partition, handled)
        except BaseException:
            self._rewind(consumer, by_partition)
            raise
        await self.commit(consumer)
        rewound = False
        for tp, batch in by_partition.items():
            first_not_handled = next(
                (r.offset for r in batch if (tp, r.offset) not in handled), None
            )
            if first_not_handled is not None and tp not in self._progress.revoked:
                consumer.seek(tp, first_not_handled)  # comes again in the next batch
                rewound = rewound or tp in stopped
        if rewound:
            await asyncio.sleep(self._policy.max_backoff_s)

    def _moved(
        self,
        by_partition: Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]],
        handled: set[tuple[TopicPartition, int]],
    ) -> None:
        """Each partition's progress: up to its first record not handled."""
        for tp, batch in by_partition.items():
            upto = batch[0].offset
            for record in batch:
                if (tp, record.offset) not in handled:
                    break
                upto = record.offset + 1
            if upto > batch[0].offset and tp not in self._progress.revoked:
                self._progress.handled[tp] = upto

    def _wave(
        self, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> list[Awaitable[list[tuple[ConsumerRecord[bytes, bytes], bool]]]]:
        """A wave's work: each clinic's records of the `Together` topics in groups, the
        others one at a time."""
        assert self._together is not None
        groups: dict[str, list[tuple[ConsumerRecord[bytes, bytes], Any, Any]]] = {}
        work: list[Awaitable[list[tuple[ConsumerRecord[bytes, bytes], bool]]]] = []
        for record in records:
            decoded = self._decoded(record) if record.topic in self._together.topics else None
            if decoded is None:
                work.append(self._alone([record]))
            else:
                groups.setdefault(decoded[1].clinic_id, []).append((record, *decoded))
        for members in groups.values():
            for start in range(0, len(members), TOGETHER_AT_MOST):
                work.append(self._group(members[start : start + TOGETHER_AT_MOST]))
        return work

    def _decoded(self, record: ConsumerRecord[bytes, bytes]) -> tuple[Any, Any] | None:
        """(event, envelope), or None: left to `_one`, which classes what is wrong."""
        try:
            topic, _ = self._routes[record.topic]
            event = topic.event.model_validate(orjson.loads(record.value or b""))
            envelope = envelope_of(record)
        except Exception:
            return None
        if envelope.clinic_id != event.clinic_id:
            return None
        return event, envelope

    async def _group(
        self, members: Sequence[tuple[ConsumerRecord[bytes, bytes], Any, Any]]
    ) -> list[tuple[ConsumerRecord[bytes, bytes], bool]]:
        assert self._together is not None
        if len(members) == 1:
            return await self._alone([members[0][0]])
        try:
            async with self._turns.turn(min(r.timestamp for r, _, _ in members)):
                await self._together.handle([(event, envelope) for _, event, envelope in members])
        except Exception as error:
            # Each record on its own, so each error is its own record's (the group's
            # step wrote nothing: one MULTI or none).
            log.info(
                "%d records handled together failed (%s); one at a time",
                len(members),
                type(error).__name__,
            )
            return await self._alone([record for record, _, _ in members])
        return [(record, True) for record, _, _ in members]

    async def _alone(
        self, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> list[tuple[ConsumerRecord[bytes, bytes], bool]]:
        done = await asyncio.gather(*(self._one(record) for record in records))
        return list(zip(records, done, strict=True))


def _by_partition(
    records: Sequence[ConsumerRecord[bytes, bytes]],
) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    by_partition: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
    for record in records:
        by_partition.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
    return by_partition


def _waves(
    partitions: Iterable[Sequence[ConsumerRecord[bytes, bytes]]],
) -> list[list[ConsumerRecord[bytes, bytes]]]:
    """The records in waves: the n-th record of each client (its key) in the n-th wave,
    partitions merged by timestamp with each one's offsets in order."""
    waves: list[list[ConsumerRecord[bytes, bytes]]] = []
    seen: Counter[bytes | None] = Counter()
    for record in heapq.merge(*partitions, key=lambda r: r.timestamp):
        n = seen[record.key]
        seen[record.key] += 1
        if n == len(waves):
            waves.append([])
        waves[n].append(record)
    return waves
