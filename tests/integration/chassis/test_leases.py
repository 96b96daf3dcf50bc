"""The lease queue on real Redis: one holder per member at a time, an expired lease taken
over with a higher token, the old holder fenced out of its write, and retry_at putting a
member back due; then a state machine against a small reference model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from chassis.events import EventPublisher
from chassis.leases import Lease, LeaseQueue
from chassis.unit_of_work import Decision, Step, Transaction, UnitOfWork

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
NAME = "tests-leases"
LONG_MS = 60_000


async def scheduled(
    redis: Redis, queue: LeaseQueue, clinic: str, members: Iterable[str], at: datetime
) -> None:
    async with redis.pipeline(transaction=True) as p:
        for member in members:
            queue.schedule(p, clinic, member, at)
        await p.execute()


def finishing(
    queue: LeaseQueue, lease: Lease, effect: str | None = None, again_at: datetime | None = None
) -> Step[bool]:
    """A holder's write: fenced; its effect, then done (or due again at `again_at`)."""

    async def step(tx: Transaction) -> Decision[bool]:
        if not await queue.fence(tx, lease):
            return Decision(lambda p: None, result=False)

        def write(p: Any) -> None:
            if effect is not None:
                p.rpush(effect, lease.token)
            if again_at is None:
                queue.done(p, lease)
            else:
                queue.retry_at(p, lease, again_at)

        return Decision(write, result=True)

    return step


async def claim_once_expired(queue: LeaseQueue, clinic: str) -> list[Lease]:
    """Claim until an expired lease is taken over (a bounded wait on Redis's clock)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if claimed := await queue.claim(clinic, T0, LONG_MS, 10):
            return claimed
        await asyncio.sleep(0.01)
    raise AssertionError("the lease never expired")


async def test_two_claimers_never_both_hold_a_member(
    redis_client: Redis, redis_url: str, unique: str
) -> None:
    clinic = f"leases-{unique}"
    queue = LeaseQueue(redis_client, NAME)
    members = [f"m{i:02}" for i in range(60)]
    await scheduled(redis_client, queue, clinic, members, T0)
    other_client = Redis.from_url(redis_url, decode_responses=True)
    other = LeaseQueue(other_client, NAME)  # another replica, on its own connections
    try:
        batches = await asyncio.gather(
            *(q.claim(clinic, T0, LONG_MS, 7) for q in [queue, other] * 6)
        )
    finally:
        await other_client.aclose()
    claimed = [lease for batch in batches for lease in batch]
    assert sorted(lease.member for lease in claimed) == members
    assert len({lease.token for lease in claimed}) == len(claimed)
    assert await queue.due(clinic) == 0
    assert await queue.claim(clinic, T0 + timedelta(days=1), LONG_MS, 100) == []


async def test_a_member_scheduled_again_under_a_live_lease_waits_for_its_holder(
    uow: UnitOfWork, redis_client: Redis, unique: str
) -> None:
    clinic = f"leases-{unique}"
    queue = LeaseQueue(redis_client, NAME)
    await scheduled(redis_client, queue, clinic, ["m"], T0)
    [first] = await queue.claim(clinic, T0, LONG_MS, 5)
    await scheduled(redis_client, queue, clinic, ["m"], T0)
    assert await queue.claim(clinic, T0, LONG_MS, 5) == []
    assert await queue.still_held(first)
    assert await uow.run(clinic, [], finishing(queue, first)) is True
    [second] = await queue.claim(clinic, T0, LONG_MS, 5)
    assert (second.member, second.token > first.token) == ("m", True)


async def test_an_expired_lease_is_taken_over_and_the_old_holder_writes_nothing(
    uow: UnitOfWork, redis_client: Redis, unique: str
) -> None:
    clinic = f"leases-{unique}"
    queue = LeaseQueue(redis_client, NAME)
    effect = f"tests:{{{clinic}}}:effect"
    await scheduled(redis_client, queue, clinic, ["m"], T0)
    [old] = await queue.claim(clinic, T0, 150, 1)
    assert await queue.still_held(old)

    [new] = await claim_once_expired(queue, clinic)  # the old holder stalled past its lease
    assert (new.member, new.token > old.token) == ("m", True)
    assert not await queue.still_held(old)
    assert not await queue.renew(old, LONG_MS)
    assert not await queue.let_go(old)
    assert await queue.still_held(new)

    assert await uow.run(clinic, [], finishing(queue, old, effect)) is False
    assert await redis_client.lrange(effect, 0, -1) == []
    assert await queue.still_held(new)
    assert await uow.run(clinic, [], finishing(queue, new, effect)) is True
    assert await redis_client.lrange(effect, 0, -1) == [str(new.token)]
    assert not await queue.still_held(new)
    assert await redis_client.exists(queue.leased_key(clinic), queue.due_key(clinic)) == 0


async def test_a_step_failing_for_the_infrastructure_hands_its_leases_back_at_once(
    uow: UnitOfWork, redis_client: Redis, unique: str
) -> None:
    """A timer round whose step failed as Redis failed over held its members for the whole
    lease (30 s: ten clinic days on the cluster demo's clock, where a booster due then was
    never announced by the run's end). Handed back, the next claim takes them at once;
    a member whose step went through stays done, and a fault that would fail again at
    once (not the infrastructure's) leaves the lease to run out."""
    clinic = f"leases-{unique}"
    queue = LeaseQueue(redis_client, NAME)
    effect = f"tests:{{{clinic}}}:effect"
    await scheduled(redis_client, queue, clinic, ["a", "b"], T0)
    leases = await queue.claim(clinic, T0, LONG_MS, 10)
    done = next(lease for lease in leases if lease.member == "a")
    assert await uow.run(clinic, [], finishing(queue, done, effect)) is True

    with pytest.raises(RedisConnectionError):
        async with queue.handed_back_on_failure(leases):
            raise RedisConnectionError("the primary went away mid-step")

    [again] = await queue.claim(clinic, T0, LONG_MS, 10)  # at once, not in a minute
    assert again.member == "b"
    assert again.token > max(lease.token for lease in leases)
    with pytest.raises(ValueError, match="a bad member"):
        async with queue.handed_back_on_failure([again]):
            raise ValueError("a bad member")
    assert await queue.claim(clinic, T0, LONG_MS, 10) == []  # still leased
    assert await queue.still_held(again)


async def test_a_hand_back_that_fails_too_leaves_the_step_s_own_error_and_the_lease(
    redis_client: Redis, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clinic = f"leases-{unique}"
    queue = LeaseQueue(redis_client, NAME)
    await scheduled(redis_client, queue, clinic, ["a"], T0)
    leases = await queue.claim(clinic, T0, LONG_MS, 10)
    monkeypatch.setattr("chassis.leases.HAND_BACK_PAUSE_S", 0.0)

    async def still_failing_over(**_: Any) -> int:
        raise OSError("the node is still away")  # not a RedisError: a cluster's may not be

    monkeypatch.setattr(queue, "_end_now", still_failing_over)
    with pytest.raises(RedisConnectionError, match="mid-step"):
        async with queue.handed_back_on_failure(leases):
            raise RedisConnectionError("the primary went away mid-step")
    assert await queue.still_held(leases[0])  # left to run out


async def test_a_claim_between_fence_and_write_fails_the_write_and_the_rerun_finds_it_lost(
    uow: UnitOfWork, redis_client: Redis, unique: str
) -> None:
    clinic = f"leases-{unique}"
    queue = LeaseQueue(redis_client, NAME)
    effect = f"tests:{{{clinic}}}:effect"
    await scheduled(redis_client, queue, clinic, ["m"], T0)
    [old] = await queue.claim(clinic, T0, LONG_MS, 1)
    fenced: list[bool] = []
    taken_over: list[Lease] = []

    async def step(tx: Transaction) -> Decision[bool]:
        fenced.append(await queue.fence(tx, old))
        if not taken_over:  # another replica, after the fence: the lease ran out meanwhile
            await redis_client.zadd(queue.leased_key(clinic), {"m": 0})
            taken_over.extend(await queue.claim(clinic, T0, LONG_MS, 1))
        if not fenced[-1]:
            return Decision(lambda p: None, result=False)
        return Decision(finishing_write, result=True)

    def finishing_write(p: Any) -> None:
        p.rpush(effect, old.token)
        queue.done(p, old)

    assert await uow.run(clinic, [], step) is False
    assert fenced == [True, False]
    assert await redis_client.lrange(effect, 0, -1) == []
    assert await queue.still_held(taken_over[0])


async def test_retry_at_puts_the_member_back_due_at_its_time(
    uow: UnitOfWork, redis_client: Redis, unique: str
) -> None:
    clinic = f"leases-{unique}"
    queue = LeaseQueue(redis_client, NAME)
    await scheduled(redis_client, queue, clinic, ["m"], T0)
    [lease] = await queue.claim(clinic, T0, LONG_MS, 1)
    later = T0 + timedelta(hours=1)
    assert await uow.run(clinic, [], finishing(queue, lease, again_at=later)) is True
    assert (await queue.due(clinic), await queue.next_due(clinic)) == (1, later)
    assert not await queue.still_held(lease)
    assert await queue.claim(clinic, later - timedelta(seconds=1), LONG_MS, 1) == []
    [again] = await queue.claim(clinic, later, LONG_MS, 1)
    assert (again.member, again.token > lease.token) == ("m", True)
    assert await queue.next_due(clinic) is None


async def test_cancel_fences_out_the_holder(
    uow: UnitOfWork, redis_client: Redis, unique: str
) -> None:
    clinic = f"leases-{unique}"
    queue = LeaseQueue(redis_client, NAME)
    await scheduled(redis_client, queue, clinic, ["m"], T0)
    [lease] = await queue.claim(clinic, T0, LONG_MS, 1)
    async with redis_client.pipeline(transaction=True) as p:
        queue.cancel(p, clinic, lease.member)
        await p.execute()
    assert not await queue.still_held(lease)
    assert await uow.run(clinic, [], finishing(queue, lease)) is False


async def test_a_holder_with_nothing_to_write_lets_its_lease_go(
    redis_client: Redis, unique: str
) -> None:
    clinic = f"leases-{unique}"
    queue = LeaseQueue(redis_client, NAME)
    await scheduled(redis_client, queue, clinic, ["m"], T0)
    [lease] = await queue.claim(clinic, T0, LONG_MS, 1)
    assert await queue.let_go(lease)
    assert not await queue.still_held(lease)
    assert await redis_client.hget(queue.tokens_key(clinic), "m") is None
    assert await queue.claim(clinic, T0, LONG_MS, 1) == []


# --- the state machine ------------------------------------------------------------------

MEMBERS = ("a", "b", "c")


class LeaseModel(RuleBasedStateMachine):
    """schedule / advance / claim / expire / done / retry / cancel, against a model:
    what is due (member -> minute), what is leased (member -> token), which leases
    expired, and the last token given."""

    redis_url = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.redis = Redis.from_url(self.redis_url, decode_responses=True)
        self.queue = LeaseQueue(self.redis, NAME)
        # No outputs here: the unit of work never reaches its publisher.
        self.uow = UnitOfWork(self.redis, NAME, cast(EventPublisher, None))
        self.clinic = f"model-{id(self)}-{time.monotonic_ns()}"
        self.now = 0
        self.due: dict[str, int] = {}
        self.leased: dict[str, int] = {}
        self.expired: set[str] = set()
        self.sequence = 0
        self.leases: list[Lease] = []

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        self.run(self.redis.aclose())
        self.loop.close()

    @staticmethod
    def at(minute: int) -> datetime:
        return T0 + timedelta(minutes=minute)

    @rule(member=st.sampled_from(MEMBERS), offset=st.integers(0, 3))
    def schedule(self, member: str, offset: int) -> None:
        self.run(
            scheduled(self.redis, self.queue, self.clinic, [member], self.at(self.now + offset))
        )
        self.due[member] = self.now + offset

    @rule(minutes=st.integers(1, 3))
    def advance(self, minutes: int) -> None:
        self.now += minutes

    @rule(limit=st.integers(1, 3))
    def claim(self, limit: int) -> None:
        expected = sorted(self.expired)[:limit]
        live = set(self.leased) - self.expired
        ready = sorted(
            (minute, m) for m, minute in self.due.items() if minute <= self.now and m not in live
        )
        expected += [m for _, m in ready if m not in expected][: limit - len(expected)]
        claimed = self.run(self.queue.claim(self.clinic, self.at(self.now), LONG_MS, limit))
        assert [lease.member for lease in claimed] == expected
        for lease in claimed:
            self.sequence += 1
            assert lease.token == self.sequence
            self.due.pop(lease.member, None)
            self.leased[lease.member] = lease.token
            self.expired.discard(lease.member)
        self.leases += claimed

    @precondition(lambda self: set(self.leased) - self.expired)
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        member = data.draw(st.sampled_from(sorted(set(self.leased) - self.expired)))
        self.run(self.redis.zadd(self.queue.leased_key(self.clinic), {member: 0}, xx=True))
        self.expired.add(member)

    def holds(self, lease: Lease) -> bool:
        return self.leased.get(lease.member) == lease.token

    @precondition(lambda self: self.leases)
    @rule(data=st.data(), again=st.none() | st.integers(0, 3))
    def finish(self, data: st.DataObject, again: int | None) -> None:
        lease = data.draw(st.sampled_from(self.leases[-8:]))
        again_at = None if again is None else self.at(self.now + again)
        written = self.run(
            self.uow.run(self.clinic, [], finishing(self.queue, lease, again_at=again_at))
        )
        assert written is self.holds(lease)
        if written:
            del self.leased[lease.member]
            self.expired.discard(lease.member)
            if again is not None:
                self.due[lease.member] = self.now + again

    @rule(member=st.sampled_from(MEMBERS))
    def cancel(self, member: str) -> None:
        async def cancelled() -> None:
            async with self.redis.pipeline(transaction=True) as p:
                self.queue.cancel(p, self.clinic, member)
                await p.execute()

        self.run(cancelled())
        self.due.pop(member, None)
        self.leased.pop(member, None)
        self.expired.discard(member)

    @invariant()
    def redis_agrees(self) -> None:
        async def read() -> tuple[Any, ...]:
            async with self.redis.pipeline(transaction=False) as reads:
                reads.zrange(self.queue.due_key(self.clinic), 0, -1, withscores=True)
                reads.zrange(self.queue.leased_key(self.clinic), 0, -1)
                reads.hgetall(self.queue.tokens_key(self.clinic))
                due, leased, tokens = await reads.execute()
            held = [await self.queue.still_held(lease) for lease in self.leases[-8:]]
            return due, leased, tokens, held

        due, leased, tokens, held = self.run(read())
        assert dict(due) == {m: self.at(minute).timestamp() for m, minute in self.due.items()}
        assert set(leased) == set(self.leased)
        assert {m: int(t) for m, t in tokens.items() if m in self.leased} == self.leased
        assert held == [
            self.holds(lease) and lease.member not in self.expired for lease in self.leases[-8:]
        ]


def test_the_queue_behaves_as_its_model(redis_url: str) -> None:
    LeaseModel.redis_url = redis_url
    run_state_machine_as_test(
        LeaseModel,
        settings=settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
