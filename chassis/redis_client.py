"""The one place a Redis client is built: one node, or a Redis Cluster (`REDIS_MODE`).

TLS and AUTH come from the URL in both modes (`rediss://user:password@host:port`).
On a cluster every key of a write step carries its clinic's `{clinic_id}` hash tag
(chassis.unit_of_work), so each step runs on one slot's primary.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

RedisMode = Literal["standalone", "cluster"]

# Redis is away or between primaries, never the input's fault: the work waits and
# runs again. During a cluster failover a write may reach the old primary, now a
# replica (READONLY), a slot may be mid-migration (TRYAGAIN, MOVED/ASK once the
# client's redirects ran out) or uncovered for a moment (CLUSTERDOWN, and the
# client's own "slot not covered", a RedisClusterException); BusyLoadingError (a
# node loading its AOF after a restart) is a ConnectionError.
TRANSIENT_REDIS_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    TryAgainError,
    ClusterDownError,
    AskError,
    RedisClusterException,
)


def connect_redis(url: str, mode: RedisMode = "standalone", *, decode: bool = True) -> Redis:
    """A client for `url`; nothing connects until the first command.

    The cluster client is typed as `Redis`: the services use only commands both
    clients offer (single-slot transactions, pipelines, scripts with declared keys),
    and one type keeps every store's signature the same in both modes."""
    if mode == "cluster":
        return cast(Redis, RedisCluster.from_url(url, decode_responses=decode))
    return Redis.from_url(url, decode_responses=decode)


async def eviction_policies(redis: Redis) -> list[str]:
    """Each primary's `maxmemory-policy`. Anything but `noeviction` may drop the handled
    marks and effect records (they carry TTLs, so every volatile-* policy takes them
    first) and silently break exactly-once."""
    if isinstance(redis, RedisCluster):
        return [await _policy(redis, target_nodes=node) for node in redis.get_primaries()]
    return [await _policy(redis)]


async def _policy(redis: Redis | RedisCluster, **target: Any) -> str:
    try:
        reply = await redis.config_get("maxmemory-policy", **target)
    except ResponseError:
        # Managed Redis often disables or renames CONFIG; INFO still tells.
        info = await redis.info("memory", **target)
        return str(info["maxmemory_policy"])
    return str(reply["maxmemory-policy"])
