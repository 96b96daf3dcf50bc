"""The delivery queue: planned messages due, leased to one replica, held, and finished.

A message goes planned -> sending (leased) -> sent | failed | skipped, or
planned -> cancelled; a transient failure puts it back to planned at a later
time, and a time-bound message held back while the notifier's view of the
schedule lags stays planned, in the held set instead of the due set (so it
does not stand in front of other due messages, such as a clinical alert), the
attempt not counted, until the view catches up (release_held).
"skipped" is a time-bound message no longer true when it fell due.

Leasing is chassis.leases.LeaseQueue's ("notifier": the due set planning writes
into, plans.PlanStore, the leased set, the fencing tokens): a claimed message is
marked sending and its attempt counted (`_START`, every message key declared);
one cancelled or gone meanwhile is let go. How a delivery ended is written by a
unit-of-work step (finishes.Finishes) with this queue's `states` and `write`.
Keys: see services.notifier.keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from uuid import UUID

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from chassis.due_index import DueIndex
from chassis.leases import Lease, LeaseQueue
from chassis.outbox import Output
from chassis.unit_of_work import Transaction
from services.notifier.keys import FINISHED_KEPT_S, LEASES, key, text
from services.notifier.model import PlannedMessage

_START = """
-- KEYS: the claimed messages. Each still planned (or sending: its holder died) is
-- marked sending, its attempt counted; any other (cancelled, gone) is left alone.
local started = {}
for i, message in ipairs(KEYS) do
  local state = redis.call("HGET", message, "state")
  if state == "planned" or state == "sending" then
    redis.call("HSET", message, "state", "sending")
    local attempts = redis.call("HINCRBY", message, "attempts", 1)
    local fields = redis.call("HMGET", message, "plan", "correlation_id")
    started[i] = {attempts, fields[1], fields[2]}
  else
    started[i] = 0
  end
end
return started
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


@dataclass(frozen=True)
class Claim:
    message: PlannedMessage
    correlation_id: str
    attempts: int
    lease: Lease


@dataclass(frozen=True)
class Finish:
    """How a claimed message's delivery ended, and what says so.

    sent, failed, skipped: for good (its events in `outputs`); planned: due again at
    `at`; held: planned again in the held set at `at`; gone: nothing to record, the
    lease let go."""

    lease: Lease
    state: Literal["sent", "failed", "skipped", "planned", "held", "gone"]
    fields: dict[str, str] = field(default_factory=dict)
    outputs: tuple[Output, ...] = ()
    at: datetime | None = None
    # Of a delivery that ended for good: whose message, and when (a tidied client's
    # records are tidied again after it: tidy.after_finish).
    client_id: UUID | None = None
    ended_at: datetime | None = None
    # Of a retry for want of the client's contact (whose client, and now): due at once if
    # the contact arrived by the write, else listed to be made due when it does.
    awaits_contact: tuple[UUID, datetime] | None = None


class DeliveryQueue:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.leases = LeaseQueue(redis, LEASES)
        self.index: DueIndex | None = None  # hinted when held messages are due again
        self._start = redis.register_script(_START)
        self._release = redis.register_script(_RELEASE)

    async def claim_due(
        self, clinic_id: str, now: datetime, *, limit: int, lease_ms: int
    ) -> list[Claim]:
        """Lease up to `limit` due messages to this replica; no other replica gets them."""
        leases = await self.leases.claim(clinic_id, now, lease_ms, limit)
        if not leases:
            return []
        rows = await self._start(keys=[key(clinic_id, "msg", lease.member) for lease in leases])
        claims = []
        for lease, row in zip(leases, rows, strict=True):
            if not row or row[1] is None:
                await self.leases.let_go(lease)  # cancelled or expired meanwhile
                continue
            attempts, plan, correlation = row
            claims.append(
                Claim(
                    message=PlannedMessage.model_validate_json(plan),
                    correlation_id=text(correlation),
                    attempts=int(attempts),
                    lease=lease,
                )
            )
        return claims

    async def renew(self, claim: Claim, lease_ms: int) -> bool:
        """A full lease from now if `claim` still holds the message; False if it was lost.

        Called just ahead of each send: a message that waited in a batch behind
        slow sends may have outlived its lease and been claimed by another
        replica, which then sends it; this one must not.
        """
        return await self.leases.renew(claim.lease, lease_ms)

    async def still_held(self, claim: Claim) -> bool:
        """Right before the hand-over: the lease is this replica's, and has not run out."""
        return await self.leases.still_held(claim.lease)

    # --- the finishing step (inside a unit of work's transaction) ----------------

    async def states(self, tx: Transaction, leases: Sequence[Lease]) -> list[str | None]:
        """The messages' states, watched: planning may have cancelled one meanwhile."""
        messages = [key(lease.clinic_id, "msg", lease.member) for lease in leases]
        async with await tx.watched_reads(*messages) as reads:
            for message in messages:
                reads.hget(message, "state")
            found = await reads.execute()
        return [None if state is None else text(state) for state in found]

    def write_all(self, p: Pipeline, finishes: Sequence[Finish]) -> None:
        """Queue each finish's writes: the message's state and fields, and its lease done
        (or due again, for a retry); the leases done in one command per key."""
        done: list[Lease] = []
        for finish in finishes:
            lease = finish.lease
            clinic, notification_id = lease.clinic_id, lease.member
            message = key(clinic, "msg", notification_id)
            if finish.state == "gone":
                done.append(lease)
                continue
            stored = "planned" if finish.state == "held" else finish.state
            if finish.state in ("sent", "failed", "skipped"):
                # Written anew, short (keys.finished_fields): its plan and correlation go.
                p.delete(message)
            p.hset(message, mapping={"state": stored, **finish.fields})  # type: ignore[dict-item]
            if finish.state == "planned":
                assert finish.at is not None
                self.leases.retry_at(p, lease, finish.at)
                continue
            done.append(lease)
            if finish.state == "held":
                assert finish.at is not None
                p.zadd(key(clinic, "held"), {notification_id: finish.at.timestamp()})
            else:
                p.expire(message, FINISHED_KEPT_S)
        self.leases.done_all(p, done)

    # --- held for the schedule lag ---------------------------------------------------

    async def held(self, clinic_id: str, limit: int) -> list[tuple[str, tuple[UUID, UUID | None]]]:
        """The clinic's first `limit` held messages (by send_at), each with the client and
        the appointment it is about."""
        ids = [text(i) for i in await self.redis.zrange(key(clinic_id, "held"), 0, limit - 1)]
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as reads:
            for notification_id in ids:
                reads.hget(key(clinic_id, "msg", notification_id), "plan")
            plans = await reads.execute()
        found = []
        for notification_id, plan in zip(ids, plans, strict=True):
            if plan is None:  # expired meanwhile: nothing to send, nothing to keep
                await self.redis.zrem(key(clinic_id, "held"), notification_id)
                continue
            message = PlannedMessage.model_validate_json(plan)
            found.append((notification_id, (message.client_id, message.appointment_id)))
        return found

    async def release_held(self, clinic_id: str, ids: Sequence[str]) -> int:
        """These held messages due again at their own time (their schedule view caught up)."""
        if not ids:
            return 0
        released = await self._release(
            keys=[key(clinic_id, "held"), self.leases.due_key(clinic_id)], args=list(ids)
        )
        if released and self.index is not None:
            await self.index.hint(clinic_id, 0.0)  # at once: the round settles it after
        return int(released)

    def held_key(self, clinic_id: str) -> str:
        return key(clinic_id, "held")

    # --- what waits ------------------------------------------------------------------

    def counted(self, clinic_id: str) -> tuple[str, str]:
        """The sets a gauge of what waits counts: the planned messages, and those held."""
        return self.leases.due_key(clinic_id), key(clinic_id, "held")

    async def waiting(self, clinic_id: str) -> int:
        """How many messages are planned and not yet sent (due, later, or held)."""
        async with self.redis.pipeline(transaction=False) as reads:
            for name in self.counted(clinic_id):
                reads.zcard(name)
            due, held = await reads.execute()
        return int(due) + int(held)
