"""A cluster transaction is tried once: redis-py would re-send EXEC on a new connection
without its WATCH. Built without connecting (nothing connects before a command)."""

from __future__ import annotations

from chassis.dead_letters import classify
from chassis.redis_client import NotReplicated, connect_redis, no_retry_transaction


def test_a_cluster_transaction_is_tried_once_and_the_client_keeps_its_retries() -> None:
    cluster = connect_redis("redis://127.0.0.1:1/0", "cluster")
    tx = no_retry_transaction(cluster)
    assert tx._execution_strategy._retry.get_retries() == 0  # type: ignore[attr-defined]
    assert cluster.retry.get_retries() > 0  # type: ignore[attr-defined]


def test_a_standalone_transaction_is_redis_pys_own() -> None:
    standalone = connect_redis("redis://127.0.0.1:1/0")
    assert type(no_retry_transaction(standalone)) is type(standalone.pipeline(transaction=True))


def test_a_write_no_replica_holds_is_redelivered() -> None:
    assert classify(NotReplicated("no replica")) == "redeliver"
