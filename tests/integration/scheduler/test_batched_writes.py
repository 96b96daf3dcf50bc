"""A batch's writes merged per key (issue 19) write exactly what one write per client does.

`SchedulerStore.save_all` and the lease queue's `*_all` queue one command per key for a
whole batch: a 200-booster step had read 1,400 replies, one per command. Here the same
writes go once client by client and once merged, from the same state, and every key of
the clinic must come out the same.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from chassis.leases import Lease
from services.scheduler.domain import measures
from services.scheduler.domain.schedule import ClientSchedule
from services.scheduler.ledger import booking_key
from services.scheduler.store import (
    SchedulerStore,
    ScheduleWrite,
    appointments_key,
    booster_member,
    key,
)
from tests.builders.scheduler import clinic, completed_course, due_at

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


async def test_merged_writes_leave_every_key_as_writes_one_by_one_do(
    redis_client: Redis, unique: str
) -> None:
    clinic_id = f"batched-{unique}"
    store = SchedulerStore(redis_client)
    writes, leases = _writes(clinic_id)

    async def one_by_one() -> None:
        async with redis_client.pipeline(transaction=True) as p:
            for lease in leases[:3]:
                store.boosters.done(p, lease)
            for lease in leases[3:]:
                store.boosters.retry_at(p, lease, NOW)
            for write in writes:
                store.save(
                    p,
                    write.schedule,
                    same_appointments=write.same_appointments,
                    before=write.before,
                    now=NOW,
                )
            await p.execute()

    merged_commands = 0

    async def merged() -> None:
        nonlocal merged_commands
        async with redis_client.pipeline(transaction=True) as p:
            store.boosters.done_all(p, leases[:3])
            store.boosters.retry_all_at(p, leases[3:], NOW)
            store.save_all(p, writes, now=NOW)
            merged_commands = len(p.command_stack)
            await p.execute()

    names = _names(store, clinic_id, writes)
    await _seed(redis_client, store, clinic_id, writes, leases)
    await one_by_one()
    expected = await _dump(redis_client, names)
    await redis_client.delete(*names)
    await _seed(redis_client, store, clinic_id, writes, leases)
    await merged()

    assert await _dump(redis_client, names) == expected
    # What changed is there: the ended slots trimmed, the measures due and cancelled.
    assert not any("|ended|" in str(value) for value in expected.values())
    assert any(k.endswith("measure-timers:due") for k in expected)
    # One SET per schedule; the 12 other commands (leases, index, trim, timers, clients)
    # touch each key once for the whole batch.
    assert merged_commands <= len(writes) + 12


def _writes(clinic_id: str) -> tuple[list[ScheduleWrite], list[Lease]]:
    """Six clients: three gaining measure timers (replanned), three losing them."""
    calendar = clinic(random.Random(3))
    template = completed_course(calendar, NOW - timedelta(days=14)).model_copy(
        update={"clinic_id": clinic_id}
    )
    writes: list[ScheduleWrite] = []
    for n in range(6):
        plain = due_at(template, uuid.uuid4(), NOW + timedelta(days=30 + n))
        planned = measures.replanned(plain, calendar.policy.measures, calendar.tz, NOW)
        assert measures.pending(planned)
        if n < 3:
            writes.append(ScheduleWrite(planned, plain, same_appointments=n == 0))
        else:
            writes.append(ScheduleWrite(plain, planned))
    leases = [
        Lease(clinic_id, booster_member(w.schedule.client_id, 1), token=n + 1)
        for n, w in enumerate(writes)
    ]
    return writes, leases


async def _seed(
    redis: Redis,
    store: SchedulerStore,
    clinic_id: str,
    writes: list[ScheduleWrite],
    leases: list[Lease],
) -> None:
    """Before: each client's `before` saved, a slot ended and one to come in its booking
    set, and its booster's lease held."""
    async with redis.pipeline(transaction=True) as p:
        for write in writes:
            before: ClientSchedule | None = write.before
            assert before is not None
            store.save(p, before)
            client = str(write.schedule.client_id)
            ended, coming = NOW - timedelta(days=2), NOW + timedelta(days=3)
            p.zadd(
                booking_key(clinic_id, "client", client),
                {
                    f"{_epoch(ended)}|{_epoch(ended + timedelta(hours=1))}|ended|": 1,
                    f"{_epoch(coming)}|{_epoch(coming + timedelta(hours=1))}|coming": 2,
                },
            )
        for lease in leases:
            p.zadd(store.boosters.leased_key(clinic_id), {lease.member: 10**13})
            p.hset(store.boosters.tokens_key(clinic_id), lease.member, lease.token)
        await p.execute()


def _names(store: SchedulerStore, clinic_id: str, writes: list[ScheduleWrite]) -> list[str]:
    """Every key the writes may touch (named, not scanned: the test Redis holds others)."""
    clients = [str(w.schedule.client_id) for w in writes]
    queues = (store.boosters, store.measures)
    return [
        *(store.schedule_key(clinic_id, w.schedule.client_id) for w in writes),
        *(booking_key(clinic_id, "client", client) for client in clients),
        *(name for q in queues for name in (q.due_key(clinic_id), q.leased_key(clinic_id))),
        *(q.tokens_key(clinic_id) for q in queues),
        appointments_key(clinic_id),
        key(clinic_id, "clients"),
    ]


async def _dump(redis: Redis, names: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in names:
        kind = await redis.type(name)
        if kind == "string":
            found[name] = await redis.get(name)
        elif kind == "hash":
            found[name] = await redis.hgetall(name)
        elif kind == "set":
            found[name] = sorted(await redis.smembers(name))
        elif kind == "zset":
            found[name] = await redis.zrange(name, 0, -1, withscores=True)
        elif kind != "none":
            raise AssertionError(f"{name}: a {kind} the test does not read")
    return found


def _epoch(at: datetime) -> int:
    return int(at.timestamp())
