"""The measure records read back from Redis as the recorder leaves them (hashes written here)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from services.scheduler.measure_log import MeasureLog
from services.scheduler.measure_log import log_key as measures_key
from shared.events import MeasurePoint

pytestmark = pytest.mark.integration

AUTHORED = datetime(2027, 3, 1, 9, tzinfo=UTC)


def record(**fields: object) -> str:
    base = {
        "measure_id": None,
        "point": None,
        "course_id": None,
        "authored": AUTHORED.isoformat(),
        "source": "link",
        "phq9": None,
        "gad7": None,
    }
    return json.dumps({**base, **fields})


async def test_a_clients_hash_reads_back_as_measures_oldest_first(
    redis_client: Redis, unique: str
) -> None:
    clinic, client, course = f"records-{unique}", uuid.uuid4(), uuid.uuid4()
    measure = uuid.uuid4()
    await redis_client.hset(
        measures_key(clinic, client),
        mapping={
            "evt-2": record(
                measure_id=str(measure),
                point="end_of_course",
                course_id=str(course),
                authored="2027-04-20T08:00:00+00:00",
                phq9=6,
                gad7=5,
            ),
            "enrolment:evt-1": record(point="enrolment", source="staff", phq9=17, gad7=12),
            "evt-3": record(authored="2027-05-20T08:00:00Z", gad7=4),
        },
    )
    found = await MeasureLog(redis_client).measures_of(clinic, client)
    assert [m.key for m in found] == ["enrolment:evt-1", "evt-2", "evt-3"]
    first, second, third = found
    assert (first.point, first.source, first.phq9, first.gad7) == (
        MeasurePoint.ENROLMENT,
        "staff",
        17,
        12,
    )
    assert (second.point, second.course_id, second.measure_id) == (
        MeasurePoint.END_OF_COURSE,
        course,
        measure,
    )
    assert second.authored == datetime(2027, 4, 20, 8, tzinfo=UTC)
    assert (third.point, third.phq9, third.gad7) == (None, None, 4)


async def test_an_unreadable_record_is_left_out_and_the_rest_read(
    redis_client: Redis, unique: str
) -> None:
    clinic, client = f"records-{unique}", uuid.uuid4()
    await redis_client.hset(
        measures_key(clinic, client),
        mapping={
            "evt-good": record(phq9=9),
            "evt-no-time": json.dumps({"phq9": 3}),
            "evt-not-json": "{",
            "evt-naive-time": record(authored="2027-03-01T09:00:00"),
        },
    )
    found = await MeasureLog(redis_client).measures_of(clinic, client)
    assert [(m.key, m.phq9) for m in found] == [("evt-good", 9)]


async def test_many_clients_are_read_at_once_and_a_client_without_measures_has_none(
    redis_client: Redis, unique: str
) -> None:
    clinic = f"records-{unique}"
    clients = [uuid.uuid4() for _ in range(3)]
    for n, client in enumerate(clients[:2]):
        await redis_client.hset(measures_key(clinic, client), "evt", record(phq9=n + 10))
    found = await MeasureLog(redis_client).measures_of_many(clinic, clients)
    assert [[m.phq9 for m in found[c]] for c in clients] == [[10], [11], []]
    assert measures_key(clinic, clients[0]) == f"{{{clinic}}}:measures:{clients[0]}"
