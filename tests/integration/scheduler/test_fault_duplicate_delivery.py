"""Issue 14, fault 2: a duplicate delivery handled concurrently records and publishes nothing new.

The effect log was asked whether the event was handled before the client lock
was taken, so a second delivery (a zombie consumer after a rebalance) passed the
check too, published its own outputs and overwrote the first handler's record.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from shared import events as ev
from shared import topics
from tests.helpers import topic_messages
from tests.integration.scheduler.world import world

pytestmark = pytest.mark.integration


async def test_two_concurrent_deliveries_of_one_enrolment_publish_one_set_of_outputs(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        event = ev.ClientEnrolled(
            clinic_id=w.clinic,
            client_id=uuid.uuid4(),
            occurred_at=w.clock.now(),
            consent_recorded_at=w.clock.now(),
            phq9_total=14,
            phq9_band=ev.Phq9Band.MODERATE,
            gad7_total=9,
        )
        envelope = w.publisher.envelope_for(event)
        one, other = w.scheduler, w.replica()

        await asyncio.gather(
            one.on_client_enrolled(event, envelope), other.on_client_enrolled(event, envelope)
        )

        client = str(event.client_id)
        record = await w.redis.get(f"scheduler:{{{w.clinic}}}:handled:{envelope.id}")
        stages = await topic_messages(
            kafka_bootstrap, topics.PUBLIC_STAGE_REACHED.name, key=client, expect=2, wait_s=5
        )
        courses = await topic_messages(kafka_bootstrap, topics.COURSE_BOOKED.name, key=client)
    assert [m["value"]["stage"] for m in stages] == ["enrolled", "course_booked"]
    assert len(courses) == 1
    assert record is not None
    recorded = [item["topic"] for item in json.loads(record)]
    assert topics.COURSE_BOOKED.name in recorded  # the first handler's outputs, kept
