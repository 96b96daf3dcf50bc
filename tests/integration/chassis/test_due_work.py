"""The due index on real Redis: a round looks only at clinics with something due, a lost
hint is found by the sweep, replicas split the buckets and take a stopped one's over,
and with two replicas at once every due item fires exactly once (counted from the
effects the items' write steps leave, not from the index)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from chassis.buckets import BucketOwners
from chassis.clock import SystemClock
from chassis.due_index import DueIndex
from chassis.due_work import DueWork
from chassis.leases import Lease, LeaseQueue
from chassis.unit_of_work import Decision, Step, Transaction, UnitOfWork

pytestmark = pytest.mark.integration

BUCKETS = 8


def rig(
    redis: Redis,
    uow: UnitOfWork,
    unique: str,
    clinic_ids: Callable[[], Iterable[str]] = list,
    *,
    sweep_s: float = 3600.0,
    lease_ms: int = 5_000,
) -> tuple[LeaseQueue, DueWork]:
    """A lease queue of its own, its due index told to `uow`, and one replica's work."""
    queue = LeaseQueue(redis, f"tests-due-{unique}")
    index = DueIndex(redis, f"tests-{unique}", BUCKETS, [queue.due_key])
    uow.index_due(index)
    clock = SystemClock()

    async def next_due(clinic_id: str) -> float | None:
        return await queue.earliest(clinic_id, clock)

    owners = BucketOwners(redis, index.kind, BUCKETS, lease_ms)
    return queue, DueWork(index, owners, clinic_ids, next_due, sweep_s)


def replica_of(work: DueWork, redis: Redis, lease_ms: int = 5_000) -> DueWork:
    """Another replica on the same index."""
    owners = BucketOwners(redis, work.index.kind, BUCKETS, lease_ms)
    return DueWork(work.index, owners, work.clinic_ids, work.next_due, work.sweep_s)


async def schedule(
    uow: UnitOfWork, queue: LeaseQueue, clinic: str, at: datetime, member: str = "item"
) -> None:
    async def step(tx: Transaction) -> Decision[None]:
        return Decision(lambda p: queue.schedule(p, clinic, member, at))

    await uow.run(clinic, [], step)


def effects_key(unique: str, clinic: str) -> str:
    return f"tests-due-{unique}:{{{clinic}}}:effects"


async def one_round(work: DueWork, queue: LeaseQueue, uow: UnitOfWork, unique: str) -> list[str]:
    """A timer round as the services run it: claim in each clinic found, the effect and the
    lease done in one write step (fenced), then settle. The clinics looked at."""
    now = datetime.now(UTC)
    clinics = await work.clinics(now.timestamp())
    for clinic in clinics:
        leases = await queue.claim(clinic, now, 30_000, 50)
        if leases:
            await uow.run(clinic, [], _fire(queue, leases, effects_key(unique, clinic)))
        await work.settle(clinic)
    return clinics


def _fire(queue: LeaseQueue, leases: list[Lease], effects: str) -> Step[None]:
    async def step(tx: Transaction) -> Decision[None]:
        fenced = await queue.fence_all(tx, leases)
        held = [lease for lease, ok in zip(leases, fenced, strict=True) if ok]

        def write(p: Pipeline) -> None:
            for lease in held:
                p.rpush(effects, lease.member)
                queue.done(p, lease)

        return Decision(write)

    return step


async def test_a_round_fires_the_three_clinics_with_something_due_and_looks_at_no_other(
    uow: UnitOfWork, redis_client: Redis, unique: str
) -> None:
    clinics = [f"{unique}-c{n}" for n in range(1000)]
    queue, work = rig(redis_client, uow, unique)
    now = datetime.now(UTC)
    for clinic in clinics:  # most clinics have something due, months from now
        if int(clinic.rsplit("c", 1)[1]) % 3 == 0:
            await schedule(uow, queue, clinic, now + timedelta(days=90))
    due = [clinics[1], clinics[501], clinics[999]]  # 501 and 999 also have a far one
    for clinic in due:
        await schedule(uow, queue, clinic, now - timedelta(seconds=1), "due")

    looked = await one_round(work, queue, uow, unique)

    assert sorted(looked) == sorted(due)
    for clinic in clinics:
        fired = await redis_client.lrange(effects_key(unique, clinic), 0, -1)
        assert len(fired) == (1 if clinic in due else 0), clinic
    # Settled to their next time (or out): the next round looks at none.
    assert await one_round(work, queue, uow, unique) == []
    bucket = work.index.key(work.index.bucket(clinics[501]))
    assert await redis_client.zscore(bucket, clinics[501]) == pytest.approx(
        (now + timedelta(days=90)).timestamp()
    )
    assert (
        await redis_client.zscore(work.index.key(work.index.bucket(clinics[1])), clinics[1]) is None
    )


async def test_a_lost_hint_is_found_by_the_sweep(
    uow: UnitOfWork, redis_client: Redis, unique: str
) -> None:
    clinics = [f"{unique}-c{n}" for n in range(40)]
    queue, work = rig(redis_client, uow, unique, lambda: clinics, sweep_s=0.5)
    await one_round(work, queue, uow, unique)  # the sweep starts
    lost = clinics[17]
    async with redis_client.pipeline(transaction=True) as p:  # the writer died before its hint
        queue.schedule(p, lost, "orphan", datetime.now(UTC) - timedelta(seconds=1))
        await p.execute()
    deadline = time.monotonic() + 3
    while not await redis_client.llen(effects_key(unique, lost)):
        assert time.monotonic() < deadline, "the sweep never found the item"
        looked = await one_round(work, queue, uow, unique)
        assert len(looked) <= 3, "the sweep came as a burst, not a share per round"
        await asyncio.sleep(0.02)
    assert await redis_client.lrange(effects_key(unique, lost), 0, -1) == ["orphan"]


async def test_two_replicas_split_the_buckets_and_one_takes_the_others_after_it_stops(
    uow: UnitOfWork, redis_client: Redis, unique: str
) -> None:
    _, first = rig(redis_client, uow, unique, lease_ms=300)
    second = replica_of(first, redis_client, lease_ms=300)
    assert len(await first.owners.mine()) == BUCKETS  # alone at first: all of them

    deadline = time.monotonic() + 3
    while True:
        a, b = await first.owners.mine(), await second.owners.mine()
        if len(a) == len(b) == BUCKETS // 2:
            break
        assert not a & b, "a bucket owned by two replicas"
        assert time.monotonic() < deadline, f"never split: {a} {b}"
        await asyncio.sleep(0.05)
    assert a | b == set(range(BUCKETS))

    # `first` stops without a word (killed): its leases and heartbeat run out.
    started = time.monotonic()
    while len(await second.owners.mine()) < BUCKETS:
        assert time.monotonic() - started < 3, "the stopped replica's buckets were never taken"
        await asyncio.sleep(0.05)
    assert time.monotonic() - started >= 0.2, "live leases were taken"


async def test_with_two_replicas_at_once_every_due_item_fires_exactly_once(
    uow: UnitOfWork, redis_client: Redis, unique: str
) -> None:
    clinics = [f"{unique}-c{n}" for n in range(30)]
    queue, first = rig(redis_client, uow, unique, lambda: clinics, sweep_s=0.3, lease_ms=300)
    second = replica_of(first, redis_client, lease_ms=300)
    start = datetime.now(UTC)
    items: dict[str, int] = Counter()
    for n in range(150):  # due over the next 1.5 s, a fifth at once
        clinic = clinics[n % len(clinics)]
        at = start + timedelta(milliseconds=10 * (n // 5 * 5))
        await schedule(uow, queue, clinic, at, f"item-{n}")
        items[clinic] += 1

    async def replica(work: DueWork) -> int:
        looked = 0
        while time.monotonic() < stop_at:
            looked += len(await one_round(work, queue, uow, unique))
            await asyncio.sleep(0.01)
        return looked

    stop_at = time.monotonic() + 3.0
    looked = await asyncio.gather(replica(first), replica(second))

    fired = {c: await redis_client.lrange(effects_key(unique, c), 0, -1) for c in clinics}
    for clinic in clinics:
        assert len(fired[clinic]) == items[clinic], clinic
        assert len(set(fired[clinic])) == items[clinic], f"{clinic} fired an item twice"
    assert all(looked), "one replica did all the work"
    assert not (first.owners.owned.keys() & second.owners.owned.keys())
