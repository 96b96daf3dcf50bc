"""The unit of work on real Redis: a conflict reruns the step from its reads, a replayed
input changes nothing, and a key outside the clinic's slot is refused before EXEC."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection as RedisConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from chassis.config import ServiceSettings
from chassis.dead_letters import Rejected, classify
from chassis.events import EventPublisher
from chassis.kafka import make_broker
from chassis.outbox import Output
from chassis.unit_of_work import (
    REMEMBER_S,
    REPLAYED,
    TRIM_MARKS_OVER,
    Decision,
    OutsideSlot,
    SharedRead,
    Step,
    Transaction,
    UnitOfWork,
)
from shared import events as ev
from shared import topics
from tests.helpers import topic_messages

pytestmark = pytest.mark.integration


async def test_a_change_between_read_and_write_reruns_the_step_from_its_reads(
    uow: UnitOfWork,
    redis_client: Redis,
    unique: str,
) -> None:
    clinic = f"uow-{unique}"
    counter = f"tests:{{{clinic}}}:counter"
    seen: list[int] = []

    async def add_one(tx: Transaction) -> Decision[int]:
        await tx.watch(counter)
        value = int(await redis_client.get(counter) or 0)
        seen.append(value)
        if len(seen) == 1:
            await redis_client.set(counter, 10)  # another replica, between read and write
        return Decision(lambda w: w.set(counter, value + 1), result=value + 1)

    assert await uow.run(clinic, [f"in-{unique}"], add_one) == 11
    assert seen == [0, 10]
    assert await redis_client.get(counter) == "11"
    # The same input again: its handled mark says so, nothing is written.
    assert await uow.run(clinic, [f"in-{unique}"], add_one) is REPLAYED
    assert await redis_client.get(counter) == "11"


async def test_reads_sent_with_their_watch_guard_the_write_on_the_steps_one_connection(
    uow: UnitOfWork, redis_client: Redis, redis_url: str, unique: str
) -> None:
    """Transaction.watched_reads sends the WATCH with the reads, on the transaction's own
    connection (issue 19: one round trip, and one connection held, where a step took two
    of each): a change between those reads and the EXEC still reruns the step."""
    clinic = f"uow-{unique}"
    counter = f"tests:{{{clinic}}}:counter"
    seen: list[int] = []
    in_use: list[int] = []
    other = Redis.from_url(redis_url, decode_responses=True)  # another replica's client

    async def add_one(tx: Transaction) -> Decision[int]:
        async with await tx.watched_reads(counter) as reads:
            reads.get(counter)
            [raw] = await reads.execute()
            in_use.append(len(redis_client.connection_pool._in_use_connections))
        value = int(raw or 0)
        seen.append(value)
        if len(seen) == 1:
            await other.set(counter, 10)  # between the read and the write
        return Decision(lambda w: w.set(counter, value + 1), result=value + 1)

    try:
        assert await uow.run(clinic, [f"in-{unique}"], add_one) == 11
    finally:
        await other.aclose()
    assert seen == [0, 10]
    assert await redis_client.get(counter) == "11"
    assert in_use == [1, 1]  # the reads on the watched connection: no second one taken


async def test_a_key_outside_the_clinics_slot_is_refused_and_nothing_written(
    uow: UnitOfWork,
    redis_client: Redis,
    unique: str,
) -> None:
    clinic = f"uow-{unique}"
    inside, outside = f"tests:{{{clinic}}}:a", f"tests:{{other-{unique}}}:b"

    def write_both(w: Any) -> None:
        w.set(inside, 1)
        w.set(outside, 1)

    async def both(tx: Transaction) -> Decision[Any]:
        return Decision(write_both)

    with pytest.raises(OutsideSlot):
        await uow.run(clinic, [f"in-{unique}"], both)
    assert await redis_client.exists(inside, outside, uow.handled_key(clinic, f"in-{unique}")) == 0

    async def watches_outside(tx: Transaction) -> Decision[Any]:
        await tx.watch(outside)
        return Decision(lambda w: None)

    with pytest.raises(OutsideSlot):
        await uow.run(clinic, [], watches_outside)


async def test_a_batch_decides_only_for_its_inputs_not_handled_before(
    uow: UnitOfWork, redis_client: Redis, unique: str
) -> None:
    clinic = f"uow-{unique}"
    log_key = f"tests:{{{clinic}}}:log"
    seen: list[list[str]] = []

    async def remember(tx: Transaction) -> Decision[None]:
        seen.append(list(tx.fresh))
        fresh = list(tx.fresh)
        return Decision(lambda w: w.rpush(log_key, *fresh))

    await uow.run(clinic, ["a"], remember)
    await uow.run(clinic, ["a", "b"], remember)
    assert await uow.run(clinic, ["b", "a"], remember) is REPLAYED
    assert seen == [["a"], ["b"]]
    assert await redis_client.lrange(log_key, 0, -1) == ["a", "b"]


async def test_a_clients_marks_share_one_hash_and_the_old_keys_still_count(
    uow: UnitOfWork, redis_client: Redis, unique: str
) -> None:
    """Issue 18: a client's handled marks are fields of one hash (tens of bytes each, not
    a key's hundred and more); a mark written as a key of its own before (an upgrade)
    still refuses its input; a hash past TRIM_MARKS_OVER fields sheds the marks older
    than REMEMBER_S at its next write, and keeps the rest."""
    clinic, client = f"uow-{unique}", f"client-{unique}"
    counter = f"tests:{{{clinic}}}:counter"

    async def add_one(tx: Transaction) -> Decision[None]:
        return Decision(lambda w: w.incr(counter))

    assert await uow.run(clinic, ["a", "b"], add_one, marks_of=client) is None
    assert await uow.run(clinic, ["b"], add_one, marks_of=client) is REPLAYED
    marks = uow.marks_key(clinic, client)
    assert sorted(await redis_client.hkeys(marks)) == ["a", "b"]
    assert 0 < await redis_client.ttl(marks) <= REMEMBER_S
    assert not await redis_client.exists(uow.handled_key(clinic, "a"))

    await redis_client.set(uow.handled_key(clinic, "old"), "", ex=60)  # before the upgrade
    assert await uow.run(clinic, ["old"], add_one, marks_of=client) is REPLAYED
    assert await redis_client.get(counter) == "1"

    long_ago = int(time.time()) - REMEMBER_S - 60
    await redis_client.hset(
        marks, mapping={f"aged-{n}": str(long_ago) for n in range(TRIM_MARKS_OVER)}
    )
    assert await uow.run(clinic, ["c"], add_one, marks_of=client) is None
    assert sorted(await redis_client.hkeys(marks)) == ["a", "b", "c"]
    asked = [(clinic, "c", client), (clinic, "old", client), (clinic, "d", client)]
    assert await uow.handled(asked) == set(asked[:2])


async def test_public_outputs_are_numbered_per_client_once_and_a_replay_takes_no_number(
    kafka_bootstrap: str, redis_client: Redis, unique: str
) -> None:
    """Each public event a step causes takes its client's next number, written with it;
    an internal event takes none; a replayed input takes none (the fact is the same)."""
    broker = make_broker(ServiceSettings(kafka_bootstrap_servers=kafka_bootstrap), "scheduler")
    publisher = EventPublisher(broker, "scheduler", topics.produced_by("scheduler"))
    await broker.start()
    try:
        work = UnitOfWork(redis_client, "scheduler", publisher)
        clinic, client = f"uow-{unique}", uuid.uuid4()

        def stage(stage: ev.ClientStage) -> Output:
            event = ev.ClientStageReached(
                clinic_id=clinic, client_id=client, occurred_at=datetime.now(UTC), stage=stage
            )
            return Output(event, publisher.envelope_for(event))

        def booster() -> Output:
            now = datetime.now(UTC)
            event = ev.BoosterDue(
                clinic_id=clinic,
                client_id=client,
                occurred_at=now,
                course_id=uuid.uuid4(),
                booster_number=1,
                due_at=now,
            )
            return Output(event, publisher.envelope_for(event))

        def step_of(*outputs: Output) -> Any:
            async def step(tx: Transaction) -> Decision[None]:
                return Decision(lambda w: None, outputs=outputs)

            return step

        first = step_of(
            stage(ev.ClientStage.ENROLLED), booster(), stage(ev.ClientStage.COURSE_BOOKED)
        )
        await work.run(clinic, [f"a-{unique}"], first, marks_of=str(client))
        assert await work.run(clinic, [f"a-{unique}"], first, marks_of=str(client)) is REPLAYED
        await work.run(
            clinic,
            [f"b-{unique}"],
            step_of(stage(ev.ClientStage.COURSE_COMPLETED)),
            marks_of=str(client),
        )
        found = await topic_messages(
            kafka_bootstrap, topics.PUBLIC_STAGE_REACHED.name, key=str(client), expect=3
        )
        numbers = [m["headers"].get("ce_clientsequence") for m in found]
        assert numbers == ["1", "2", "3"]
        assert [m["value"]["stage"] for m in found] == [
            "enrolled",
            "course_booked",
            "course_completed",
        ]
        assert await redis_client.get(work.sequence_key(clinic, str(client))) == "3"
        internal = await topic_messages(
            kafka_bootstrap, topics.BOOSTER_DUE.name, key=str(client), expect=1
        )
        assert len(internal) == 1
        assert "ce_clientsequence" not in internal[0]["headers"]
    finally:
        await broker.stop()


async def test_a_connection_closed_under_the_step_is_redis_fault_and_the_input_comes_again(
    uow: UnitOfWork, redis_client: Redis, unique: str
) -> None:
    """redis-py 8's cluster client, refreshing its nodes while a primary fails over,
    disconnects connections other tasks are using: their next command fails with an
    AttributeError on the missing writer (clean-clone CI, the failover test). The unit
    of work makes it a Redis connection error, redelivered, never a dead letter."""
    clinic = f"uow-{unique}"
    counter = f"tests:{{{clinic}}}:counter"
    torn = True

    async def step(tx: Transaction) -> Decision[int]:
        nonlocal torn
        await tx.watch(counter)
        if torn:
            torn = False
            shared = RedisConnection(**redis_client.connection_pool.connection_kwargs)
            await shared.connect()

            async def disconnected_meanwhile() -> None:  # by another task, as in a failover
                await shared.disconnect()

            shared.check_health = disconnected_meanwhile  # type: ignore[method-assign]
            await shared.send_packed_command(b"PING")
        return Decision(lambda w: w.incr(counter), result=1)

    with pytest.raises(RedisConnectionError) as raised:
        await uow.run(clinic, [f"in-{unique}"], step)

    assert classify(raised.value) == "redeliver"
    assert await redis_client.get(counter) is None  # nothing written
    assert await uow.run(clinic, [f"in-{unique}"], step) == 1  # the input, again
    assert await redis_client.get(counter) == "1"


async def test_a_clients_step_reads_its_marks_and_last_number_with_its_own_first_read(
    kafka_bootstrap: str, redis_client: Redis, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 19: a step about one client, on one node, sends its inputs' handled marks and
    its client's last public number with its own first watched read: three round trips
    in all (that read, the EXEC, the outbox's clear after the publish), where each of
    those two reads took one of its own. What it decides is what it did: only the
    inputs not handled before (known once that read is back, and not before), the next
    number, and a replay whose step now fails is still a replay."""
    broker = make_broker(ServiceSettings(kafka_bootstrap_servers=kafka_bootstrap), "scheduler")
    publisher = EventPublisher(broker, "scheduler", topics.produced_by("scheduler"))
    await broker.start()
    sent: list[bytes] = []
    real_send = RedisConnection.send_packed_command

    async def counted(self: RedisConnection, command: Any, check_health: bool = True) -> None:
        packed = b"".join(command) if isinstance(command, list) else command
        if packed.split(b"\r\n")[2] not in (b"HELLO", b"CLIENT"):  # a new connection's
            sent.append(packed)
        await real_send(self, command, check_health)

    try:
        work = UnitOfWork(redis_client, "scheduler", publisher)
        clinic, client = f"uow-{unique}", uuid.uuid4()
        state = f"tests:{{{clinic}}}:state:{client}"
        await redis_client.set(work.sequence_key(clinic, str(client)), 4)
        decided: list[list[str]] = []

        async def step(tx: Transaction) -> Decision[None]:
            with pytest.raises(RuntimeError):
                tx.fresh  # noqa: B018 (not known before the step's first read)
            async with await tx.watched_reads(state) as reads:
                reads.get(state)
                [before] = await reads.execute()
            decided.append(list(tx.fresh))
            event = ev.ClientStageReached(
                clinic_id=clinic,
                client_id=client,
                occurred_at=datetime.now(UTC),
                stage=ev.ClientStage.ENROLLED,
            )
            output = Output(event, publisher.envelope_for(event))
            after = f"{before or ''}{''.join(tx.fresh)}"
            return Decision(lambda w: w.set(state, after), outputs=[output])

        await work.run(clinic, ["a"], step, marks_of=str(client))
        monkeypatch.setattr(RedisConnection, "send_packed_command", counted)
        await work.run(clinic, ["b", "c"], step, marks_of=str(client))
        monkeypatch.undo()
        assert [s.split(b"\r\n")[2] for s in sent] == [b"WATCH", b"MULTI", b"MULTI"]
        await work.run(clinic, ["c", "d"], step, marks_of=str(client))  # c: handled before
        assert decided == [["a"], ["b", "c"], ["d"]]
        assert await redis_client.get(state) == "abcd"
        found = await topic_messages(
            kafka_bootstrap, topics.PUBLIC_STAGE_REACHED.name, key=str(client), expect=3
        )
        assert [m["headers"].get("ce_clientsequence") for m in found] == ["5", "6", "7"]

        async def fails_now(tx: Transaction) -> Decision[None]:
            async with await tx.watched_reads(state) as reads:
                reads.get(state)
                await reads.execute()
            raise Rejected("the state moved on since")

        assert await work.run(clinic, ["b"], fails_now, marks_of=str(client)) is REPLAYED
        with pytest.raises(Rejected):
            await work.run(clinic, ["e"], fails_now, marks_of=str(client))
        assert await redis_client.get(work.sequence_key(clinic, str(client))) == "7"
    finally:
        await broker.stop()


def clients_shares(
    counters: dict[str, str], inputs: dict[str, str], *, also_read: str | None = None
) -> Step[list[tuple[str, int]]]:
    """A step of several clients' inputs (`inputs`: input id -> client): each client's
    share reads its own counter under WATCH (and `also_read`, another's, to share a read),
    and the step adds one to the counter of each client whose input is not handled yet."""

    def share(client: str) -> Callable[[Transaction], Awaitable[tuple[str, int]]]:
        async def part(tx: Transaction) -> tuple[str, int]:
            keys = [counters[client], *([also_read] if also_read else [])]
            async with await tx.watched_reads(*keys) as reads:
                for key in keys:
                    reads.get(key)
                value, *_ = await reads.execute()
            return client, int(value or 0)

        return part

    async def step(tx: Transaction) -> Decision[list[tuple[str, int]]]:
        read = await tx.gather([share(client) for client in counters])
        fresh = {inputs[i] for i in tx.fresh}
        counts = [(client, value) for client, value in read if client in fresh]

        def write(w: Any) -> None:
            for client, value in counts:
                w.set(counters[client], value + 1)

        return Decision(write, result=counts)

    return step


async def check_clients_shares(work: UnitOfWork, redis: Redis, clinic: str) -> None:
    """Three clients' inputs in one step: each share reads its own, one MULTI writes every
    count and mark; again with one new input, only that one counts; a share reading another
    client's key is refused (SharedRead) and nothing is written."""
    counters = {c: f"tests:{{{clinic}}}:count:{c}" for c in ("a", "b", "c")}
    await redis.set(counters["b"], 5)
    inputs = {"in-a": "a", "in-b": "b", "in-c": "c"}
    done = await work.run(clinic, list(inputs), clients_shares(counters, inputs), marks_of=inputs)
    assert done == [("a", 0), ("b", 5), ("c", 0)]
    assert [await redis.get(counters[c]) for c in "abc"] == ["1", "6", "1"]
    for input_id, client in inputs.items():
        assert await redis.hkeys(work.marks_key(clinic, client)) == [input_id]

    again = {"in-a": "a", "in-b2": "b", "in-c": "c"}
    done = await work.run(clinic, list(again), clients_shares(counters, again), marks_of=again)
    assert done == [("b", 6)]
    assert [await redis.get(counters[c]) for c in "abc"] == ["1", "7", "1"]

    shared = {"in-a3": "a", "in-b3": "b", "in-c3": "c"}
    step = clients_shares(counters, shared, also_read=counters["a"])
    with pytest.raises(SharedRead):
        await work.run(clinic, list(shared), step, marks_of=shared)
    assert [await redis.get(counters[c]) for c in "abc"] == ["1", "7", "1"]
    assert not await redis.hexists(work.marks_key(clinic, "b"), "in-b3")


async def test_several_clients_shares_read_together_and_write_in_one_multi(
    uow: UnitOfWork, redis_client: Redis, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clinic = f"uow-{unique}"
    sent: list[bytes] = []
    real_send = RedisConnection.send_packed_command

    async def counted(self: RedisConnection, command: Any, check_health: bool = True) -> None:
        sent.append(b"".join(command) if isinstance(command, list) else command)
        await real_send(self, command, check_health)

    monkeypatch.setattr(RedisConnection, "send_packed_command", counted)
    await check_clients_shares(uow, redis_client, clinic)
    monkeypatch.undo()
    # The first step's three shares and the marks: one write with its WATCH.
    counters = [f"tests:{{{clinic}}}:count:{c}".encode() for c in "abc"]
    reads = [s for s in sent if b"WATCH" in s and any(c in s for c in counters)]
    assert all(c in reads[0] for c in counters)
    assert uow.marks_key(clinic, "c").encode() in reads[0]
