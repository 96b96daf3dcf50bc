"""Where due work is: per timer kind, a few bucket sorted sets of clinics by earliest due time.

    kap:due:{<kind>-<n>}    zset: clinic id -> its earliest due time (service clock, epoch s)

A clinic is in bucket crc32(id) % buckets. The keys belong to no clinic: each bucket
is its own Redis Cluster slot (the hash tag is the bucket), and every command here
touches one bucket or one clinic, never both.

The clinics' own due sets (chassis.leases) stay the truth; the index is a hint of
where to look, so a round costs a read per bucket plus the clinics found due, not a
read per clinic. Two ways a hint can be wrong, both safe:
- too early (a write that failed after its hint, a member cancelled): the clinic is
  looked at once, nothing is claimed, and `settle` puts its true next time back;
- missing (the process died between a clinic's commit and its hint, written after
  it since the two are in different slots): the slow sweep (chassis.due_work)
  settles every clinic again, so the item is late by at most a sweep, never lost.
A hint is written after the clinic's commit (chassis.unit_of_work does it for the due
sets it was told of): written before, a round could settle the clinic from a due set
without the item yet, and drop the hint.

`settle` races with hints: it reads the clinic's earliest, sets it, and reads again:
a hint it may have overwritten was written after its commit, so the second read sees
the item, and a hint after that lowers the score (ZADD LT) itself.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import Pipeline

# When a clinic's next item falls due (service clock, epoch s); None: nothing due.
NextDue = Callable[[str], Awaitable[float | None]]


@dataclass
class DueIndex:
    redis: Redis
    kind: str
    buckets: int
    # Which clinic keys hold this kind's due items (a ZADD on one, in a unit of work's
    # MULTI, is hinted after its commit): key name of a clinic id.
    sources: list[Callable[[str], str]] = field(default_factory=list)

    def bucket(self, clinic_id: str) -> int:
        return zlib.crc32(clinic_id.encode()) % self.buckets

    def key(self, bucket: int) -> str:
        return f"kap:due:{{{self.kind}-{bucket}}}"

    async def hint(self, clinic_id: str, at: float) -> None:
        """`clinic_id` has an item due at `at`: looked at by then (an earlier hint wins)."""
        await self.redis.zadd(self.key(self.bucket(clinic_id)), {clinic_id: at}, lt=True)

    def hint_within(self, tx: Pipeline, clinic_id: str, at: float | None) -> float | None:
        """`hint`, queued on a write step's MULTI (after its slot check) on one Redis node,
        where it commits with the item (None back); on a cluster the bucket is another
        slot, and `at` comes back, for `hint` right after the commit."""
        if at is None or isinstance(self.redis, RedisCluster):
            return at
        tx.zadd(self.key(self.bucket(clinic_id)), {clinic_id: at}, lt=True)
        return None

    async def due(self, buckets: Iterable[int], now: float, limit: int) -> list[str]:
        """The clinics of `buckets` with something due by `now`, at most `limit` a bucket."""
        ordered = sorted(buckets)
        if not ordered:
            return []
        async with self.redis.pipeline(transaction=False) as reads:
            for bucket in ordered:
                reads.zrangebyscore(self.key(bucket), "-inf", now, start=0, num=limit)
            found = await reads.execute()
        return [_text(clinic) for clinics in found for clinic in clinics]

    async def earliest(self, buckets: Collection[int]) -> float | None:
        """The earliest due time in `buckets`; None: nothing due there."""
        if not buckets:
            return None
        async with self.redis.pipeline(transaction=False) as reads:
            for bucket in sorted(buckets):
                reads.zrange(self.key(bucket), 0, 0, withscores=True)
            found = await reads.execute()
        firsts = [float(rows[0][1]) for rows in found if rows]
        return min(firsts) if firsts else None

    async def settle(self, clinic_id: str, next_due: NextDue) -> float | None:
        """After a clinic was looked at: its score is its next due time again (or it
        leaves the index). See the module's docstring for why it reads twice."""
        key = self.key(self.bucket(clinic_id))
        first = await next_due(clinic_id)
        if first is None:
            await self.redis.zrem(key, clinic_id)
        else:
            await self.redis.zadd(key, {clinic_id: first})
        again = await next_due(clinic_id)
        if again is not None and (first is None or again < first):
            await self.redis.zadd(key, {clinic_id: again}, lt=True)
            return again
        return first

    def hints_of(self, clinic_id: str, queued: Iterable[tuple[Any, ...]]) -> float | None:
        """The earliest score a MULTI's queued ZADDs give this index's keys of `clinic_id`."""
        names = {source(clinic_id) for source in self.sources}
        earliest: float | None = None
        for args in queued:
            if str(args[0]).upper() != "ZADD" or _text(args[1]) not in names:
                continue
            rest = [a for a in args[2:] if _text(a).upper() not in _ZADD_FLAGS]
            for score in rest[0::2]:
                value = float(score)
                earliest = value if earliest is None else min(earliest, value)
        return earliest


_ZADD_FLAGS = {"NX", "XX", "GT", "LT", "CH", "INCR"}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
