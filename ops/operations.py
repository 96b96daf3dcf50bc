"""What kapctl does against a live deployment: lag, dead letters, timelines, clinics.

Talks to Kafka (and the clinics file) only; imports no service.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from ops.reading import read_to_end
from shared.topics import ALL, BY_NAME, DLQ_SUFFIX

SERVICE_GROUPS = ("kap-scheduler", "kap-notifier")
# What `kapctl lag` shows by default: the services' groups and the webhook service's
# (apart from SERVICE_GROUPS, which the bench counts consumptions by: it runs no webhooks).
OPERATED_GROUPS = (*SERVICE_GROUPS, "kap-webhooks")
REPLAY_GROUP = "kapctl-dlq-replay"
DLQ_PREFIX = "kap_dlq_"


@dataclass(frozen=True)
class Lag:
    group: str
    topic: str
    partition: int
    committed: int
    end: int

    @property
    def behind(self) -> int:
        return max(self.end - max(self.committed, 0), 0)


@dataclass(frozen=True)
class DeadLetter:
    dlq_topic: str
    partition: int
    offset: int
    key: str
    headers: dict[str, str]
    value: bytes

    @property
    def original_topic(self) -> str:
        return self.headers.get(f"{DLQ_PREFIX}topic", self.dlq_topic.removesuffix(DLQ_SUFFIX))

    def summary(self) -> dict[str, Any]:
        return {
            "dlq": f"{self.dlq_topic}[{self.partition}]@{self.offset}",
            "from": f"{self.original_topic}[{self.headers.get(f'{DLQ_PREFIX}partition')}]"
            f"@{self.headers.get(f'{DLQ_PREFIX}offset')}",
            "service": self.headers.get(f"{DLQ_PREFIX}service"),
            "attempts": self.headers.get(f"{DLQ_PREFIX}attempts"),
            "error": self.headers.get(f"{DLQ_PREFIX}error"),
            "dead_at": self.headers.get(f"{DLQ_PREFIX}dead_at"),
            "key": self.key,
        }


# `security` below: the login and TLS options of `chassis.kafka.client_options`.
Security = Mapping[str, Any] | None


async def consumer_lag(
    bootstrap: str, groups: Iterable[str] = SERVICE_GROUPS, *, security: Security = None
) -> list[Lag]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **(security or {}))
    await admin.start()
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        return await group_lags(admin, consumer, groups)
    finally:
        await consumer.stop()
        await admin.close()


async def group_lags(
    admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer, groups: Iterable[str]
) -> list[Lag]:
    """Each group's lag per partition, with clients already started (callers that poll)."""
    lags = []
    for group in groups:
        committed = {
            tp: meta.offset for tp, meta in (await admin.list_consumer_group_offsets(group)).items()
        }
        # Every partition of the topics the group reads: one it has not
        # committed on yet is behind by all it holds (from its start).
        partitions = sorted(
            TopicPartition(topic, p)
            for topic in {tp.topic for tp in committed}
            for p in consumer.partitions_for_topic(topic) or ()
        )
        if not partitions:
            continue
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(
            [tp for tp in partitions if committed.get(tp, -1) < 0]
        )
        for tp in partitions:
            done = committed.get(tp, -1)
            start = done if done >= 0 else starts[tp]
            lags.append(Lag(group, tp.topic, tp.partition, start, ends[tp]))
    return lags


def dlq_topics(original: str | None = None) -> list[str]:
    names = [original] if original else [t.name for t in ALL]
    for name in names:
        if name not in BY_NAME:
            raise ValueError(f"unknown topic {name!r} (see `kapctl topics list`)")
    return [name + DLQ_SUFFIX for name in names]


async def dead_letters(
    bootstrap: str, original: str | None = None, *, security: Security = None
) -> list[DeadLetter]:
    """Every dead letter still kept, oldest first per topic."""
    records = await read_to_end(bootstrap, dlq_topics(original), security=security)
    return [_dead_letter(r) for r in records]


def _dead_letter(record: Any) -> DeadLetter:
    return DeadLetter(
        record.topic,
        record.partition,
        record.offset,
        (record.key or b"").decode("utf-8", "replace"),
        {k: v.decode("utf-8", "replace") for k, v in record.headers},
        record.value or b"",
    )


async def replay_dead_letters(
    bootstrap: str,
    original: str | None = None,
    clients: Iterable[str] = (),
    *,
    security: Security = None,
) -> int:
    """Send dead letters back to their topic.

    Without `clients`, every letter not replayed before: the replay group commits
    what went, so a second run sends nothing again. With `clients`, exactly the
    letters of those clients, chosen by hand (the group is left untouched).
    """
    if chosen := set(clients):
        kept = await dead_letters(bootstrap, original, security=security)
        return await _republish(bootstrap, [d for d in kept if d.key in chosen], security)
    consumer = AIOKafkaConsumer(
        *dlq_topics(original),
        bootstrap_servers=bootstrap,
        group_id=REPLAY_GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **(security or {}),
    )
    await consumer.start()
    replayed = 0
    try:
        while batches := await consumer.getmany(timeout_ms=2000):
            letters = [_dead_letter(r) for records in batches.values() for r in records]
            replayed += await _republish(bootstrap, letters, security)
            await consumer.commit()
        return replayed
    finally:
        await consumer.stop()


async def _republish(bootstrap: str, letters: list[DeadLetter], security: Security) -> int:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, **(security or {})
    )
    await producer.start()
    try:
        for letter in letters:
            headers = [
                (k, v.encode()) for k, v in letter.headers.items() if not k.startswith(DLQ_PREFIX)
            ]
            await producer.send_and_wait(
                letter.original_topic, letter.value, key=letter.key.encode(), headers=headers
            )
        return len(letters)
    finally:
        await producer.stop()


def upsert_clinic(
    path: Path,
    clinic: dict[str, Any],
    api_key: str | None,
    check: Callable[[dict[str, Any]], object] = lambda _: None,
) -> str:
    """Add or update one clinic in the clinics file; services pick it up without a restart.

    `check` sees the clinic's merged entry before anything is written, and refuses by raising.
    """
    entries: list[dict[str, Any]] = json.loads(path.read_text()) if path.exists() else []
    existing = next((e for e in entries if e["id"] == clinic["id"]), None)
    if api_key:
        clinic["api_key_sha256"] = hashlib.sha256(api_key.encode()).hexdigest()
    if existing is None:
        if "api_key_sha256" not in clinic:
            raise ValueError("a new clinic needs an API key (--api-key)")
        entries.append(clinic)
        action = "added"
    else:
        existing.update(clinic)
        action = "updated"
    check(existing if existing is not None else clinic)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(entries, indent=2))
    temporary.replace(path)  # readers never see half a file
    return action
