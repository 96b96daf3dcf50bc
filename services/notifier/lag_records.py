"""The scheduler's uncommitted records, and which time-bound messages they hold back.

Pure: lag.ScheduleLag asks Kafka for offsets and reads the records; this says
where a client's records are, which ones the group has not committed, what a
record names, and which messages it concerns. Every event is keyed by client
id, so a client's schedule changes are on one partition of each topic (the
default partitioner's, `partition_of`). A message waits only for a record
older than the bound that is its client's and names its appointment (or names
none, or cannot be read), and that the notifier has not applied yet. Another
client's backlog on the same partition, a change to another of the client's
appointments, or one the notifier has applied but not committed (`applied`:
its handled mark, written in one transaction with the change's effects,
chassis.unit_of_work) changes nothing about this message.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from aiokafka import TopicPartition
from aiokafka.partitioner import murmur2

from shared.envelope import HEADER_CLINIC, HEADER_ID


def partition_of(client_id: UUID, partitions: int) -> int:
    """The partition the default partitioner gives a client's events (keyed by client id)."""
    return int(murmur2(str(client_id).encode()) & 0x7FFFFFFF) % partitions


def uncommitted(
    committed: Mapping[TopicPartition, int], ends: Mapping[TopicPartition, int]
) -> dict[TopicPartition, tuple[int, int]]:
    """Per partition, the offsets [from, to) of the records the group has not committed;
    partitions with none are left out (pure).

    `committed`: the group's next offset to handle (absent or -1: never committed, so
    from the log's start, here 0: a reader moves up to the first record kept);
    `ends`: each partition's end.
    """
    ranges = {}
    for tp, end in ends.items():
        done = max(committed.get(tp, -1), 0)
        if done < end:
            ranges[tp] = (done, end)
    return ranges


def waiting(
    wanted: Mapping[TopicPartition, Collection[Subject]],
    changes: Mapping[TopicPartition, Sequence[Change] | None],
    applied: Collection[Input],
) -> set[Subject]:
    """The subjects a change waits unread for (pure): on one of their partitions, a
    change that concerns them and is not applied; or a partition whose changes are not
    known (None: too many to read), where anything may be waiting."""
    found = set()
    for tp, subjects in wanted.items():
        if tp not in changes:
            continue
        on_it = changes[tp]
        for subject in subjects:
            if on_it is None or any(
                c.concerns(subject) and (c.event is None or c.event not in applied) for c in on_it
            ):
                found.add(subject)
    return found


# A change's event: clinic id, event id, and the client whose handled marks hold it.
Input = tuple[str, str, str | None]
# A time-bound message's subject: its client, and the appointment it is about (None: any).
Subject = tuple[UUID, UUID | None]


@dataclass(frozen=True)
class Change:
    """An uncommitted schedule record, as far as the gate needs it: whose, which
    appointments it names (None: it could not be read, so it may concern any), and its
    clinic and event id (from its CloudEvents headers)."""

    client: bytes | None
    appointments: frozenset[str] | None
    event: Input | None = None

    @classmethod
    def of(
        cls, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> Change:
        named = dict(headers)
        clinic, event_id = named.get(HEADER_CLINIC), named.get(HEADER_ID)
        client = key.decode() if key else None
        event = (clinic.decode(), event_id.decode(), client) if clinic and event_id else None
        try:
            appointments = frozenset(_appointment_ids(json.loads(value or b"")))
        except ValueError:
            return cls(key, None, event)
        return cls(key, appointments or None, event)

    def concerns(self, subject: Subject) -> bool:
        client, appointment = subject
        if self.client != str(client).encode():
            return False
        if appointment is None or self.appointments is None:
            return True
        return str(appointment) in self.appointments


def _appointment_ids(value: Any) -> Iterator[str]:
    """Every `appointment_id` in an event's JSON, however deep (a course names many)."""
    if isinstance(value, dict):
        for name, inner in value.items():
            if name == "appointment_id" and isinstance(inner, str):
                yield inner
            else:
                yield from _appointment_ids(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _appointment_ids(inner)
