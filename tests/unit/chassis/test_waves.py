"""A batch handled in waves (chassis.batches with `Together`), against what one record at a
time promises, for any batch: records over partitions, clients and clinics, some of which
the infrastructure cannot take now (their partition stops there).

What must hold whatever the waves and groups were:
- a record the infrastructure refused is never counted handled, and nothing after it on
  its partition is committed;
- every record before a partition's first refused one is handled (nothing skipped);
- each partition is committed up to its first record not handled, and sought back there;
- a client's records on one partition are handled in offset order, none after one that
  was not;
- a call handling records together gets one clinic's, at most one per client.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from chassis.batches import BatchHandler, Progress, Together
from chassis.dead_letters import DeadLetterPolicy
from shared import events as ev
from shared import topics
from shared.envelope import Envelope

TOPIC = topics.CONSULTATION_HELD
CLIENTS = [uuid.UUID(int=n + 1) for n in range(4)]
CLINICS = ["c-one", "c-two"]

# (partition, client, clinic, refused by the infrastructure)
Spec = tuple[int, int, int, bool]


class FakeConsumer:
    def __init__(self) -> None:
        self.committed: dict[TopicPartition, int] = {}
        self.sought: dict[TopicPartition, int] = {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed.update(offsets)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.sought[tp] = offset


def _records(specs: Sequence[Spec]) -> list[ConsumerRecord[bytes, bytes]]:
    offsets: dict[int, int] = {}
    records = []
    for n, (partition, client, clinic, _) in enumerate(specs):
        offset = offsets.get(partition, 0)
        offsets[partition] = offset + 1
        at = datetime(2026, 11, 30, tzinfo=UTC)
        event = ev.ConsultationHeld(
            clinic_id=CLINICS[clinic],
            client_id=CLIENTS[client],
            occurred_at=at,
            outcome="proceed_to_screening",
        )
        envelope = Envelope(
            id=f"e{n}",
            source="/kap/intake",
            type=f"kap.{TOPIC.name}",
            time=at,
            subject=str(event.client_id),
            clinic_id=CLINICS[clinic],
            correlation_id=f"c{n}",
        )
        value = event.model_dump_json().encode()
        records.append(
            ConsumerRecord(
                topic=TOPIC.name,
                partition=partition,
                offset=offset,
                timestamp=1_000 + n,  # produced in the order given
                timestamp_type=0,
                key=str(event.client_id).encode(),
                value=value,
                checksum=None,
                serialized_key_size=36,
                serialized_value_size=len(value),
                headers=list(envelope.to_headers()),
            )
        )
    return records


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        # partition, client, clinic, and one record in five refused
        st.tuples(st.integers(0, 2), st.integers(0, 3), st.integers(0, 1), st.integers(0, 4)),
        min_size=1,
        max_size=14,
    ).map(lambda specs: [(p, c, k, roll == 0) for p, c, k, roll in specs])
)
def test_a_batch_in_waves_keeps_the_promises_of_one_record_at_a_time(specs: list[Spec]) -> None:
    asyncio.run(_check(specs))


async def _check(specs: list[Spec]) -> None:
    records = _records(specs)
    refused = {f"e{n}" for n, spec in enumerate(specs) if spec[3]}
    handled: list[str] = []
    groups: list[list[tuple[str, str]]] = []

    async def handler(event: ev.ConsultationHeld, envelope: Envelope) -> None:
        if envelope.id in refused:
            raise ConnectionError("redis is down")
        handled.append(envelope.id)

    async def together(items: Sequence[tuple[Any, Any]]) -> None:
        groups.append([(event.clinic_id, str(event.client_id)) for event, _ in items])
        if any(envelope.id in refused for _, envelope in items):
            raise ConnectionError("redis is down")
        handled.extend(envelope.id for _, envelope in items)

    consumer = FakeConsumer()
    batches = BatchHandler(
        "scheduler",
        [(TOPIC, handler)],
        broker=None,  # type: ignore[arg-type]  # nothing is dead-lettered here
        progress=Progress(),
        policy=DeadLetterPolicy(max_backoff_s=0.0),
        together=Together(frozenset({TOPIC.name}), together),
    )
    await batches.handle(records, consumer)

    assert not refused & set(handled)
    assert len(handled) == len(set(handled))  # nothing twice in one batch
    for group in groups:
        assert len({clinic for clinic, _ in group}) == 1
        assert len({client for _, client in group}) == len(group)
    for partition in {r.partition for r in records}:
        tp = TopicPartition(TOPIC.name, partition)
        mine = [f"e{n}" for n, r in enumerate(records) if r.partition == partition]
        first_refused = next((i for i, e in enumerate(mine) if e in refused), len(mine))
        assert set(mine[:first_refused]) <= set(handled)  # nothing before it skipped
        first_not = next((i for i, e in enumerate(mine) if e not in handled), len(mine))
        assert first_not <= first_refused
        assert consumer.committed.get(tp, 0) == first_not  # offsets count from 0 here
        if first_not < len(mine):
            assert consumer.sought[tp] == first_not
        else:
            assert tp not in consumer.sought
    # A client's records on one partition: in offset order, none after one not handled.
    order = {e: i for i, e in enumerate(handled)}
    for n, (partition, client, _, _) in enumerate(specs):
        for m in range(n + 1, len(specs)):
            if specs[m][0] == partition and specs[m][1] == client:
                later = f"e{m}"
                if later in order:
                    assert f"e{n}" in order
                    assert order[f"e{n}"] < order[later]
