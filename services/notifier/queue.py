"""The delivery queue: planned messages due, leased to one replica, held, and finished.

A message goes planned -> sending (leased) -> sent | failed | skipped, or
planned -> cancelled; a transient failure puts it back to planned at a later
time, and a time-bound message held back while the notifier's view of the
schedule lags stays planned, in the held set instead of the due set (so it
does not stand in front of other due messages, such as a clinical alert), the
attempt not counted, until the view catches up (release_held).
"skipped" is a time-bound message no longer true when it fell due.
Leases run on Redis's clock, not the service clock: the demo's clock runs
thousands of times faster than real time, and a lease guards a real send.
A finished message's outcome event waits in the outbox until it is published.
Keys: see services.notifier.keys; messages enter the due set with their plan
(plans.PlanStore.record).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from uuid import UUID

from redis.asyncio import Redis

from services.notifier.keys import RETAIN_S, key, text
from services.notifier.model import PlannedMessage
from shared.envelope import Envelope
from shared.events import Event
from shared.topics import BY_NAME, topic_for

State = Literal["planned", "sending", "sent", "failed", "skipped", "cancelled"]

_CLAIM = """
-- KEYS: due, sending. ARGV: now (service clock, epoch s), lease ms, how many, lease token,
-- message key prefix. Expired leases (a replica died mid-send) are taken over first.
local t = redis.call("TIME")
local server_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[3])
local ids = redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", server_ms, "LIMIT", 0, limit)
if #ids < limit then
  local due = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, limit - #ids)
  for _, id in ipairs(due) do table.insert(ids, id) end
end
local claimed = {}
for _, id in ipairs(ids) do
  local key = ARGV[5] .. id
  local state = redis.call("HGET", key, "state")
  redis.call("ZREM", KEYS[1], id)
  if state == "planned" or state == "sending" then
    redis.call("ZADD", KEYS[2], server_ms + tonumber(ARGV[2]), id)
    redis.call("HSET", key, "state", "sending", "lease", ARGV[4])
    local attempts = redis.call("HINCRBY", key, "attempts", 1)
    local fields = redis.call("HMGET", key, "plan", "correlation_id")
    table.insert(claimed, {id, attempts, fields[1], fields[2]})
  else
    redis.call("ZREM", KEYS[2], id)
  end
end
return claimed
"""

_FINISH = """
-- KEYS: message, sending, due (or held), outbox. ARGV: id, lease token, next state,
-- due score (when planned again), retention s, then field/value pairs to record.
if redis.call("HGET", KEYS[1], "state") ~= "sending"
    or redis.call("HGET", KEYS[1], "lease") ~= ARGV[2] then
  return 0
end
redis.call("ZREM", KEYS[2], ARGV[1])
local fields = {"state", ARGV[3]}
for i = 6, #ARGV do table.insert(fields, ARGV[i]) end
redis.call("HSET", KEYS[1], unpack(fields))
redis.call("HDEL", KEYS[1], "lease")
if ARGV[3] == "planned" then
  redis.call("ZADD", KEYS[3], ARGV[4], ARGV[1])
else
  local t = redis.call("TIME")
  redis.call("ZADD", KEYS[4], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
  redis.call("EXPIRE", KEYS[1], ARGV[5])
end
return 1
"""


_RELEASE = """
-- KEYS: held, due. ARGV: ids. Those still held back to the due set at their own time.
local released = 0
for _, id in ipairs(ARGV) do
  local score = redis.call("ZSCORE", KEYS[1], id)
  if score then
    redis.call("ZADD", KEYS[2], score, id)
    redis.call("ZREM", KEYS[1], id)
    released = released + 1
  end
end
return released
"""

_RENEW = """
-- KEYS: message, sending. ARGV: id, lease token, lease ms.
-- The fence before a send: only the replica whose token the message still
-- carries gets a fresh lease; one whose lease ran out and was re-claimed gets 0.
if redis.call("HGET", KEYS[1], "state") ~= "sending"
    or redis.call("HGET", KEYS[1], "lease") ~= ARGV[2] then
  return 0
end
local t = redis.call("TIME")
local server_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call("ZADD", KEYS[2], server_ms + tonumber(ARGV[3]), ARGV[1])
return 1
"""


@dataclass(frozen=True)
class Claim:
    message: PlannedMessage
    correlation_id: str
    attempts: int
    lease: str


@dataclass(frozen=True)
class Outcome:
    """How a claimed message ended, and the event that says so."""

    state: Literal["sent", "failed", "skipped"]
    event: Event
    envelope: Envelope
    details: dict[str, str] = field(default_factory=dict)


class DeliveryQueue:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._claim = redis.register_script(_CLAIM)
        self._finish = redis.register_script(_FINISH)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def claim_due(
        self, clinic_id: str, now: datetime, *, limit: int, lease_ms: int
    ) -> list[Claim]:
        """Lease up to `limit` due messages to this replica; no other replica gets them."""
        lease = uuid.uuid4().hex
        rows = await self._claim(
            keys=[key(clinic_id, "due"), key(clinic_id, "sending")],
            args=[f"{now.timestamp():.6f}", lease_ms, limit, lease, key(clinic_id, "msg", "")],
        )
        return [
            Claim(
                message=PlannedMessage.model_validate_json(plan),
                correlation_id=text(correlation),
                attempts=int(attempts),
                lease=lease,
            )
            for _, attempts, plan, correlation in rows
        ]

    async def renew(self, claim: Claim, lease_ms: int) -> bool:
        """A full lease from now if `claim` still holds the message; False if it was lost.

        Called just before each send: a message that waited in a batch behind
        slow sends may have outlived its lease and been claimed by another
        replica, which then sends it; this one must not.
        """
        clinic, notification_id = claim.message.clinic_id, str(claim.message.notification_id)
        renewed = await self._renew(
            keys=[key(clinic, "msg", notification_id), key(clinic, "sending")],
            args=[notification_id, claim.lease, lease_ms],
        )
        return bool(renewed)

    async def hold(self, claim: Claim) -> bool:
        """Planned again, in the held set at its own time, the attempt not counted.

        For a time-bound message while the notifier's view of the schedule lags:
        out of the due set, so the next claims reach what is due behind it.
        """
        return await self._transition(
            claim,
            "planned",
            f"{claim.message.send_at.timestamp():.6f}",
            {"attempts": str(claim.attempts - 1)},
            planned_into="held",
        )

    async def held(self, clinic_id: str, limit: int) -> list[tuple[str, tuple[UUID, UUID | None]]]:
        """The clinic's first `limit` held messages (by send_at), each with the client and
        the appointment it is about."""
        ids = [text(i) for i in await self._redis.zrange(key(clinic_id, "held"), 0, limit - 1)]
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as reads:
            for notification_id in ids:
                reads.hget(key(clinic_id, "msg", notification_id), "plan")
            plans = await reads.execute()
        found = []
        for notification_id, plan in zip(ids, plans, strict=True):
            if plan is None:  # expired meanwhile: nothing to send, nothing to keep
                await self._redis.zrem(key(clinic_id, "held"), notification_id)
                continue
            message = PlannedMessage.model_validate_json(plan)
            found.append((notification_id, (message.client_id, message.appointment_id)))
        return found

    async def release_held(self, clinic_id: str, ids: Sequence[str]) -> int:
        """These held messages due again at their own time (their schedule view caught up)."""
        if not ids:
            return 0
        released = await self._release(
            keys=[key(clinic_id, "held"), key(clinic_id, "due")], args=list(ids)
        )
        return int(released)

    async def due_summary(self, clinic_id: str) -> tuple[datetime | None, int]:
        """When the clinic's next planned message falls due (service clock), and how many wait
        held for the schedule view to catch up."""
        async with self._redis.pipeline(transaction=False) as reads:
            reads.zrange(key(clinic_id, "due"), 0, 0, withscores=True)
            reads.zcard(key(clinic_id, "held"))
            first, held = await reads.execute()
        earliest = datetime.fromtimestamp(float(first[0][1]), UTC) if first else None
        return earliest, int(held)

    async def retry_at(self, claim: Claim, at: datetime, reason: str) -> bool:
        return await self._transition(
            claim, "planned", f"{at.timestamp():.6f}", {"last_error": reason}
        )

    async def finish(self, claim: Claim, outcome: Outcome) -> bool:
        """Record how the message ended and queue its event; False if the lease was lost."""
        record = {
            "topic": topic_for(outcome.event).name,
            "event": outcome.event.model_dump(mode="json"),
            "envelope": outcome.envelope.model_dump(mode="json"),
        }
        return await self._transition(
            claim, outcome.state, "", {**outcome.details, "outcome": json.dumps(record)}
        )

    async def _transition(
        self,
        claim: Claim,
        state: State,
        due_score: str,
        fields: dict[str, str],
        planned_into: Literal["due", "held"] = "due",
    ) -> bool:
        clinic, notification_id = claim.message.clinic_id, str(claim.message.notification_id)
        pairs = [item for pair in fields.items() for item in pair]
        done = await self._finish(
            keys=[
                key(clinic, "msg", notification_id),
                key(clinic, "sending"),
                key(clinic, planned_into),
                key(clinic, "outbox"),
            ],
            args=[notification_id, claim.lease, state, due_score, RETAIN_S, *pairs],
        )
        return bool(done)

    async def waiting(self, clinic_id: str) -> int:
        """How many messages are planned and not yet sent (due, later, or held)."""
        async with self._redis.pipeline(transaction=False) as reads:
            reads.zcard(key(clinic_id, "due"))
            reads.zcard(key(clinic_id, "held"))
            due, held = await reads.execute()
        return int(due) + int(held)

    async def unpublished(
        self, clinic_id: str, *, older_than_ms: int, limit: int
    ) -> list[tuple[str, Event, Envelope]]:
        """Outcome events recorded but not published (the publisher died in between)."""
        seconds, micros = await self._redis.time()
        cutoff = seconds * 1000 + micros // 1000 - older_than_ms
        ids = await self._redis.zrangebyscore(
            key(clinic_id, "outbox"), "-inf", cutoff, start=0, num=limit
        )
        found = []
        for raw_id in ids:
            notification_id = text(raw_id)
            raw = await self._redis.hget(key(clinic_id, "msg", notification_id), "outcome")
            if raw is None:
                await self.published(clinic_id, notification_id)
                continue
            record = json.loads(raw)
            event = BY_NAME[record["topic"]].event.model_validate(record["event"])
            found.append((notification_id, event, Envelope.model_validate(record["envelope"])))
        return found

    async def published(self, clinic_id: str, notification_id: str) -> None:
        await self._redis.zrem(key(clinic_id, "outbox"), notification_id)
