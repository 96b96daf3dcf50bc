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
from redis.asyncio import Redis

from chassis.outbox import output_ids
from services.scheduler.domain.schedule import ClientSchedule
from services.scheduler.store import SchedulerStore
from shared import events as ev
from shared import topics
from tests.helpers import topic_messages
from tests.integration.scheduler.world import ledger_of, world

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
        record = await w.redis.get(f"scheduler:{{{w.clinic}}}:handled:{envelope.id}")
        stages = await topic_messages(
            kafka_bootstrap, topics.PUBLIC_STAGE_REACHED.name, key=client, expect=2, wait_s=5
        )
        courses = await topic_messages(kafka_bootstrap, topics.COURSE_BOOKED.name, key=client)
    assert [m["value"]["stage"] for m in stages] == ["enrolled", "course_booked"]
    assert len(courses) == 1
    assert record is not None
    # The mark lists the outputs that were published: the one course on the topic.
    assert courses[0]["headers"]["ce_id"] in output_ids(record)


class SlowLoads(SchedulerStore):
    """Real Redis; reading a schedule just takes long enough for another delivery to
    be handled meanwhile."""

    def __init__(self, redis: Redis, delay_s: float) -> None:
        super().__init__(redis)
        self.delay_s = delay_s
        self.loading = asyncio.Event()

    async def load(self, clinic_id: str, client_id: uuid.UUID) -> ClientSchedule | None:
        schedule = await super().load(clinic_id, client_id)
        self.loading.set()
        await asyncio.sleep(self.delay_s)
        return schedule


async def test_a_duplicate_handled_while_a_slow_delivery_decides_is_published_once(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        event = enrolment(w.clinic, w.clock.now())
        envelope = w.publisher.envelope_for(event)
        stalled = w.replica()
        stalled.store = slow = SlowLoads(w.runtime.redis, delay_s=2.0)

        first = asyncio.create_task(stalled.on_client_enrolled(event, envelope))
        await slow.loading.wait()
        await w.scheduler.on_client_enrolled(event, envelope)  # handled while it reads
        await first  # its write failed; its step, run again, found the event handled

        client = str(event.client_id)
        stages = await topic_messages(
            kafka_bootstrap, topics.PUBLIC_STAGE_REACHED.name, key=client, expect=2, wait_s=5
        )
        courses = await topic_messages(kafka_bootstrap, topics.COURSE_BOOKED.name, key=client)
        saved = await w.load(event.client_id)
        assert saved.course is not None
        assert await w.ledger() == ledger_of(w.clinic, saved, w.clock.now())
    assert [m["value"]["stage"] for m in stages] == ["enrolled", "course_booked"]
    assert len(courses) == 1
