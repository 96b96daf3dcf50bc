"""A clinics file caught half-written never dead-letters good messages (issue 14, fault 7)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from chassis.clock import FrozenClock
from chassis.events import EventPublisher
from shared import topics
from tests.helpers import topic_messages
from tests.integration.scheduler.test_scheduler_service import enrol

pytestmark = pytest.mark.integration


def _half_write(path: Path) -> str:
    """Cut the file in half, as an editor caught mid-save would leave it; the whole text."""
    whole = path.read_text()
    path.write_text(whole[: len(whole) // 2])
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    return whole


async def test_a_half_written_clinics_file_dead_letters_nothing(
    scheduler: httpx.AsyncClient,
    intake_events: EventPublisher,
    clock: FrozenClock,
    kafka_bootstrap: str,
    clinics_file: Path,
) -> None:
    first, _ = await enrol(intake_events, clock)
    assert await topic_messages(kafka_bootstrap, topics.COURSE_BOOKED.name, key=first, wait_s=20), (
        "the scheduler books with a good file"
    )

    whole = _half_write(clinics_file)
    try:
        second, _ = await enrol(intake_events, clock)
        booked = await topic_messages(
            kafka_bootstrap, topics.COURSE_BOOKED.name, key=second, wait_s=20
        )
        dead = await topic_messages(
            kafka_bootstrap, topics.CLIENT_ENROLLED.dead_letters, key=second, wait_s=2, expect=0
        )
    finally:
        clinics_file.write_text(whole)  # noqa: ASYNC240 - a test's one small write
    assert dead == [], "a configuration mistake sent a good message to the DLQ"
    assert len(booked) == 1, "the last good configuration keeps serving"
