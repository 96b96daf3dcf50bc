"""One lease queue for every "do this at time T, once" (booster timers, message delivery).

Per clinic, three keys, all in its slot and all declared to every script (Redis Cluster):

    {name}:{clinic}:due      zset: member -> when it falls due (service clock, epoch s)
    {name}:{clinic}:leased   zset: member -> lease deadline (Redis's clock, ms)
    {name}:{clinic}:tokens   hash: member -> fencing token of its latest claim

What it guarantees:
- one holder at a time: `claim` (one script) moves a due member into `leased` and
  gives it a fencing token no claim had before; a member under a live lease is not
  claimed again, even when scheduled again meanwhile (it stays due for after);
- the token is checked before the effect and in the write: `still_held` right
  before an external effect (a send), and `fence` inside the unit of work's step,
  whose WATCH on the tokens makes the write fail should anyone claim the member
  between the check and EXEC; a holder that lost its lease writes nothing;
- a holder that died is taken over when its lease ends: leases run on Redis's own
  clock (TIME), not the service clock (the demo's runs far faster than real time,
  and a lease guards a real effect); an expired lease is claimed before what is
  due, with a higher token. Until someone claims it, its holder may still finish.

Tokens come from one counter per clinic (a field of the tokens hash no member may
take), not one per member: a member done and scheduled again never gets a token an
earlier holder still carries.

Crash points, and what follows each:
1. before the claim: nothing changed; the member stays due;
2. after the claim, before the effect: the lease ends, another replica (or this one
   restarted) claims the member with a higher token and does it;
3. after the effect, before the write (done or retry_at with the holder's state): the
   same, and the effect happens again: an effect outside Redis (a mail) must carry
   an id of its own so the repeat is recognisable (a Message-ID); one inside Redis
   is written with the fence, so it is never applied twice;
4. after the write: nothing left to do; the member is done or due again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from chassis.clinics import ConfigurationError
from chassis.clock import Clock
from chassis.dead_letters import INFRASTRUCTURE_ERRORS
from chassis.unit_of_work import Transaction

log = logging.getLogger(__name__)

SEQUENCE = "#sequence"  # the tokens hash's counter: no member may be called this
# A failed step's leases are handed back this many times, this far apart (real seconds).
HAND_BACK_TRIES = 4
HAND_BACK_PAUSE_S = 0.5

_CLAIM = """
-- KEYS: due, leased, tokens. ARGV: now (service clock, epoch s), lease ms, limit,
-- the sequence field. Expired leases first, then due members under no live lease.
local t = redis.call("TIME")
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = now_ms + tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local claimed = {}
local function take(member)
  redis.call("ZREM", KEYS[1], member)
  redis.call("ZADD", KEYS[2], deadline, member)
  local token = redis.call("HINCRBY", KEYS[3], ARGV[4], 1)
  redis.call("HSET", KEYS[3], member, token)
  table.insert(claimed, {member, token})
end
for _, member in ipairs(redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", "(" .. now_ms,
    "LIMIT", 0, limit)) do
  take(member)
end
local skipped = 0
while #claimed < limit do
  local due = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1],
    "LIMIT", skipped, limit - #claimed)
  if #due == 0 then break end
  for _, member in ipairs(due) do
    if redis.call("ZSCORE", KEYS[2], member) then
      skipped = skipped + 1  -- under a live lease (expired ones were taken above)
    else
      take(member)
    end
  end
end
return claimed
"""

_RENEW = """
-- KEYS: leased, tokens. ARGV: member, token, lease ms.
if redis.call("HGET", KEYS[2], ARGV[1]) ~= ARGV[2]
    or not redis.call("ZSCORE", KEYS[1], ARGV[1]) then
  return 0
end
local t = redis.call("TIME")
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call("ZADD", KEYS[1], now_ms + tonumber(ARGV[3]), ARGV[1])
return 1
"""


_END_NOW = """
-- KEYS: leased, tokens. ARGV: member, token, member, token... Each lease ended (its
-- deadline long past: the next claim takes the member first, with a higher token), if
-- its token still holds its member.
local ended = 0
for i = 1, #ARGV, 2 do
  if redis.call("HGET", KEYS[2], ARGV[i]) == ARGV[i + 1]
      and redis.call("ZSCORE", KEYS[1], ARGV[i]) then
    redis.call("ZADD", KEYS[1], 0, ARGV[i])
    ended = ended + 1
  end
end
return ended
"""

_LET_GO = """
-- KEYS: leased, tokens. ARGV: member, token.
if redis.call("HGET", KEYS[2], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call("ZREM", KEYS[1], ARGV[1])
redis.call("HDEL", KEYS[2], ARGV[1])
return 1
"""

# Reads that compare with Redis's clock run as scripts: a Redis Cluster pipeline refuses
# TIME (it has no key to route by), and in a script TIME is the clock of the node that
# holds the lease, the clock the deadlines were set on.
_STILL_HELD = """
-- KEYS: tokens, leased. ARGV: member, token. 1 while the token is the lease's and its
-- deadline (ms, Redis's clock) has not passed.
if redis.call("HGET", KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
local deadline = redis.call("ZSCORE", KEYS[2], ARGV[1])
if not deadline then
  return 0
end
local now = redis.call("TIME")
return tonumber(deadline) >= now[1] * 1000 + math.floor(now[2] / 1000) and 1 or 0
"""

_EARLIEST = """
-- KEYS: due, leased. The earliest due score (as a string, or false), and the ms left on
-- the earliest lease by Redis's clock (or false).
local due = redis.call("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")
local leased = redis.call("ZRANGE", KEYS[2], 0, 0, "WITHSCORES")
local left = false
if leased[2] then
  local now = redis.call("TIME")
  left = math.max(0, tonumber(leased[2]) - (now[1] * 1000 + math.floor(now[2] / 1000)))
end
return {due[2] or false, left}
"""


@dataclass(frozen=True)
class Lease:
    clinic_id: str
    member: str
    token: int


class LeaseQueue:
    def __init__(self, redis: Redis, name: str) -> None:
        self._redis = redis
        self.name = name
        self._claim = redis.register_script(_CLAIM)
        self._renew = redis.register_script(_RENEW)
        self._let_go = redis.register_script(_LET_GO)
        self._end_now = redis.register_script(_END_NOW)
        self._still_held = redis.register_script(_STILL_HELD)

    # --- keys ------------------------------------------------------------------

    def due_key(self, clinic_id: str) -> str:
        return f"{self.name}:{{{clinic_id}}}:due"

    def leased_key(self, clinic_id: str) -> str:
        return f"{self.name}:{{{clinic_id}}}:leased"

    def tokens_key(self, clinic_id: str) -> str:
        return f"{self.name}:{{{clinic_id}}}:tokens"

    # --- queued onto a caller's MULTI --------------------------------------------

    # Each queues one command per key however many members it is given: a batch's reply
    # parsing is per command in redis-py (an asyncio timeout each), and a 200-booster
    # write step spent a tenth of its time reading 1,400 replies (issue 19).

    def schedule(self, p: Pipeline, clinic_id: str, member: str, at: datetime) -> None:
        """`member` due at `at` (its time replaced if it was due already)."""
        self.schedule_all(p, clinic_id, {member: at})

    def schedule_all(self, p: Pipeline, clinic_id: str, due: Mapping[str, datetime]) -> None:
        """`schedule` for every member of `due`, at its time."""
        if not due:
            return
        if any(member == SEQUENCE or not member for member in due):
            raise ValueError(f"{list(due)!r}: {SEQUENCE!r} or '' cannot be a lease queue's member")
        p.zadd(self.due_key(clinic_id), {member: at.timestamp() for member, at in due.items()})

    def cancel(self, p: Pipeline, clinic_id: str, member: str) -> None:
        """Not due any more, and whoever holds it fenced out."""
        self.cancel_all(p, clinic_id, [member])

    def cancel_all(self, p: Pipeline, clinic_id: str, members: Sequence[str]) -> None:
        """`cancel` for every member of `members`."""
        if not members:
            return
        p.zrem(self.due_key(clinic_id), *members)
        p.zrem(self.leased_key(clinic_id), *members)
        p.hdel(self.tokens_key(clinic_id), *members)

    def done(self, p: Pipeline, lease: Lease) -> None:
        """The holder's effect is written: the member leaves the queue (if due again
        meanwhile, it stays due)."""
        self.done_all(p, [lease])

    def done_all(self, p: Pipeline, leases: Sequence[Lease]) -> None:
        """`done` for every lease of `leases`."""
        for clinic_id, members in _members_by_clinic(leases).items():
            p.zrem(self.leased_key(clinic_id), *members)
            p.hdel(self.tokens_key(clinic_id), *members)

    def retry_at(self, p: Pipeline, lease: Lease, at: datetime) -> None:
        """Due again at `at`; the next claim gives it a new token."""
        self.retry_all_at(p, [lease], at)

    def retry_all_at(self, p: Pipeline, leases: Sequence[Lease], at: datetime) -> None:
        """`retry_at` for every lease of `leases`, all at `at`."""
        for clinic_id, members in _members_by_clinic(leases).items():
            p.zrem(self.leased_key(clinic_id), *members)
            p.zadd(self.due_key(clinic_id), dict.fromkeys(members, at.timestamp()))

    # --- claiming and fencing ------------------------------------------------------

    async def claim(self, clinic_id: str, now: datetime, lease_ms: int, limit: int) -> list[Lease]:
        """Lease up to `limit` members: expired leases first, then those due by `now`."""
        rows = await self._claim(
            keys=[self.due_key(clinic_id), self.leased_key(clinic_id), self.tokens_key(clinic_id)],
            args=[f"{now.timestamp():.6f}", lease_ms, limit, SEQUENCE],
        )
        return [Lease(clinic_id, _text(member), int(token)) for member, token in rows]

    async def fence(self, tx: Transaction, lease: Lease) -> bool:
        """Inside a unit of work's step: whether `lease` still holds its member. The tokens
        are watched first, so a claim by anyone else before the write makes it fail (and
        the step run again, to find the lease lost)."""
        [held] = await self.fence_all(tx, [lease])
        return held

    async def fence_all(self, tx: Transaction, leases: Sequence[Lease]) -> list[bool]:
        """`fence` for several leases of the transaction's clinic, in one read."""
        if not leases:
            return []
        if any(lease.clinic_id != tx.clinic_id for lease in leases):
            raise ValueError("a lease of another clinic than the transaction's")
        members = [lease.member for lease in leases]
        async with await tx.watched_reads(self.tokens_key(tx.clinic_id)) as reads:
            reads.hmget(self.tokens_key(tx.clinic_id), members)
            reads.zmscore(self.leased_key(tx.clinic_id), members)
            tokens, deadlines = await reads.execute()
        return [
            _token_is(token, lease) and deadline is not None
            for lease, token, deadline in zip(leases, tokens, deadlines, strict=True)
        ]

    async def still_held(self, lease: Lease) -> bool:
        """Right before an effect outside Redis: the token is the lease's and its deadline
        has not passed on Redis's clock. Read-only; the write is still fenced after."""
        held = await self._still_held(
            keys=[self.tokens_key(lease.clinic_id), self.leased_key(lease.clinic_id)],
            args=[lease.member, lease.token],
        )
        return bool(held)

    async def renew(self, lease: Lease, lease_ms: int) -> bool:
        """A full lease from now on Redis's clock, if `lease` still holds its member."""
        renewed = await self._renew(
            keys=[self.leased_key(lease.clinic_id), self.tokens_key(lease.clinic_id)],
            args=[lease.member, lease.token, lease_ms],
        )
        return bool(renewed)

    @contextlib.asynccontextmanager
    async def handed_back_on_failure(self, leases: Sequence[Lease]) -> AsyncIterator[None]:
        """Around the step that does what `leases` claimed: should it fail for the
        infrastructure (Redis failing over, Kafka away), the leases still held end now,
        so the next claim (this replica's next round, or another's) takes their members
        at once rather than after the lease (30 s of real time: ten clinic days on the
        cluster demo's clock). Only a lease still holding its member (its token) is
        ended: one whose step went through is done already. Best effort: tried
        HAND_BACK_TRIES times, HAND_BACK_PAUSE_S apart (a failover takes a second or
        two), then left to run out."""
        try:
            yield
        except Exception as error:
            # A configuration fault or a bad member would fail again at once: left to the lease.
            if isinstance(error, INFRASTRUCTURE_ERRORS) and not isinstance(
                error, ConfigurationError
            ):
                await self._hand_back(leases)
            raise

    async def _hand_back(self, leases: Sequence[Lease]) -> None:
        """One script per clinic; never raises (the step's own error is what counts)."""
        by_clinic: dict[str, list[Lease]] = {}
        for lease in leases:
            by_clinic.setdefault(lease.clinic_id, []).append(lease)
        for attempt in range(1, HAND_BACK_TRIES + 1):
            try:
                for clinic_id in list(by_clinic):
                    await self._end_now(
                        keys=[self.leased_key(clinic_id), self.tokens_key(clinic_id)],
                        args=[part for x in by_clinic[clinic_id] for part in (x.member, x.token)],
                    )
                    del by_clinic[clinic_id]
                return
            # Any error: a failover's (redis-py's cluster errors are not all RedisErrors).
            except Exception as error:
                if attempt == HAND_BACK_TRIES:
                    left = sum(map(len, by_clinic.values()))
                    log.warning(
                        "%d lease(s) of %s not handed back (%s); left to run out",
                        left,
                        self.name,
                        type(error).__name__,
                    )
                    return
                await asyncio.sleep(HAND_BACK_PAUSE_S)

    async def let_go(self, lease: Lease) -> bool:
        """`done` for a holder with nothing to write (what it claimed is gone): only if
        `lease` still holds its member."""
        let_go = await self._let_go(
            keys=[self.leased_key(lease.clinic_id), self.tokens_key(lease.clinic_id)],
            args=[lease.member, lease.token],
        )
        return bool(let_go)

    # --- gauges ----------------------------------------------------------------------

    async def due(self, clinic_id: str) -> int:
        """How many members wait to fall due or to be claimed (not those leased)."""
        return int(await self._redis.zcard(self.due_key(clinic_id)))

    async def earliest(self, clinic_id: str, clock: Clock) -> float | None:
        """When the clinic should next be looked at (service clock, epoch s; None: never),
        what a due index settles to: its earliest due member, or sooner the end of its
        earliest lease (its holder may die: the member is claimed again then). Leases run
        on Redis's clock; on a clock that does not move with real time, at once."""
        when, _ = await self.earliest_counting(clinic_id, clock, ())
        return when

    async def earliest_counting(
        self, clinic_id: str, clock: Clock, counted: Sequence[str]
    ) -> tuple[float | None, list[int]]:
        """`earliest`, and the sizes (ZCARD) of the sorted sets `counted` (a gauge's),
        read in the same round trip."""
        async with self._redis.pipeline(transaction=False) as reads:
            for name in counted:
                reads.zcard(name)
            # EVAL with the source: a pipelined Script would ask SCRIPT EXISTS first.
            reads.eval(_EARLIEST, 2, self.due_key(clinic_id), self.leased_key(clinic_id))
            *sizes, (due, left_ms) = await reads.execute()
        times = [float(due)] if due else []
        if left_ms is not None:
            now = clock.now().timestamp()
            left_s = int(left_ms) / 1000
            per_real_s = clock.real_seconds(timedelta(seconds=1))
            times.append(now + left_s / per_real_s if per_real_s > 0 else now)
        return (min(times) if times else None), [int(size) for size in sizes]

    async def next_due(self, clinic_id: str) -> datetime | None:
        """When the clinic's earliest member falls due (service clock); None: nothing due."""
        first = await self._redis.zrange(self.due_key(clinic_id), 0, 0, withscores=True)
        return datetime.fromtimestamp(float(first[0][1]), UTC) if first else None


def _token_is(raw: Any, lease: Lease) -> bool:
    return raw is not None and int(raw) == lease.token


def _members_by_clinic(leases: Sequence[Lease]) -> dict[str, list[str]]:
    by_clinic: dict[str, list[str]] = {}
    for lease in leases:
        by_clinic.setdefault(lease.clinic_id, []).append(lease.member)
    return by_clinic


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
