"""A batch is handled with the guarantees of one message at a time (chassis.batches),
on the real Kafka: what is committed, what is dead-lettered, what comes again.

A topic of the test's own (three partitions, and its dead-letter topic), a consumer
in a group of the test's own; the handler is told which records to refuse (the
message's fault) and which to fail as the infrastructure's (Redis down).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import cast

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faststream.kafka import KafkaBroker

from chassis.batches import BatchHandler, Handler, Progress, Together
from chassis.config import ServiceSettings
from chassis.dead_letters import DeadLetterPolicy, Rejected
from chassis.events import EventPublisher
from chassis.kafka import apply_topics, make_broker, subscribe
from chassis.redis_client import connect_redis
from chassis.unit_of_work import Decision, Transaction, UnitOfWork
from shared import events as ev
from shared import topics
from shared.envelope import Envelope
from tests.helpers import topic_messages
from tests.integration.test_bad_input import topic_messages_raw

pytestmark = pytest.mark.integration

PARTITIONS = 3
PER_PARTITION = 4
WIDE = 64  # partitions in one batch: more than redis-py's default pool over two


@pytest.fixture
async def topic(kafka_bootstrap: str) -> topics.Topic:
    mine = dataclasses.replace(
        topics.CONSULTATION_HELD,
        name=f"test.batches.{uuid.uuid4().hex[:8]}.v1",
        partitions=PARTITIONS,
    )
    await apply_topics(kafka_bootstrap, topics=[mine], records=())
    return mine


@pytest.fixture
async def consumer(kafka_bootstrap: str, topic: topics.Topic) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = await _assigned(kafka_bootstrap, topic)
    yield consumer
    await consumer.stop()


async def _produce(
    kafka_bootstrap: str,
    topic: topics.Topic,
    partitions: int = PARTITIONS,
    per_partition: int = PER_PARTITION,
) -> dict[int, list[str]]:
    """`per_partition` events on each partition; their event ids per partition, in order."""
    return await _produce_at(
        kafka_bootstrap, topic, {p: [None] * per_partition for p in range(partitions)}
    )


async def _produce_at(
    kafka_bootstrap: str, topic: topics.Topic, stamps: dict[int, list[int | None]]
) -> dict[int, list[str]]:
    """An event per stamp on its partition, with that Kafka timestamp (None: the broker's
    time of sending); their event ids per partition, in order."""
    records = [(p, "c-batch", uuid.uuid4(), stamp) for p, at in stamps.items() for stamp in at]
    ids = iter(await _produce_clients(kafka_bootstrap, topic, records))
    return {p: [next(ids) for _ in at] for p, at in stamps.items()}


async def test_a_batch_commits_each_partition_up_to_what_it_handled_and_redelivers_the_rest(
    kafka_bootstrap: str, topic: topics.Topic, consumer: AIOKafkaConsumer
) -> None:
    ids = await _produce(kafka_bootstrap, topic)
    refuse = ids[1][1]  # the message's own fault: dead-lettered, its partition goes on
    down = ids[2][2]  # the infrastructure's: partition 2 stops there, sought back
    handled: list[str] = []
    infrastructure_down = True

    async def handler(event: ev.ConsultationHeld, envelope: Envelope) -> None:
        if envelope.id == refuse:
            raise Rejected("not for this client's state")
        if envelope.id == down and infrastructure_down:
            raise ConnectionError("redis is down")
        handled.append(envelope.id)

    broker = make_broker(ServiceSettings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap), "scheduler")
    await broker.start()
    try:
        batches = _refusing_batches(broker, topic, handler)
        records = await _all(consumer, PARTITIONS * PER_PARTITION)
        await batches.handle(records, consumer)

        committed = {p: await consumer.committed(_tp(topic, p)) for p in range(PARTITIONS)}
        assert committed == {0: PER_PARTITION, 1: PER_PARTITION, 2: 2}
        # Each partition in order; partition 2 stopped at the record that failed.
        for partition in range(PARTITIONS):
            mine = [i for i in handled if i in ids[partition]]
            expected = [i for i in ids[partition] if i != refuse]
            assert mine == (expected[:2] if partition == 2 else expected)
        [dead] = await topic_messages(kafka_bootstrap, topic.dead_letters, expect=1)
        assert dead["headers"]["ce_id"] == refuse
        assert dead["headers"]["kap_dlq_error_type"] == "Rejected"

        # The next batch starts at the record sought back: nothing else comes again.
        infrastructure_down = False
        handled.clear()
        again = await _all(consumer, 2)
        assert [r.offset for r in again] == [2, 3]
        await batches.handle(again, consumer)
        assert handled == ids[2][2:]
        assert await consumer.committed(_tp(topic, 2)) == PER_PARTITION
    finally:
        await broker.stop()


async def test_a_service_consumer_dead_letters_an_unreadable_record_and_handles_its_batch(
    kafka_bootstrap: str, topic: topics.Topic
) -> None:
    """Through the service's own wiring (chassis.kafka.subscribe, FastStream's batch
    subscriber): an unreadable record among good ones is that record's dead letter; the
    batch around it is handled and committed (a first version let FastStream decode the
    whole batch, and one bad record dropped every record of it, uncommitted)."""
    ids = await _produce(kafka_bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            topic.name,
            b'{"clinic_id": "c-batch", ',
            key=b"unreadable",
            partition=0,
            headers=[("content-type", b"application/json")],
        )
    finally:
        await producer.stop()
    handled: list[str] = []

    async def handler(event: ev.ConsultationHeld, envelope: Envelope) -> None:
        handled.append(envelope.id)

    settings = ServiceSettings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    broker = make_broker(settings, "scheduler")
    service = f"test-{uuid.uuid4().hex[:8]}"
    membership = subscribe(broker, service, [(topic, handler)], "", settings)
    await broker.start()
    try:
        [dead] = await topic_messages_raw(
            kafka_bootstrap, topic.dead_letters, "unreadable", service, 1
        )
        assert dead["kap_dlq_error_type"] == "JSONDecodeError"
        for _ in range(100):
            if len(handled) == PARTITIONS * PER_PARTITION:
                break
            await asyncio.sleep(0.1)
        assert sorted(handled) == sorted(i for p in ids.values() for i in p)
        assert membership.joined
    finally:
        await broker.stop()


async def test_a_batch_over_many_partitions_stays_within_the_redis_pool(
    kafka_bootstrap: str, redis_url: str
) -> None:
    """A record's step holds two Redis connections while it reads under WATCH (the
    watched one and its read pipeline's). A batch handling all its partitions at once
    (90 in a notifier) ran redis-py's default pool of 100 out: MaxConnectionsError,
    seen 113 times in one short bench, each a partition sought back and a batch asleep
    (issue 19). Every record of a batch over 64 partitions is handled and committed."""
    wide = dataclasses.replace(
        topics.CONSULTATION_HELD,
        name=f"test.batches.wide.{uuid.uuid4().hex[:8]}.v1",
        partitions=WIDE,
    )
    await apply_topics(kafka_bootstrap, topics=[wide], records=())
    await _produce(kafka_bootstrap, wide, WIDE, 1)
    consumer = await _assigned(kafka_bootstrap, wide)
    redis = connect_redis(redis_url)  # the services' own client, its pool as theirs
    work = UnitOfWork(redis, "tests", cast(EventPublisher, None))  # no outputs to publish
    clinic = f"c-wide-{uuid.uuid4().hex[:8]}"
    broker = make_broker(ServiceSettings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap), "scheduler")
    await broker.start()

    async def handler(event: ev.ConsultationHeld, envelope: Envelope) -> None:
        done = f"tests:{{{clinic}}}:done:{envelope.id}"

        async def step(tx: Transaction) -> Decision[None]:
            await tx.watch(done)
            async with tx.reads() as reads:
                reads.exists(done)
                await reads.execute()
                await asyncio.sleep(0.2)  # a slow step: both connections held meanwhile
            return Decision(lambda p: p.set(done, "1", ex=600))

        await work.run(clinic, [envelope.id], step, marks_of=str(event.client_id))

    try:
        batches = BatchHandler(
            "scheduler", [(wide, handler)], broker, Progress(), policy=DeadLetterPolicy()
        )
        records = await _all(consumer, WIDE)
        await batches.handle(records, consumer)
        committed = [await consumer.committed(_tp(wide, p)) for p in range(WIDE)]
        assert committed == [1] * WIDE
        done = [k async for k in redis.scan_iter(match=f"tests:{{{clinic}}}:done:*")]
        assert len(done) == WIDE
    finally:
        await broker.stop()
        await consumer.stop()
        await redis.aclose()


async def test_a_batch_hands_its_turns_to_the_records_produced_first(
    kafka_bootstrap: str, topic: topics.Topic
) -> None:
    """Topics are not ordered with each other, but a batch catching up handles records
    in about the order they were produced: partitions start oldest first, and each free
    turn goes to the waiting record with the earliest Kafka timestamp. A chaos run lost
    a client's request acknowledgement: planned after the client's course had ended
    (another topic's record, ten service days later on the test's fast clock), it was
    dropped as too late to tidy."""
    produced_at: dict[int, list[int | None]] = {0: [1_000, 4_000], 1: [3_000], 2: [2_000, 5_000]}
    ids = await _produce_at(kafka_bootstrap, topic, produced_at)
    stamp_of = {
        event_id: stamp
        for partition, stamps in produced_at.items()
        for event_id, stamp in zip(ids[partition], stamps, strict=True)
    }
    consumer = await _assigned(kafka_bootstrap, topic)
    handled: list[int | None] = []

    async def handler(event: ev.ConsultationHeld, envelope: Envelope) -> None:
        await asyncio.sleep(0.01)  # a step's round trips: the others wait for a turn
        handled.append(stamp_of[envelope.id])

    broker = make_broker(ServiceSettings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap), "scheduler")
    await broker.start()
    try:
        records = await _all(consumer, 5)
        batches = BatchHandler("scheduler", [(topic, handler)], broker, Progress(), concurrency=1)
        await batches.handle(records, consumer)
    finally:
        await broker.stop()
        await consumer.stop()
    assert handled == [1_000, 2_000, 3_000, 4_000, 5_000]


async def test_a_batch_in_waves_hands_each_clinic_its_clients_records_together(
    kafka_bootstrap: str, topic: topics.Topic, consumer: AIOKafkaConsumer
) -> None:
    """With `Together` (the notifier's planning): one call per clinic and wave, a client's
    second record in the wave after its first; a group that fails goes again a record
    at a time, each error its own record's; a partition stopped by the infrastructure
    handles none of its later records, and is committed up to its first not handled."""
    a, b, c, d, e = (uuid.uuid4() for _ in range(5))
    ids = await _produce_clients(
        kafka_bootstrap,
        topic,
        [
            (p, clinic, client, None)
            for p, clinic, client in [
                *[(0, "c-x", a), (1, "c-x", b), (2, "c-x", c), (0, "c-x", d), (2, "c-y", e)],
                *[(0, "c-x", a), (1, "c-x", b), (2, "c-x", c)],  # a second record each
            ]
        ],
    )
    a1, b1, c1, d1, e1, a2, b2, c2 = ids
    refuse, down = b2, e1  # the message's fault; the infrastructure's (partition 2 stops)
    infrastructure_down = True
    together: list[set[str]] = []
    alone: list[str] = []

    def check(envelope: Envelope) -> None:
        if envelope.id == refuse:
            raise Rejected("not for this client's state")
        if envelope.id == down and infrastructure_down:
            raise ConnectionError("redis is down")

    async def handler(event: ev.ConsultationHeld, envelope: Envelope) -> None:
        check(envelope)
        alone.append(envelope.id)

    async def handle_together(items: Sequence[tuple[ev.Event, Envelope]]) -> None:
        assert len({event.clinic_id for event, _ in items}) == 1
        for _, envelope in items:
            check(envelope)
        together.append({envelope.id for _, envelope in items})

    broker = make_broker(ServiceSettings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap), "scheduler")
    await broker.start()
    try:
        grouping = Together(frozenset({topic.name}), handle_together)
        batches = _refusing_batches(broker, topic, handler, grouping)
        await batches.handle(await _all(consumer, len(ids)), consumer)

        # Wave 1: c-x's four clients together, c-y's one alone (down). Wave 2: a2 and b2
        # together, refused, then each alone; c2 not handled (after e1 on partition 2).
        assert together == [{a1, b1, c1, d1}]
        assert alone == [a2]
        [dead] = await topic_messages(kafka_bootstrap, topic.dead_letters, expect=1)
        assert dead["headers"]["ce_id"] == refuse
        committed = {p: await consumer.committed(_tp(topic, p)) for p in range(PARTITIONS)}
        assert committed == {0: 3, 1: 2, 2: 1}

        infrastructure_down = False
        again = await _all(consumer, 2)  # partition 2 from e1 on
        assert [r.offset for r in again] == [1, 2]  # type: ignore[attr-defined]
        await batches.handle(again, consumer)
        assert sorted(alone[1:]) == sorted([e1, c2])  # both first of their client: one wave
        assert await consumer.committed(_tp(topic, 2)) == 3
    finally:
        await broker.stop()


async def _produce_clients(
    kafka_bootstrap: str,
    topic: topics.Topic,
    records: Sequence[tuple[int, str, uuid.UUID, int | None]],
) -> list[str]:
    """An event for each (partition, clinic, client, Kafka timestamp), in order (a None
    timestamp: the time of sending); their event ids."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    ids = []
    try:
        for partition, clinic_id, client_id, stamp in records:
            now = datetime.now(UTC)
            event = ev.ConsultationHeld(
                clinic_id=clinic_id,
                client_id=client_id,
                occurred_at=now,
                outcome="proceed_to_screening",
            )
            envelope = Envelope(
                id=str(uuid.uuid4()),
                source="/kap/intake",
                type=f"kap.{topic.name}",
                time=now,
                subject=str(client_id),
                clinic_id=clinic_id,
                correlation_id=str(uuid.uuid4()),
            )
            await producer.send_and_wait(
                topic.name,
                event.model_dump_json().encode(),
                key=str(client_id).encode(),
                partition=partition,
                headers=envelope.to_headers(),
                timestamp_ms=stamp,
            )
            ids.append(envelope.id)
    finally:
        await producer.stop()
    return ids


def _refusing_batches(
    broker: KafkaBroker, topic: topics.Topic, handler: Handler, together: Together | None = None
) -> BatchHandler:
    """A scheduler's batch handler of `topic`, whose refused records come again at once."""
    return BatchHandler(
        "scheduler",
        [(topic, handler)],
        broker,
        Progress(),
        policy=DeadLetterPolicy(max_backoff_s=0.0),
        together=together,
    )


async def _assigned(kafka_bootstrap: str, topic: topics.Topic) -> AIOKafkaConsumer:
    """A started consumer of a group of its own, assigned every partition of `topic`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"test-batches-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    consumer.assign([_tp(topic, p) for p in range(topic.partitions)])
    return consumer


def _tp(topic: topics.Topic, partition: int) -> TopicPartition:
    return TopicPartition(topic.name, partition)


async def _all(consumer: AIOKafkaConsumer, count: int) -> list[object]:
    """`count` records, in one list (several fetches if need be)."""
    found: list[object] = []
    for _ in range(40):
        for records in (await consumer.getmany(timeout_ms=250)).values():
            found += records
        if len(found) >= count:
            break
    assert len(found) == count, f"{len(found)} records, not {count}"
    return found
