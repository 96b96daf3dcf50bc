"""Checking, not assuming: what really happened, read back from Kafka, Redis and the mailbox.

Used by the demo, the end-to-end tests and chaos to count outcomes and to find
lost events, duplicate notifications and double bookings.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from ops.mailcatcher import read_mails
from ops.reading import read_to_end
from shared.topics import ALL


@dataclass(frozen=True)
class Record:
    topic: str
    key: str
    id: str
    time: str
    type: str
    value: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Journal:
    """Every event of the given clients, per topic, in log order."""

    records: list[Record] = field(default_factory=list)

    def of(self, topic: str) -> list[Record]:
        return [r for r in self.records if r.topic == topic]

    def distinct(self, topic: str) -> int:
        return len({r.id for r in self.of(topic)})

    def timeline(self, client: str) -> list[Record]:
        return sorted((r for r in self.records if r.key == client), key=lambda r: r.time)

    def clients_with(self, topic: str) -> set[str]:
        return {r.key for r in self.of(topic)}


async def read_journal(bootstrap: str, clients: Iterable[str]) -> Journal:
    """Read every topic to its current end and keep the records of `clients`."""
    wanted = set(clients)
    journal = Journal()
    for record in await read_to_end(bootstrap, [topic.name for topic in ALL]):
        key = (record.key or b"").decode()
        if key in wanted:
            headers = {k: v.decode() for k, v in record.headers}
            journal.records.append(
                Record(
                    record.topic,
                    key,
                    headers.get("ce_id", ""),
                    headers.get("ce_time", ""),
                    headers.get("ce_type", ""),
                    json.loads(record.value),
                    headers,
                )
            )
    return journal


def duplicate_mails(maildir: Path) -> int:
    """Messages delivered more than once: the same Message-ID (the notification id) twice."""
    ids = Counter(str(mail["Message-ID"]) for mail in read_mails(maildir) if mail["Message-ID"])
    return sum(count - 1 for count in ids.values() if count > 1)


def duplicate_sms(log: Path) -> int:
    """Texts accepted more than once for one notification (its id is the idempotency key)."""
    if not log.exists():
        return 0
    keys = Counter(json.loads(line).get("idempotency_key") for line in log.read_text().splitlines())
    return sum(count - 1 for key, count in keys.items() if key and count > 1)


async def double_bookings(redis: Redis, clinic_ids: Iterable[str]) -> int:
    """Overlapping appointments of one therapist, room or client, found in the ledger."""
    overlaps = 0
    for clinic in clinic_ids:
        async for key in redis.scan_iter(match=f"sched:{{{clinic}}}:booked:*", count=500):
            spans: defaultdict[str, set[tuple[int, int]]] = defaultdict(set)
            members: list[Any] = await redis.zrange(key, 0, -1)
            for member in members:
                text = member if isinstance(member, str) else member.decode()
                first, last, appointment = text.split("|")
                spans[appointment].add((int(first), int(last)))
            flat = sorted((s, e, a) for a, pairs in spans.items() for s, e in pairs)
            latest_end, holder = 0, ""
            for begins, ends, booked in flat:
                if begins < latest_end and booked != holder:
                    overlaps += 1
                if ends > latest_end:
                    latest_end, holder = ends, booked
    return overlaps
