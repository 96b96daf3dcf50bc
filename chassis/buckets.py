"""Replicas share a due index's buckets: each bucket is one replica's through a lease.

    kap:due:{<kind>-<n>}:owner    "<replica>:<token>", with a deadline (SET NX PX)
    kap:due:{<kind>-<n>}:tokens   counter: every owner's token is new (fencing)
    kap:due:{<kind>-replicas}     zset: replica -> heartbeat deadline (Redis's clock, ms)

Every `lease_ms / 3` a replica beats its heartbeat (how many replicas are alive
gives its share, ceil(buckets / replicas)), renews the leases it holds (only if
still its own: value and token), lets go of those beyond its share (so a replica
that joined finds free ones), and takes free buckets up to its share; it never
takes a live lease. A replica that stopped is dropped from the count when its
heartbeat runs out, and its buckets are taken once their leases run out.

Ownership only saves repeated work: what fires an item is its clinic's lease queue
(claims, fencing), so two replicas looking at one bucket for a moment, or a bucket
with no owner for a lease's span, costs time, never an item fired twice or lost.
"""

from __future__ import annotations

import math
import time
import uuid

from redis.asyncio import Redis

_HEARTBEAT = """
-- KEYS: replicas. ARGV: replica, lease ms. How many replicas beat within a lease.
local t = redis.call("TIME")
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call("ZADD", KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now_ms)
redis.call("PEXPIRE", KEYS[1], 10 * tonumber(ARGV[2]))
return redis.call("ZCARD", KEYS[1])
"""

_TAKE = """
-- KEYS: owner, tokens. ARGV: replica, lease ms. A free bucket, with a new token.
if redis.call("EXISTS", KEYS[1]) == 1 then return false end
local value = ARGV[1] .. ":" .. redis.call("INCR", KEYS[2])
redis.call("SET", KEYS[1], value, "PX", ARGV[2])
return value
"""

_RENEW = """
-- KEYS: owner. ARGV: value, lease ms. Renewed only while still this holder's.
if redis.call("GET", KEYS[1]) ~= ARGV[1] then return 0 end
redis.call("PEXPIRE", KEYS[1], ARGV[2])
return 1
"""

_LET_GO = """
-- KEYS: owner. ARGV: value.
if redis.call("GET", KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call("DEL", KEYS[1])
"""


class BucketOwners:
    def __init__(
        self, redis: Redis, kind: str, buckets: int, lease_ms: int, replica: str | None = None
    ) -> None:
        self._redis, self.kind, self.buckets, self.lease_ms = redis, kind, buckets, lease_ms
        self.replica = replica or uuid.uuid4().hex[:12]
        self.owned: dict[int, str] = {}  # bucket -> the owner value written
        self._next_look = 0.0  # monotonic
        self._take = redis.register_script(_TAKE)
        self._let_go = redis.register_script(_LET_GO)

    def owner_key(self, bucket: int) -> str:
        return f"kap:due:{{{self.kind}-{bucket}}}:owner"

    def tokens_key(self, bucket: int) -> str:
        return f"kap:due:{{{self.kind}-{bucket}}}:tokens"

    def replicas_key(self) -> str:
        return f"kap:due:{{{self.kind}-replicas}}"

    async def mine(self) -> set[int]:
        """The buckets this replica works now; leases looked after every lease_ms / 3."""
        if time.monotonic() >= self._next_look:
            self._next_look = time.monotonic() + self.lease_ms / 3000
            await self._look()
        return set(self.owned)

    async def _look(self) -> None:
        held = list(self.owned.items())
        # The heartbeat and every renewal in one round trip (EVAL with the source: a
        # pipelined Script would ask SCRIPT EXISTS first).
        async with self._redis.pipeline(transaction=False) as looks:
            looks.eval(_HEARTBEAT, 1, self.replicas_key(), self.replica, self.lease_ms)
            for bucket, value in held:
                looks.eval(_RENEW, 1, self.owner_key(bucket), value, self.lease_ms)
            replicas, *renewed = await looks.execute()
        share = math.ceil(self.buckets / max(int(replicas), 1))
        for (bucket, _), kept in zip(held, renewed, strict=True):
            if not kept:
                del self.owned[bucket]  # ran out and taken (this replica stalled)
        for bucket in sorted(self.owned, reverse=True)[: max(0, len(self.owned) - share)]:
            await self._let_go(keys=[self.owner_key(bucket)], args=[self.owned.pop(bucket)])
        if len(self.owned) >= share:
            return
        # From a place of its own, so replicas starting together mostly try different ones.
        start = int(self.replica, 16) % self.buckets if _hex(self.replica) else 0
        for n in range(self.buckets):
            bucket = (start + n) % self.buckets
            if bucket in self.owned:
                continue
            value = await self._take(
                keys=[self.owner_key(bucket), self.tokens_key(bucket)],
                args=[self.replica, self.lease_ms],
            )
            if value:
                self.owned[bucket] = value.decode() if isinstance(value, bytes) else str(value)
                if len(self.owned) >= share:
                    return

    async def release(self) -> None:
        """On stop: the buckets are free for the others at once, not after the lease."""
        for bucket, value in list(self.owned.items()):
            await self._let_go(keys=[self.owner_key(bucket)], args=[value])
        self.owned.clear()
        await self._redis.zrem(self.replicas_key(), self.replica)


def _hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True
