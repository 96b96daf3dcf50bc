"""A change reads its clinic's calendar with its schedule (issue 19: a round trip less per
consultation request), and each change plans on the calendar as saved when it runs."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.connection import Connection as RedisConnection

from shared import events as ev
from tests.integration.scheduler.world import World, world

pytestmark = pytest.mark.integration

CONTACT = ev.Contact(name="Test Client", email="client@example.org")


async def closed_until(w: World, last_closed: date) -> None:
    """The clinic's calendar, saved through the store as the API saves it: closed from
    today through `last_closed`."""
    calendar = await w.scheduler.calendar(w.clinic)
    today = w.clock.now().date()
    closed = frozenset(today + timedelta(days=n) for n in range((last_closed - today).days + 1))
    await w.scheduler.store.save_calendar(calendar.model_copy(update={"closures": closed}))


async def requested(w: World) -> date:
    """A new client asks for a consultation at any time; the local date it is booked on."""
    client = uuid.uuid4()
    event = ev.ConsultationRequested(
        clinic_id=w.clinic, client_id=client, occurred_at=w.clock.now(), contact=CONTACT
    )
    await w.scheduler.on_consultation_requested(event, w.publisher.envelope_for(event))
    booked = (await w.load(client)).consultation
    assert booked is not None
    return booked.starts_at.date()


async def test_a_request_reads_the_calendar_with_its_schedule_and_plans_on_the_latest(
    kafka_bootstrap: str,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        calendar = f"sched:{{{w.clinic}}}:calendar".encode()
        schedules = f"sched:{{{w.clinic}}}:client:".encode()
        reads: list[bool] = []  # per write naming the calendar: whether a schedule's too
        real_send = RedisConnection.send_packed_command

        async def counted(self: RedisConnection, command: Any, check_health: bool = True) -> None:
            packed = b"".join(command) if isinstance(command, list) else command
            if calendar in packed:
                reads.append(schedules in packed)
            await real_send(self, command, check_health)

        first_week = w.clock.now().date() + timedelta(days=4)  # Monday to Friday
        await closed_until(w, first_week)
        monkeypatch.setattr(RedisConnection, "send_packed_command", counted)
        assert await requested(w) > first_week
        assert reads == [True]

        two_weeks = first_week + timedelta(weeks=1)
        await closed_until(w, two_weeks)  # saved between two requests: the next sees it
        reads.clear()
        assert await requested(w) > two_weeks
        assert reads == [True]
