"""The one place a Redis client is built: one node, or a Redis Cluster (`REDIS_MODE`).

TLS and AUTH come from the URL in both modes (`rediss://user:password@host:port`).
On a cluster every key of a write step carries its clinic's `{clinic_id}` hash tag
(chassis.unit_of_work), so each step runs on one slot's primary.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from copy import copy
from typing import Any, Literal, cast

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline
from redis.asyncio.connection import Connection, SSLConnection
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
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
    # redis-py's cluster client gives up redirecting after its TTL while a primary fails
    # over ("TTL exhausted", seen in CI's failover test): the step is tried again later.
    ClusterError,
)


MAX_CONNECTIONS = 128  # KAP_REDIS_MAX_CONNECTIONS
POOL_TIMEOUT_S = 10.0  # KAP_REDIS_POOL_TIMEOUT_S


# --- one deadline a pipeline ------------------------------------------------------
#
# redis-py reads a pipeline's replies one by one, each under an asyncio timeout of
# its own: a timer armed and cancelled per reply, 8% of the notifier's CPU samples
# and 4% of the scheduler's in the 20:47 bench (issue 19; a MULTI of 200 boosters
# has 1,404 replies). A standalone client's pipelines read theirs under one deadline
# instead: the connection's socket timeout (redis-py's 5 s unless the URL says
# otherwise) plus a millisecond a command, so a Redis that stops answering still fails
# the pipeline (and a command alone keeps redis-py's own timer).

_UNDER_ONE_DEADLINE: ContextVar[bool] = ContextVar("redis_under_one_deadline", default=False)


class _RepliesUnderOneDeadline:
    """A connection whose replies, read inside `DeadlinePipeline.execute`, take that
    pipeline's one deadline instead of a timer each."""

    async def read_response(
        self,
        disable_decoding: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 (redis-py's signature)
        *,
        disconnect_on_error: bool = True,
        push_request: bool | None = False,
    ) -> Any:
        if timeout is None and _UNDER_ONE_DEADLINE.get():
            timeout = math.inf  # redis-py's "no timer": the pipeline's deadline holds
        return await super().read_response(  # type: ignore[misc]
            disable_decoding,
            timeout,
            disconnect_on_error=disconnect_on_error,
            push_request=push_request,
        )


class DeadlineConnection(_RepliesUnderOneDeadline, Connection):
    pass


class DeadlineSSLConnection(_RepliesUnderOneDeadline, SSLConnection):
    pass


class DeadlinePipeline(Pipeline):
    """A pipeline whose replies are read under one deadline (see above). The connection
    is taken from the pool first: waiting for one has its own timeout."""

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if not self.command_stack and not self.watching:
            return []
        if self.connection is None:
            self.connection = await self.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        read_timeout_s = self.connection.socket_timeout
        if read_timeout_s is None:  # none configured: none per reply either
            found: list[Any] = await super().execute(raise_on_error)
            return found
        deadline_s = read_timeout_s + len(self.command_stack) / 1000
        covered = _UNDER_ONE_DEADLINE.set(True)
        try:
            async with asyncio.timeout(deadline_s):
                found = await super().execute(raise_on_error)
                return found
        except TimeoutError as late:  # asyncio's: Redis's own error, as redis-py raises it
            raise RedisTimeoutError(f"no reply from Redis within {deadline_s:g} s") from late
        finally:
            _UNDER_ONE_DEADLINE.reset(covered)


class StandaloneRedis(Redis):
    """The one-node client: its pipelines are `DeadlinePipeline`s."""

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return DeadlinePipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )


def connect_redis(
    url: str,
    mode: RedisMode = "standalone",
    *,
    decode: bool = True,
    max_connections: int = MAX_CONNECTIONS,
    pool_timeout_s: float = POOL_TIMEOUT_S,
) -> Redis:
    """A client for `url`; nothing connects until the first command.

    One node: at most `max_connections`, and a command finding them all taken waits
    up to `pool_timeout_s` for one (then a ConnectionError: transient, the work comes
    again). redis-py's default pool raises MaxConnectionsError at once past 100: a
    notifier's burst of concurrent steps (two connections each while it reads under
    WATCH) failed deliveries with it and stalled whole batches (issue 19).

    The cluster client is typed as `Redis`: the services use only commands both
    clients offer (single-slot transactions, pipelines, scripts with declared keys),
    and one type keeps every store's signature the same in both modes."""
    if mode == "cluster":
        return cast(Redis, RedisCluster.from_url(url, decode_responses=decode))
    # A unix socket's URL keeps redis-py's own connection (and its timer per reply).
    scheme = url.split(":", 1)[0]
    deadline = {"redis": DeadlineConnection, "rediss": DeadlineSSLConnection}.get(scheme)
    pool = BlockingConnectionPool.from_url(
        url,
        decode_responses=decode,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        **({"connection_class": deadline} if deadline else {}),
    )
    return StandaloneRedis.from_pool(pool)


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


class NotReplicated(RedisConnectionError):
    """EXEC applied on the primary, but no replica acknowledged it in time: a primary
    lost now would take the step with it. A connection error, so transient: the input
    comes again (its handled mark makes the replay apply nothing twice)."""


# redis-py's async cluster transaction runs each command it is given (WATCH, and every
# command queued after MULTI) through a sync `execute_command` that starts a thread
# with its own event loop (asyncio.run) to find the command's slot, first refreshing
# the slot map there if the client marked it stale after an error. That refresh takes
# the client's asyncio locks from the thread's loop while this loop's tasks may hold
# or want them: a clean-clone run's failover test met "asyncio.Lock is bound to a
# different event loop" (a primary killed under load), and a refresh waiting there
# on a lock held here would hang this loop (the thread is joined). So the map is
# refreshed here, in the caller's loop (`fresh_slot_map`, before each transaction),
# and a transaction command finding it stale again meanwhile raises a transient
# error instead (the step runs again, or its input comes again).
async def fresh_slot_map(redis: Redis) -> None:
    """On a cluster whose client marked its slot map stale, refresh it in this loop."""
    if isinstance(redis, RedisCluster) and redis._initialize:
        await redis.initialize()


class SlotMapStale(ClusterDownError):
    """A transaction command met a slot map marked stale after it began: transient."""


def _refresh_only_here(tx: ClusterPipeline) -> None:
    strategy = _strategy(tx)
    client = tx.cluster_client
    in_thread = strategy.execute_command

    def execute_command(*args: Any, **kwargs: Any) -> Any:
        if client._initialize:
            raise SlotMapStale("the cluster's slot map is being refreshed; run again")
        return in_thread(*args, **kwargs)

    strategy.execute_command = execute_command


def transaction(redis: Redis) -> Pipeline:
    """A MULTI/EXEC pipeline (on a cluster: slot map refreshed by `fresh_slot_map` only)."""
    tx = redis.pipeline(transaction=True)
    if isinstance(tx, ClusterPipeline):
        _refresh_only_here(tx)
    return tx


class TornConnection(RedisConnectionError):
    """A command on a redis-py connection that another task disconnected under it."""


def torn_connection(error: BaseException) -> bool:
    """Whether `error` is redis-py's asyncio connection used after another task
    disconnected it: its writer or reader is None mid-command, an AttributeError from
    redis.asyncio.connection. redis-py 8's cluster client, refreshing its nodes while a
    primary fails over, disconnects a node's connections, those in use too (seen in
    clean-clone CI's failover test, 2026-11-30)."""
    if not isinstance(error, AttributeError):
        return False
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    where = frame.tb_frame.f_code.co_filename if frame is not None else ""
    return where.replace("\\", "/").endswith("redis/asyncio/connection.py")


def no_retry_transaction(redis: Redis) -> Pipeline:
    """A MULTI/EXEC pipeline that never retries by itself.

    redis-py's cluster transaction retries WATCH and EXEC after a connection error on
    a new connection, where the earlier WATCHes are gone: a step's EXEC then applies
    what it decided from a stale read (a lost update), or applies twice. Here the
    error reaches the unit of work instead, which runs the step again from its reads,
    or leaves the input to come again. (A standalone pipeline does not retry EXEC.)"""
    tx = redis.pipeline(transaction=True)
    if isinstance(tx, ClusterPipeline):
        strategy = _strategy(tx)
        if not hasattr(strategy, "_retry"):
            raise TypeError("cannot turn off the retries of redis-py's cluster transaction")
        # One attempt; the same errors still call its handler, which refreshes the
        # slot map after MOVED or a lost node (a new Retry would skip that).
        retry = copy(strategy._retry)
        retry.update_retries(0)
        strategy._retry = retry
        _refresh_only_here(tx)
    return tx


class ReadsAfterWatch(DeadlinePipeline):
    """Reads sent on a MULTI pipeline's own connection, behind a WATCH of `keys`, in one
    write: one round trip where a step took two (WATCH, then its reads on a second
    connection), and no second connection held while the step decides (issue 19).

    One Redis node only (a cluster pipeline keeps its connections per node). Reading
    on the watched connection is what WATCH allows: only EXEC is conditional. A
    connection lost on the way loses every WATCH of the transaction, so it raises
    WatchError (redis-py's own rule for a watching pipeline) instead of retrying on a
    new connection, where the step's earlier WATCHes would be gone."""

    def __init__(self, tx: Pipeline, keys: Sequence[str]) -> None:
        super().__init__(tx.connection_pool, tx.response_callbacks, False, None)
        self._tx = tx
        self._watches = bool(keys)
        self._leading: tuple[int, Callable[[list[Any]], None]] | None = None
        if keys:
            self.command_stack.append((("WATCH", *keys), {}))

    def lead(self, replies: int, took: Callable[[list[Any]], None]) -> None:
        """The first `replies` replies are someone else's reads, queued first: `took` gets
        them, `execute` returns the rest (chassis.unit_of_work.Prelude)."""
        self._leading = (replies, took)

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if not self.command_stack:
            return []
        tx = self._tx
        if tx.connection is None:
            tx.connection = await tx.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        self.connection = tx.connection
        self.watching = True  # a connection error: WatchError, no retry (see above)
        found: list[Any] = await super().execute(raise_on_error)
        if self._watches:
            tx.watching = True  # so its reset UNWATCHes, and its MULTI is on this connection
            found = found[1:]
        if self._leading is not None:
            replies, took = self._leading
            took(found[:replies])
            found = found[replies:]
        return found

    async def reset(self) -> None:  # type: ignore[override]
        # The connection is the transaction's, which releases it (after UNWATCH) itself.
        self.command_stack = []
        self.scripts = set()
        self.watching = False
        self.explicit_transaction = False
        self.connection = None


async def execute_replicated(tx: Pipeline, timeout_ms: int) -> list[Any]:
    """EXEC, then on a cluster `WAIT 1 timeout_ms` on the same connection (WAIT counts
    the replicas holding this connection's writes): replication is asynchronous, and a
    primary killed after acknowledging an EXEC its replica never got loses the step
    while its input counts as handled. Raises NotReplicated when no replica acknowledged.
    Standalone: EXEC alone (no replica to wait for, and no extra round trip)."""
    if not isinstance(tx, ClusterPipeline):
        return await tx.execute()
    strategy = _strategy(tx)
    try:
        # The strategy's own execute keeps the connection; the pipeline's resets it.
        result: list[Any] = await strategy.execute()
        connection = strategy._transaction_connection
        await connection.send_command("WAIT", 1, timeout_ms)
        try:
            acked = int(await connection.read_response())
        except ResponseError as error:
            # A planned failover demotes the primary while WAIT blocks: Redis answers
            # "UNBLOCKED ... (master -> replica?)". Whether the new primary holds the
            # write is unknown until the input comes again and finds its handled mark.
            if not str(error).startswith("UNBLOCKED"):
                raise
            raise NotReplicated(f"the primary was demoted while waiting: {error}") from error
    finally:
        await tx.reset()
    if acked < 1:
        raise NotReplicated(f"no replica acknowledged the write within {timeout_ms} ms")
    return result


def _strategy(tx: ClusterPipeline) -> Any:
    strategy = getattr(tx, "_execution_strategy", None)
    if strategy is None:  # a redis-py that moved it: fail loudly rather than retry unsafely
        raise TypeError(f"cannot reach the transaction of {type(tx).__name__}")
    return strategy
