"""Intake's Redis state: client records, their history, contact index, the clinic's
client directory (search by name or phone), idempotency, and which measures were
answered (a measure link's single use).

Every key of a clinic carries the `{clinic_id}` hash tag, so one clinic's keys
share a slot and the unit of work's transaction also runs on Redis Cluster.
Contact values are indexed by their SHA-256, so key names never hold PHI; the
directory's terms (services/intake/directory.py) are PHI, held in its members only.

Reads given a `Transaction` watch their keys first: the write that follows
fails (and its step reruns) should any of them change in between.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from chassis.unit_of_work import Transaction
from services.intake import directory
from services.intake.domain import ClientRecord

IDEMPOTENCY_TTL_S = 24 * 60 * 60
# Beyond the last follow-up measure (6 months after a course): a link of a measure
# answered stays used for as long as any link to it could be valid.
MEASURE_ANSWERED_TTL_S = 400 * 24 * 60 * 60
# The directory's members a search reads per prefix, at most. Matches sort by name
# among these: beyond them (a two-letter query in a large clinic) a longer query
# narrows the search.
SEARCH_READ = 1000


def _digest(value: str) -> str:
    return hashlib.sha256(value.strip().lower().encode()).hexdigest()


def _key(clinic_id: str, *parts: str) -> str:
    return ":".join(("intake", f"{{{clinic_id}}}", *parts))


def answered_key(clinic_id: str, client_id: UUID | str) -> str:
    """The client's used-up measure links: measure id -> "answered_at|source"."""
    return _key(clinic_id, "measures-answered", str(client_id))


def _client_key(clinic_id: str, client_id: UUID | str) -> str:
    return _key(clinic_id, "client", str(client_id))


def directory_key(clinic_id: str) -> str:
    """The clinic's client directory: a sorted set of search terms (directory.py)."""
    return _key(clinic_id, "directory")


@dataclass(frozen=True)
class StoredResponse:
    fingerprint: str
    status_code: int
    body: dict[str, Any]


@dataclass(frozen=True)
class MeasureMark:
    """A measure was answered: when, and from where (no answers)."""

    answered_at: datetime
    source: str


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    step: str
    status: str

    def to_json(self) -> str:
        return json.dumps({"at": self.at.isoformat(), "step": self.step, "status": self.status})


class IntakeStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def load(
        self, clinic_id: str, client_id: UUID, tx: Transaction | None = None
    ) -> ClientRecord | None:
        key = _client_key(clinic_id, client_id)
        if tx is not None:
            await tx.watch(key)
        raw = await self._redis.get(key)
        return ClientRecord.model_validate_json(raw) if raw else None

    async def history(self, clinic_id: str, client_id: UUID) -> list[dict[str, Any]]:
        raw = await self._redis.lrange(_key(clinic_id, "client", str(client_id), "history"), 0, -1)
        return [json.loads(entry) for entry in raw]

    async def search(
        self, clinic_id: str, wanted: directory.Query, limit: int
    ) -> list[ClientRecord]:
        """The clinic's clients matching `wanted`, by name (then id), each once, at most
        `limit`. A record whose present name and phone no longer match (changed after
        the directory was read) is left out."""
        key = directory_key(clinic_id)
        found: dict[str, str] = {}
        for prefix in wanted.prefixes:
            start = prefix.encode()
            members = await self._redis.zrangebylex(
                key, b"[" + start, b"(" + start + b"\xff", start=0, num=SEARCH_READ
            )
            for member in members:
                entry = directory.Entry.parse(member)
                found.setdefault(entry.client_id, entry.name)
        ranked = sorted(found, key=lambda client: (found[client], client))
        matches: list[ClientRecord] = []
        for at in range(0, len(ranked), limit):
            batch = ranked[at : at + limit]
            for raw in await self._redis.mget([_client_key(clinic_id, c) for c in batch]):
                if raw is None:
                    continue
                record = ClientRecord.model_validate_json(raw)
                if wanted.matches(record.contact):
                    matches.append(record)
            if len(matches) >= limit:
                break
        return matches[:limit]

    async def find_by_contact(
        self, clinic_id: str, email: str, phone: str | None, tx: Transaction | None = None
    ) -> UUID | None:
        keys = [_key(clinic_id, "contact", _digest(email))]
        if phone:
            keys.append(_key(clinic_id, "contact", _digest(phone)))
        if tx is not None:
            await tx.watch(*keys)
        for found in await self._redis.mget(keys):
            if found:
                return UUID(found if isinstance(found, str) else found.decode())
        return None

    async def replay(
        self, clinic_id: str, idempotency_key: str | None, tx: Transaction | None = None
    ) -> StoredResponse | None:
        if not idempotency_key:
            return None
        key = _key(clinic_id, "idempotency", _digest(idempotency_key))
        if tx is not None:
            await tx.watch(key)
        raw = await self._redis.get(key)
        if raw is None:
            return None
        data = json.loads(raw)
        return StoredResponse(data["fingerprint"], data["status_code"], data["body"])

    async def measure_answered(
        self, clinic_id: str, client_id: UUID, measure_id: UUID, tx: Transaction | None = None
    ) -> MeasureMark | None:
        # The client's own: staff naming another client's measure by mistake use up nothing.
        marks = answered_key(clinic_id, client_id)
        legacy = _key(clinic_id, "measure", str(client_id), str(measure_id), "answered")
        if tx is not None:
            await tx.watch(marks, legacy)
        raw = await self._redis.hget(marks, str(measure_id))
        if raw is not None:
            stored = raw if isinstance(raw, str) else bytes(raw).decode()
            answered_at, source = stored.split("|", 1)
            return MeasureMark(datetime.fromisoformat(answered_at), source)
        old = await self._redis.get(legacy)
        if old is None:
            return None
        data = json.loads(old)
        return MeasureMark(datetime.fromisoformat(data["answered_at"]), data["source"])

    @staticmethod
    def mark_measure_answered(
        tx: Pipeline, clinic_id: str, client_id: UUID, measure_id: UUID, mark: MeasureMark
    ) -> None:
        # One small hash per client ("when|source" per measure): a key per measure cost
        # 248 bytes, a field about 80 (issue 18). The TTL runs from the latest answer.
        marks = answered_key(clinic_id, client_id)
        tx.hset(marks, str(measure_id), f"{mark.answered_at.isoformat()}|{mark.source}")
        tx.expire(marks, MEASURE_ANSWERED_TTL_S)

    @staticmethod
    def write(
        tx: Pipeline,
        record: ClientRecord,
        entries: list[HistoryEntry],
        idempotency_key: str | None,
        response: StoredResponse,
        *,
        previous: ClientRecord | None,
    ) -> None:
        """Queue the new state, its history, contact index, directory entries and answer
        on `tx` (a MULTI). `previous` is the record as the step read it (watched), None
        for a new client: its directory entries the new record no longer has are taken.
        The new record's are added each time (the same members again: no change), so a
        record written before the directory existed joins it at its next write."""
        clinic, client = record.clinic_id, str(record.client_id)
        tx.set(_client_key(clinic, client), record.model_dump_json())
        if entries:
            tx.rpush(_key(clinic, "client", client, "history"), *[e.to_json() for e in entries])
        tx.set(_key(clinic, "contact", _digest(record.contact.email)), client)
        if record.contact.phone:
            tx.set(_key(clinic, "contact", _digest(record.contact.phone)), client)
        listed = directory.entries(record.contact, client)
        if previous is not None:
            gone = directory.entries(previous.contact, previous.client_id) - listed
            if gone:
                tx.zrem(directory_key(clinic), *sorted(gone))
        if listed:
            tx.zadd(directory_key(clinic), dict.fromkeys(sorted(listed), 0))
        if idempotency_key:
            stored = {
                "fingerprint": response.fingerprint,
                "status_code": response.status_code,
                "body": response.body,
            }
            tx.set(
                _key(clinic, "idempotency", _digest(idempotency_key)),
                json.dumps(stored),
                ex=IDEMPOTENCY_TTL_S,
            )
