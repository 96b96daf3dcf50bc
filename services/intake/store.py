"""Intake's Redis state: client records, their history, contact index, idempotency.

Every key of a clinic carries the `{clinic_id}` hash tag, so one clinic's keys
share a slot and the multi-key transaction in `commit` also runs on Redis Cluster.
Contact values are indexed by their SHA-256, so key names never hold PHI.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from redis.asyncio import Redis
from redis.exceptions import LockNotOwnedError

from services.intake.domain import ClientRecord

IDEMPOTENCY_TTL_S = 24 * 60 * 60
LOCK_TIMEOUT_S = 15.0
LOCK_WAIT_S = 5.0

log = logging.getLogger(__name__)


def _digest(value: str) -> str:
    return hashlib.sha256(value.strip().lower().encode()).hexdigest()


def _key(clinic_id: str, *parts: str) -> str:
    return ":".join(("intake", f"{{{clinic_id}}}", *parts))


@dataclass(frozen=True)
class StoredResponse:
    fingerprint: str
    status_code: int
    body: dict[str, Any]


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    step: str
    status: str

    def to_json(self) -> str:
        return json.dumps({"at": self.at.isoformat(), "step": self.step, "status": self.status})


class ClientBusy(Exception):
    """Another request is changing this client right now."""


class IntakeStore:
    def __init__(self, redis: Redis, lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
        # The lock must outlive the request's work under it (its publish deadline
        # included): a lock that expires mid-request lets a retry in beside it.
        self._redis = redis
        self._lock_timeout_s = lock_timeout_s

    async def load(self, clinic_id: str, client_id: UUID) -> ClientRecord | None:
        raw = await self._redis.get(_key(clinic_id, "client", str(client_id)))
        return ClientRecord.model_validate_json(raw) if raw else None

    async def history(self, clinic_id: str, client_id: UUID) -> list[dict[str, Any]]:
        raw = await self._redis.lrange(_key(clinic_id, "client", str(client_id), "history"), 0, -1)
        return [json.loads(entry) for entry in raw]

    async def find_by_contact(self, clinic_id: str, email: str, phone: str | None) -> UUID | None:
        keys = [_key(clinic_id, "contact", _digest(email))]
        if phone:
            keys.append(_key(clinic_id, "contact", _digest(phone)))
        for found in await self._redis.mget(keys):
            if found:
                return UUID(found if isinstance(found, str) else found.decode())
        return None

    async def replay(self, clinic_id: str, idempotency_key: str | None) -> StoredResponse | None:
        if not idempotency_key:
            return None
        raw = await self._redis.get(_key(clinic_id, "idempotency", _digest(idempotency_key)))
        if raw is None:
            return None
        data = json.loads(raw)
        return StoredResponse(data["fingerprint"], data["status_code"], data["body"])

    @asynccontextmanager
    async def locked(self, clinic_id: str, subject: str) -> AsyncIterator[None]:
        """Serialise changes to one client (or one contact) across replicas."""
        lock = self._redis.lock(
            _key(clinic_id, "lock", _digest(subject)),
            timeout=self._lock_timeout_s,
            blocking_timeout=LOCK_WAIT_S,
        )
        if not await lock.acquire():
            raise ClientBusy(subject)
        try:
            yield
        finally:
            try:
                await lock.release()
            except LockNotOwnedError:
                # The work under it is done (and its answer true); an expired lock
                # is a sign the timeouts need looking at, not a failed request.
                log.warning("intake lock expired before its request finished")

    async def commit(
        self,
        record: ClientRecord,
        entries: list[HistoryEntry],
        idempotency_key: str | None,
        response: StoredResponse,
    ) -> None:
        """Record the new state, its history and the response in one transaction."""
        clinic, client = record.clinic_id, str(record.client_id)
        async with self._redis.pipeline(transaction=True) as tx:
            tx.set(_key(clinic, "client", client), record.model_dump_json())
            if entries:
                tx.rpush(_key(clinic, "client", client, "history"), *[e.to_json() for e in entries])
            tx.set(_key(clinic, "contact", _digest(record.contact.email)), client)
            if record.contact.phone:
                tx.set(_key(clinic, "contact", _digest(record.contact.phone)), client)
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
            await tx.execute()
