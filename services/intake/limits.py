"""Rate limits on the public front doors: fixed windows counted in Redis.

A counter per (clinic, what is counted, who), raised by one script call that also
starts its window (a TTL), so the counters of one request cost one round trip and
vanish on their own. Counted in the clinic's slot (`{clinic_id}` hash tag); who is
a digest, so no address or id is readable in a key name. Windows run on Redis's
clock, in real seconds, not the clinic's scaled clock: abuse happens in real time.

The counters are not state any decision is recorded on, and INCR is atomic, so
they stay outside the unit of work: a WATCHed counter would make every concurrent
request of one clinic conflict with the others.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from redis.asyncio import Redis

# Every key raised, its window started on its first hit (a key left without a TTL
# by an older writer gets one): the counts and milliseconds left, pairwise.
_HIT = """
local out = {}
for _, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  local left = redis.call('PTTL', key)
  if left < 0 then
    redis.call('PEXPIRE', key, ARGV[1])
    left = tonumber(ARGV[1])
  end
  out[#out + 1] = count
  out[#out + 1] = left
end
return out
"""


@dataclass(frozen=True)
class Limit:
    """At most `allowed` requests per window for one `who` of one `what` (0: no limit)."""

    what: str
    who: str
    allowed: int


class RateLimited(Exception):
    def __init__(self, what: str, retry_after_s: int) -> None:
        super().__init__(f"too many requests ({what}); retry after {retry_after_s} s")
        self.what = what
        self.retry_after_s = retry_after_s


class RateLimiter:
    def __init__(self, redis: Redis, window_s: int) -> None:
        self._window_ms = window_s * 1000
        self._hit = redis.register_script(_HIT)

    @staticmethod
    def key(clinic_id: str, limit: Limit) -> str:
        who = hashlib.sha256(limit.who.encode()).hexdigest()[:32]
        return f"intake:{{{clinic_id}}}:rate:{limit.what}:{who}"

    async def hit(self, clinic_id: str, *limits: Limit) -> None:
        """Count this request against every limit; RateLimited if any is exceeded."""
        counted = [limit for limit in limits if limit.allowed > 0]
        if not counted:
            return
        keys = [self.key(clinic_id, limit) for limit in counted]
        raw = await self._hit(keys=keys, args=[self._window_ms])
        over = [
            (limit, int(raw[2 * i + 1]))
            for i, limit in enumerate(counted)
            if int(raw[2 * i]) > limit.allowed
        ]
        if over:
            limit, left_ms = max(over, key=lambda found: found[1])
            raise RateLimited(limit.what, max(1, math.ceil(left_ms / 1000)))
