"""Issue 14, fault 2: a duplicate delivery handled concurrently records and publishes nothing new.

The effect log was asked whether the event was handled before the client lock
was taken, so a second delivery (a zombie consumer after a rebalance) passed the
check too, published its own outputs and overwrote the first handler's record.
Since issue 15 the handled mark is watched from before the step's reads to its
write (chassis.unit_of_work): of two deliveries one writes, the other's write
fails and its step, run again, finds the mark.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from shared import events as ev
from shared import topics
from tests.helpers import topic_messages
from tests.integration.scheduler.world import world

pytestmark = pytest.mark.integration


def enrolment(clinic: str, now: datetime) -> ev.ClientEnrolled:
    return ev.ClientEnrolled(
        clinic_id=clinic,
        client_id=uuid.uuid4(),
        occurred_at=now,
        consent_recorded_at=now,
        phq9_total=14,
        phq9_band=ev.Phq9Band.MODERATE,
        gad7_total=9,
    )


async def test_two_concurrent_deliveries_of_one_enrolment_publish_one_set_of_outputs(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        event = enrolment(w.clinic, w.clock.now())
        envelope = w.publisher.envelope_for(event)
        one, other = w.scheduler, w.replica()

        await asyncio.gather(
            one.on_client_enrolled(event, envelope), other.on_client_enrolled(event, envelope)
        )

        client = str(event.client_id)
        record = await w.redis.hget(f"scheduler:{{{w.clinic}}}:marks:{client}", envelope.id)
        stages = await topic_messages(
            kafka_bootstrap, topics.PUBLIC_STAGE_REACHED.name, key=client, expect=2, wait_s=5
        )
        courses = await topic_messages(kafka_bootstrap, topics.COURSE_BOOKED.name, key=client)
    assert [m["value"]["stage"] for m in stages] == ["enrolled", "course_booked"]
    assert len(courses) == 1
    assert record is not None  # the handled mark, in the client's marks
