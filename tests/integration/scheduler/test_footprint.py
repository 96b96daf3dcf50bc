"""What the scheduler keeps per client once a course is over (issue 18: at most 20 KB of
Redis per client): the appointment index is one hash per clinic, not a key per
appointment, and a client whose sessions have all ended keeps no booking set of their
own, while their routes still find their appointments. Real Kafka and Redis."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from services.scheduler import store
from services.scheduler.ledger import booking_key
from shared import events as ev
from tests.integration.scheduler.world import world

pytestmark = pytest.mark.integration


async def test_an_ended_course_leaves_one_index_hash_and_no_client_booking_set(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w, w.http() as http:
        booked = await w.booked_client()
        client = booked.client_id
        assert booked.course is not None
        sessions = booked.course.plan.appointments
        own = booking_key(w.clinic, "client", str(client))
        assert await w.redis.zcard(own) == len(sessions)

        # Every session over (unrecorded), then the client withdraws: a write step.
        w.clock.advance(max(a.ends_at for a in sessions) - w.clock.now() + timedelta(hours=1))
        withdrawn = await http.post(f"/clients/{client}/course/withdrawal")
        assert withdrawn.status_code == 200, withdrawn.text
        assert withdrawn.json()["course"]["end_code"] == ev.CourseEndCode.WITHDRAWN.value

        assert not await w.redis.exists(own)  # nothing of theirs left to double-book
        therapist = booking_key(w.clinic, "therapist", sessions[0].therapist_id)
        assert await w.redis.zcard(therapist) > 0  # others' sets keep BOOKINGS_KEPT

        index = await w.redis.hgetall(store.appointments_key(w.clinic))
        assert {store.id_of_compact(f) for f in index} >= {a.appointment_id for a in sessions}
        assert {store.id_of_compact(v) for v in index.values()} == {client}
        legacy = [k async for k in w.redis.scan_iter(match=f"sched:{{{w.clinic}}}:appointment:*")]
        assert legacy == []

        # Routes still resolve the course's appointments: a refusal naming why, not a 404.
        dose = next(a for a in sessions if a.kind is ev.AppointmentKind.MEDICINE)
        late = await http.post(
            f"/appointments/{dose.appointment_id}/completion", json={"ride_home_confirmed": True}
        )
        assert late.status_code == 409, late.text
        unknown = await http.post(
            f"/appointments/{uuid.uuid4()}/completion", json={"ride_home_confirmed": True}
        )
        assert unknown.status_code == 404, unknown.text

        # An index written before (one string key per appointment) still resolves.
        older = uuid.uuid4()
        await w.redis.set(store.key(w.clinic, "appointment", str(older)), str(client))
        assert await w.scheduler.store.client_of(w.clinic, older) == client
