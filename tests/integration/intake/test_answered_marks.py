"""A used-up measure link on real Redis: one small hash per client (issue 18), and the
marks written before it, one key per measure, still count (a link used before an
upgrade stays used)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from services.intake.store import MEASURE_ANSWERED_TTL_S, IntakeStore, MeasureMark, answered_key

pytestmark = pytest.mark.integration


async def test_marks_are_one_hash_per_client_and_older_marks_still_count(
    redis_client: Redis, unique: str
) -> None:
    store, clinic, client = IntakeStore(redis_client), f"marks-{unique}", uuid.uuid4()
    first, second, older = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    when = datetime(2026, 3, 30, 16, 35, tzinfo=UTC)
    async with redis_client.pipeline(transaction=True) as tx:
        store.mark_measure_answered(tx, clinic, client, first, MeasureMark(when, "link"))
        store.mark_measure_answered(tx, clinic, client, second, MeasureMark(when, "staff"))
        await tx.execute()

    marks = answered_key(clinic, client)
    assert await redis_client.hlen(marks) == 2
    assert 0 < await redis_client.ttl(marks) <= MEASURE_ANSWERED_TTL_S
    assert await store.measure_answered(clinic, client, first) == MeasureMark(when, "link")
    assert await store.measure_answered(clinic, client, second) == MeasureMark(when, "staff")
    assert await store.measure_answered(clinic, uuid.uuid4(), first) is None  # another's

    legacy = f"intake:{{{clinic}}}:measure:{client}:{older}:answered"
    await redis_client.set(legacy, json.dumps({"answered_at": when.isoformat(), "source": "link"}))
    assert await store.measure_answered(clinic, client, older) == MeasureMark(when, "link")
    assert await store.measure_answered(clinic, client, uuid.uuid4()) is None
