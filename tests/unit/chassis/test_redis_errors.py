"""A Redis Cluster between primaries is the infrastructure's fault: the message is
redelivered, never dead-lettered. Errors are made from the server's own reply text by
redis-py's parser, as a client meets them during a failover."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError
from redis._parsers.base import BaseParser
from redis.asyncio.connection import Connection
from redis.exceptions import ClusterError, ResponseError, SlotNotCoveredError
from redis.exceptions import ConnectionError as RedisConnectionError

from chassis.dead_letters import Rejected, classify

FAILOVER_REPLIES = [
    "READONLY You can't write against a read only replica.",
    "TRYAGAIN Multiple keys request during rehashing of slot",
    "CLUSTERDOWN The cluster is down",
    "CLUSTERDOWN Hash slot not served",
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
    "MOVED 3999 127.0.0.1:17001",
    "ASK 3999 127.0.0.1:17001",
    "LOADING Redis is loading the dataset in memory",
]


@pytest.mark.parametrize("reply", FAILOVER_REPLIES)
def test_a_failover_reply_redelivers_the_message(reply: str) -> None:
    error = BaseParser.parse_error(reply)
    assert classify(error) == "redeliver", type(error).__name__


@pytest.mark.parametrize(
    "error",
    [
        RedisConnectionError("Connection refused"),
        SlotNotCoveredError("Slot 3999 is not covered by the cluster."),
        ConnectionResetError(),
        # redis-py's cluster client out of redirects mid-failover (CI's failover test).
        ClusterError("TTL exhausted."),
    ],
)
def test_a_lost_connection_or_an_uncovered_slot_redelivers_the_message(error: Exception) -> None:
    assert classify(error) == "redeliver"


def test_a_bad_message_is_dead_lettered_at_once() -> None:
    class Payload(BaseModel):
        n: int

    with pytest.raises(ValidationError) as invalid:
        Payload.model_validate({"n": "x"})
    assert classify(invalid.value) == "dead_letter"
    assert classify(Rejected("no such course")) == "dead_letter"


def test_another_redis_reply_is_retried_then_dead_lettered() -> None:
    # A script's own error, or a wrong type: a bug the message may keep hitting.
    error = BaseParser.parse_error("WRONGTYPE Operation against a key holding the wrong kind")
    assert isinstance(error, ResponseError)
    assert classify(error) == "retry"


async def test_a_connection_closed_under_a_command_redelivers_not_our_attribute_error() -> None:
    """redis-py 8's cluster client disconnects a dropped node's connections, those in use
    too: the next command on one fails with an AttributeError inside redis-py (clean-clone
    CI's failover test). That is Redis's fault; an AttributeError of our own is a bug."""
    connection = Connection()
    connection._reader, connection._writer = object(), object()  # type: ignore[assignment]

    async def disconnected_meanwhile() -> None:  # by another task, as in a failover
        connection._reader = connection._writer = None

    connection.check_health = disconnected_meanwhile  # type: ignore[method-assign]
    with pytest.raises(AttributeError) as torn:
        await connection.send_packed_command(b"PING")
    with pytest.raises(AttributeError) as ours:
        None.missing  # type: ignore[attr-defined]  # noqa: B018

    assert classify(torn.value) == "redeliver"
    assert classify(ours.value) == "retry"
