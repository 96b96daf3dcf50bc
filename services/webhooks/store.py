"""The webhook service's Redis keys, and the reads and queued writes on them.

Partners are the deployment's, not a clinic's: they live in one slot of their own,

    webhooks:{partners}:partner:<id>    the partner (JSON; its secrets among it)
    webhooks:{partners}:ids             set of partner ids
    webhooks:{partners}:key:<sha256>    a partner API key's digest -> partner id

Deliveries are per clinic, in its slot (so one MULTI holds a step's writes):

    webhooks:{c}:client:<client>        hash: `released` (the last number released to
                                        the partners), `held:<n>` (an event read ahead
                                        of a lower number: its body), `gap_since` (ms)
    webhooks:{c}:queue:<p>:<client>     zset: an event's body -> its number; the head
                                        is the partner's next delivery for the client
    webhooks:{c}:attempts:<p>:<client>  hash: the head's failures and first failure
    webhooks:{c}:waiting:<p>            set: the partner's clients with a queue
    webhooks:{c}:log:<p>                hash: event id -> its delivery status (JSON)
    webhooks:{c}:log-order:<p>          zset: event id -> when its status last changed
    webhooks:{c}:dead:<p>               hash: event id -> the dead letter (JSON)
    webhooks:{c}:due|leased|tokens      the lease queue (chassis.leases) of members
                                        `send|<p>|<client>` and `gap|<client>`
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from chassis.leases import LeaseQueue
from services.webhooks.domain import Partner

PARTNERS_SLOT = "partners"
LEASES = "webhooks"
CLIENT_KEPT_S = 180 * 24 * 60 * 60  # a client's order cursor, from its last public event
LOG_KEPT_S = 30 * 24 * 60 * 60  # a partner's delivery log and dead letters, from the last write
LOG_ENTRIES = 10_000  # per partner and clinic, the newest kept


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


@dataclass(frozen=True)
class Head:
    """A partner's next delivery for one client: the event (its body) and its failures."""

    body: str
    sequence: float
    failures: int
    first_failed_ms: int | None

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


def send_member(partner_id: str, client: str) -> str:
    return f"send|{partner_id}|{client}"


def gap_member(client: str) -> str:
    return f"gap|{client}"


class WebhookStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.leases = LeaseQueue(redis, LEASES)

    # --- keys ------------------------------------------------------------------

    @staticmethod
    def partner_key(partner_id: str) -> str:
        return f"webhooks:{{{PARTNERS_SLOT}}}:partner:{partner_id}"

    @staticmethod
    def partner_ids_key() -> str:
        return f"webhooks:{{{PARTNERS_SLOT}}}:ids"

    @staticmethod
    def api_key_key(digest: str) -> str:
        return f"webhooks:{{{PARTNERS_SLOT}}}:key:{digest}"

    @staticmethod
    def client_key(clinic_id: str, client: str) -> str:
        return f"webhooks:{{{clinic_id}}}:client:{client}"

    @staticmethod
    def queue_key(clinic_id: str, partner_id: str, client: str) -> str:
        return f"webhooks:{{{clinic_id}}}:queue:{partner_id}:{client}"

    @staticmethod
    def attempts_key(clinic_id: str, partner_id: str, client: str) -> str:
        return f"webhooks:{{{clinic_id}}}:attempts:{partner_id}:{client}"

    @staticmethod
    def waiting_key(clinic_id: str, partner_id: str) -> str:
        return f"webhooks:{{{clinic_id}}}:waiting:{partner_id}"

    @staticmethod
    def log_key(clinic_id: str, partner_id: str) -> str:
        return f"webhooks:{{{clinic_id}}}:log:{partner_id}"

    @staticmethod
    def log_order_key(clinic_id: str, partner_id: str) -> str:
        return f"webhooks:{{{clinic_id}}}:log-order:{partner_id}"

    @staticmethod
    def dead_key(clinic_id: str, partner_id: str) -> str:
        return f"webhooks:{{{clinic_id}}}:dead:{partner_id}"

    # --- partners --------------------------------------------------------------------

    async def partners(self) -> list[Partner]:
        ids = sorted(_text(i) for i in await self.redis.smembers(self.partner_ids_key()))
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as reads:
            for partner_id in ids:
                reads.get(self.partner_key(partner_id))
            found = await reads.execute()
        return [Partner.model_validate_json(raw) for raw in found if raw is not None]

    async def partner(self, partner_id: str) -> Partner | None:
        raw = await self.redis.get(self.partner_key(partner_id))
        return Partner.model_validate_json(raw) if raw is not None else None

    async def partner_by_key(self, digest: str) -> Partner | None:
        partner_id = await self.redis.get(self.api_key_key(digest))
        return await self.partner(_text(partner_id)) if partner_id is not None else None

    def save_partner(self, p: Pipeline, partner: Partner, *, new: bool = False) -> None:
        p.set(self.partner_key(partner.id), partner.model_dump_json())
        if new:
            p.sadd(self.partner_ids_key(), partner.id)
            p.set(self.api_key_key(partner.api_key_sha256), partner.id)

    def delete_partner(self, p: Pipeline, partner: Partner) -> None:
        p.delete(self.partner_key(partner.id), self.api_key_key(partner.api_key_sha256))
        p.srem(self.partner_ids_key(), partner.id)

    # --- a client's order ----------------------------------------------------------------

    async def client_order(
        self, clinic_id: str, client: str
    ) -> tuple[int, dict[int, str], int | None]:
        """The last number released, the held events by number, and since when (ms) a
        gap has held them."""
        raw = await self.redis.hgetall(self.client_key(clinic_id, client))
        fields = {_text(k): _text(v) for k, v in raw.items()}
        held = {int(k[5:]): v for k, v in fields.items() if k.startswith("held:")}
        gap = fields.get("gap_since")
        return int(fields.get("released", 0)), held, int(gap) if gap else None

    # --- a partner's queue for one client --------------------------------------------------

    async def head(self, clinic_id: str, partner_id: str, client: str) -> Head | None:
        async with self.redis.pipeline(transaction=False) as reads:
            reads.zrange(self.queue_key(clinic_id, partner_id, client), 0, 0, withscores=True)
            reads.hgetall(self.attempts_key(clinic_id, partner_id, client))
            first, attempts = await reads.execute()
        if not first:
            return None
        body, sequence = first[0]
        tried = {_text(k): _text(v) for k, v in attempts.items()}
        same = tried.get("event") == json.loads(body)["id"]
        return Head(
            body=_text(body),
            sequence=float(sequence),
            failures=int(tried.get("failures", 0)) if same else 0,
            first_failed_ms=int(tried["first_failed_ms"])
            if same and "first_failed_ms" in tried
            else None,
        )

    def enqueue(
        self,
        p: Pipeline,
        clinic_id: str,
        partner_id: str,
        client: str,
        body: str,
        sequence: float,
        now: datetime,
    ) -> None:
        """Queue an event for a partner's client; its sender due now, unless due already
        (a backoff under way is kept)."""
        p.zadd(self.queue_key(clinic_id, partner_id, client), {body: sequence})
        p.sadd(self.waiting_key(clinic_id, partner_id), client)
        p.zadd(
            self.leases.due_key(clinic_id),
            {send_member(partner_id, client): now.timestamp()},
            nx=True,
        )

    def delivered(
        self, p: Pipeline, clinic_id: str, partner_id: str, client: str, head: Head
    ) -> None:
        p.zrem(self.queue_key(clinic_id, partner_id, client), head.body)
        p.delete(self.attempts_key(clinic_id, partner_id, client))

    def failed(
        self,
        p: Pipeline,
        clinic_id: str,
        partner_id: str,
        client: str,
        head: Head,
        first_failed_ms: int,
    ) -> None:
        p.hset(
            self.attempts_key(clinic_id, partner_id, client),
            mapping={
                "event": head.event["id"],
                "failures": head.failures + 1,
                "first_failed_ms": first_failed_ms,
            },
        )

    def dead_lettered(
        self,
        p: Pipeline,
        clinic_id: str,
        partner_id: str,
        client: str,
        head: Head,
        reason: str,
        at: datetime,
    ) -> None:
        self.delivered(p, clinic_id, partner_id, client, head)
        letter = {
            "event": head.event,
            "reason": reason,
            "failures": head.failures + 1,
            "at": at.isoformat(),
        }
        key = self.dead_key(clinic_id, partner_id)
        p.hset(key, head.event["id"], json.dumps(letter))
        p.expire(key, LOG_KEPT_S)

    def emptied(self, p: Pipeline, clinic_id: str, partner_id: str, client: str) -> None:
        """The partner's queue for the client is done with: empty, or its partner deleted."""
        p.srem(self.waiting_key(clinic_id, partner_id), client)
        p.delete(
            self.queue_key(clinic_id, partner_id, client),
            self.attempts_key(clinic_id, partner_id, client),
        )

    # --- the delivery log --------------------------------------------------------------

    def log(
        self,
        p: Pipeline,
        clinic_id: str,
        partner_id: str,
        event: dict[str, Any],
        status: str,
        at: datetime,
        **detail: Any,
    ) -> None:
        entry = {
            "event_id": event["id"],
            "type": event["type"],
            "clinic_id": clinic_id,
            "client_id": event["subject"],
            "sequence": event.get("clientsequence"),
            "status": status,
            "at": at.isoformat(),
            **detail,
        }
        log, order = self.log_key(clinic_id, partner_id), self.log_order_key(clinic_id, partner_id)
        p.hset(log, event["id"], json.dumps(entry))
        p.zadd(order, {event["id"]: at.timestamp()})
        p.expire(log, LOG_KEPT_S)
        p.expire(order, LOG_KEPT_S)

    async def beyond_log(self, clinic_id: str, partner_id: str) -> list[str]:
        """The event ids of the partner's log past its newest LOG_ENTRIES."""
        old = await self.redis.zrange(
            self.log_order_key(clinic_id, partner_id), 0, -LOG_ENTRIES - 1
        )
        return [_text(i) for i in old]

    def trim_log(self, p: Pipeline, clinic_id: str, partner_id: str, ids: Sequence[str]) -> None:
        if ids:
            p.hdel(self.log_key(clinic_id, partner_id), *ids)
            p.zrem(self.log_order_key(clinic_id, partner_id), *ids)

    async def deliveries(
        self, partner: Partner, since: datetime | None, limit: int
    ) -> list[dict[str, Any]]:
        """The partner's delivery statuses, newest first, over its clinics."""
        entries: list[dict[str, Any]] = []
        low = since.timestamp() if since else "-inf"
        for clinic_id in partner.clinics:
            order = self.log_order_key(clinic_id, partner.id)
            ids = await self.redis.zrevrangebyscore(order, "+inf", low, start=0, num=limit)
            if not ids:
                continue
            found = await self.redis.hmget(
                self.log_key(clinic_id, partner.id), [_text(i) for i in ids]
            )
            entries += [json.loads(raw) for raw in found if raw is not None]
        entries.sort(key=lambda e: e["at"], reverse=True)
        return entries[:limit]

    async def dead_letters(self, partner: Partner) -> list[dict[str, Any]]:
        letters: list[dict[str, Any]] = []
        for clinic_id in partner.clinics:
            raw = await self.redis.hgetall(self.dead_key(clinic_id, partner.id))
            letters += [json.loads(v) for v in raw.values()]
        return sorted(letters, key=lambda d: d["at"])

    async def waiting(self, clinic_id: str, partner_id: str) -> list[str]:
        return sorted(
            _text(c) for c in await self.redis.smembers(self.waiting_key(clinic_id, partner_id))
        )


def sequence_of(event: dict[str, Any]) -> float:
    """An event's place in its client's queue: its number; one from before the numbering
    (a replay of an old window) by its time, in ms (after the numbered ones: in their
    own time order, not by their bodies' text, as equal scores would be)."""
    number = event.get("clientsequence")
    if isinstance(number, int):
        return float(number)
    return datetime.fromisoformat(str(event["time"])).timestamp() * 1000
