"""The console's Redis keys: staff accounts, their sessions and failed sign-ins.

Staff belong to the clinic group, not one clinic, so their keys share the slot
`{staff}`; a clinic's records stay the services' own, reached over their APIs.

    console:{staff}:member:<email digest>     a staff account (JSON, argon2id hash)
    console:{staff}:session:<id>              a signed-in session (TTL: its lifetime)
    console:{staff}:failures:<email digest>   failed sign-ins (TTL: the lock-out window)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from services.console.domain import StaffMember

SLOT = "staff"


def _digest(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    id: str
    email: str
    csrf: str
    clinic_id: str


class ConsoleStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    @staticmethod
    def member_key(email: str) -> str:
        return f"console:{{{SLOT}}}:member:{_digest(email)}"

    @staticmethod
    def session_key(session_id: str) -> str:
        return f"console:{{{SLOT}}}:session:{session_id}"

    @staticmethod
    def failures_key(email: str) -> str:
        return f"console:{{{SLOT}}}:failures:{_digest(email)}"

    async def member(self, email: str) -> StaffMember | None:
        raw = await self.redis.get(self.member_key(email))
        return StaffMember.model_validate_json(raw) if raw is not None else None

    async def failures(self, email: str) -> int:
        return int(await self.redis.get(self.failures_key(email)) or 0)

    async def session(self, session_id: str) -> Session | None:
        raw = await self.redis.get(self.session_key(session_id))
        if raw is None:
            return None
        data: dict[str, Any] = json.loads(raw)
        return Session(session_id, data["email"], data["csrf"], data["clinic_id"])

    # --- queued on a write step ---------------------------------------------------

    def save_member(self, p: Pipeline, member: StaffMember) -> None:
        p.set(self.member_key(member.email), member.model_dump_json())

    def failed(self, p: Pipeline, email: str, window_s: int) -> None:
        key = self.failures_key(email)
        p.incr(key)
        p.expire(key, window_s, nx=True)  # the window runs from the first failure

    def save_session(self, p: Pipeline, session: Session, ttl_s: int) -> None:
        data = {"email": session.email, "csrf": session.csrf, "clinic_id": session.clinic_id}
        p.set(self.session_key(session.id), json.dumps(data), ex=ttl_s)

    def signed_in(self, p: Pipeline, session: Session, ttl_s: int) -> None:
        p.delete(self.failures_key(session.email))
        self.save_session(p, session, ttl_s)

    def end_session(self, p: Pipeline, session_id: str) -> None:
        p.delete(self.session_key(session_id))
