"""Checking, not assuming: what really happened, read back from Kafka and the sinks.

`audit_topics` is the auditor (`kapctl audit`, the demo, chaos and the
end-to-end tests): it trusts only the topics, the SMTP sink's mailbox and the
SMS provider's log, and counts the failures listed in ops/audit_checks.py.
`double_bookings` reads the scheduler's own ledger instead: a second opinion
only, since the ledger's Lua script refuses overlaps by construction.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from ops import audit_checks, audit_rules
from ops.audit_checks import FAILING, Expected, Findings
from ops.audit_messages import Mail, Text
from ops.mailcatcher import read_mails, read_mails_accepted
from ops.reading import read_to_end
from shared.topics import ALL, BY_NAME
from shared.topics import NOTIFICATION_SENT as SENT_TOPIC

__all__ = ["FAILING", "Expected", "Findings", "Journal", "Mail", "Record", "Text", "audit_topics"]


# How long after its hand-over a mail's NotificationSent may still be on its way
# (published with acks=all just after the SMTP server accepted the mail).
IN_FLIGHT_S = 2.0


@dataclass(frozen=True)
class Record:
    topic: str
    key: str
    id: str
    time: str
    type: str
    value: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    appended_ms: int | None = None  # Kafka's record time (real ms), when read from Kafka
    seen_ms: int | None = None  # when a witness first read it (real ms), if one watched


@dataclass
class Journal:
    """Every event of the given clients, per topic, in log order."""

    records: list[Record] = field(default_factory=list)
    unreadable: int = 0  # records of these clients that are not JSON events, left out
    # Notifications sent to clients outside the journal (another run's, a test's): a sink
    # shared with them may hold their copies, which are theirs, not this journal's.
    sent_elsewhere: set[str] = field(default_factory=set)
    read_at: float | None = None  # real time (s) the reading began

    def of(self, topic: str) -> list[Record]:
        return [r for r in self.records if r.topic == topic]

    def distinct(self, topic: str) -> int:
        return len({r.id for r in self.of(topic)})

    def timeline(self, client: str) -> list[Record]:
        return sorted((r for r in self.records if r.key == client), key=lambda r: r.time)

    def clients_with(self, topic: str) -> set[str]:
        return {r.key for r in self.of(topic)}


async def read_journal(
    bootstrap: str,
    clients: Iterable[str] | None,
    *,
    clinics: Iterable[str] = (),
    since: datetime | None = None,
    security: Mapping[str, Any] | None = None,
) -> Journal:
    """Read every topic to its current end and keep the records of `clients`.

    `clients` None keeps every client's; `clinics` keeps only those clinics';
    `since` keeps the clients whose first record reached Kafka at or after it
    (Kafka's own timestamps, real time), i.e. one run's people on shared topics.
    `security`: the login and TLS options of `chassis.kafka.client_options`.
    """
    wanted = set(clients) if clients is not None else None
    only = set(clinics)
    journal = Journal(read_at=time.time())
    raw = await read_to_end(bootstrap, [topic.name for topic in ALL], security=security)
    first_seen: dict[str, int] = {}
    for record in raw:
        key = (record.key or b"").decode(errors="replace")
        first_seen[key] = min(first_seen.get(key, record.timestamp), record.timestamp)
    cutoff = since.timestamp() * 1000 if since is not None else None
    for record in raw:
        key = (record.key or b"").decode(errors="replace")
        if (wanted is not None and key not in wanted) or (
            cutoff is not None and first_seen[key] < cutoff
        ):
            if record.topic == SENT_TOPIC.name:
                with contextlib.suppress(TypeError, ValueError, KeyError):
                    journal.sent_elsewhere.add(str(json.loads(record.value)["notification_id"]))
            continue
        headers = {k: v.decode(errors="replace") for k, v in record.headers}
        if only and headers.get("ce_clinicid") not in only:
            continue
        try:
            value = json.loads(record.value)
            BY_NAME[record.topic].event.model_validate(value)
        except (TypeError, ValueError):  # pydantic's ValidationError is a ValueError
            # Not a valid event (the services dead-letter such records, and the
            # bad-input tests put some on the real topics): part of no journey.
            journal.unreadable += 1
            continue
        journal.records.append(
            Record(
                record.topic,
                key,
                headers.get("ce_id", ""),
                headers.get("ce_time", ""),
                headers.get("ce_type", ""),
                value,
                headers,
                record.timestamp,
            )
        )
    return journal


def mails_in(maildir: Path) -> list[Mail]:
    """Every copy the SMTP sink kept: Message-ID and Date only (no address, no text)."""
    found = []
    for accepted_at, began_at, mail in read_mails_accepted(maildir):
        date = None
        if mail["Date"]:
            try:
                date = parsedate_to_datetime(str(mail["Date"]))
            except (TypeError, ValueError):
                date = None
        message_id = str(mail["Message-ID"] or "").strip()
        found.append(Mail(message_id, date, accepted_at, began_at))
    return found


def texts_in(log: Path) -> list[Text]:
    """Every SMS the provider accepted: its Idempotency-Key only (no number, no text)."""
    if not log.exists():
        return []
    lines = (json.loads(line) for line in log.read_text().splitlines() if line.strip())
    return [Text(entry.get("idempotency_key"), entry.get("received_at")) for entry in lines]


def audit_topics(
    journal: Journal,
    *,
    maildir: Path | None = None,
    sms_log: Path | None = None,
    clinics_file: Path | None = None,
    expected: Expected | None = None,
    now: datetime | None = None,
) -> Findings:
    """The auditor over one journal and, when given, the sinks that received its messages."""
    return audit_checks.audit(
        journal.records,
        audit_rules.load(clinics_file),
        mails=mails_in(maildir) if maildir is not None else None,
        texts=texts_in(sms_log) if sms_log is not None else None,
        expected=expected,
        now=now,
        # Mail accepted since shortly before the topics were read may still lack its
        # NotificationSent there (published just after the hand-over).
        in_flight_after=journal.read_at - IN_FLIGHT_S if journal.read_at else None,
        sent_elsewhere=frozenset(journal.sent_elsewhere),
    )


def summary_of(findings: Findings) -> dict[str, int]:
    """The counts a DEMO, CHAOS or AUDIT line reports (no ids, no contact data)."""
    return findings.counts()


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
    """Overlapping appointments found in the scheduler's ledger: a second opinion only.

    The ledger's script refuses overlaps, so this can only disagree with itself;
    `audit_topics` counts overlaps from the events instead.
    """
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
