"""Issue 16 over real Kafka and Redis: a booster falling due is booked (on its topic, in
the ledger, in the schedule); declined, its slots are freed and the next booster still
falls due and is booked in turn."""

from __future__ import annotations

import itertools
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from ops.reading import read_to_end
from services.scheduler import timers
from services.scheduler.domain.schedule import ClientSchedule
from services.scheduler.store import booster_member, key
from shared import events as ev
from shared import topics
from tests.helpers import topic_messages
from tests.integration.scheduler.world import World, world

pytestmark = pytest.mark.integration


async def held_ids(w: World) -> set[str]:
    """The appointment ids the clinic's ledger holds."""
    return {m.split("|")[2] for members in (await w.ledger()).values() for m in members}


async def fire_when_due(w: World, client: ClientSchedule) -> ClientSchedule:
    schedule = await w.load(client.client_id)
    assert schedule.course is not None
    due = schedule.course.next_booster_due_at
    assert due is not None
    w.clock.advance(due - w.clock.now() + timedelta(minutes=1))
    fired, _ = await w.scheduler.fire_due_boosters(w.clinic)
    assert fired == 1
    return await w.load(client.client_id)


async def test_a_booster_falling_due_is_booked_and_a_declined_one_does_not_stop_the_next(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        completed = await w.completed_client()
        key = str(completed.client_id)

        first = await fire_when_due(w, completed)
        assert first.course is not None
        [booster] = first.course.booster_sessions
        dose, talk = booster.appointments
        ids = {str(dose.appointment_id), str(talk.appointment_id)}
        assert (dose.kind, talk.kind) == (
            ev.AppointmentKind.BOOSTER,
            ev.AppointmentKind.INTEGRATION,
        )
        assert dose.starts_at >= booster.due_at
        assert ids <= await held_ids(w)  # the ledger holds both sessions
        [booked] = await topic_messages(
            kafka_bootstrap, topics.BOOSTER_SESSION_BOOKED.name, key=key
        )
        assert booked["value"]["booster_number"] == 1
        assert {a["appointment_id"] for a in booked["value"]["appointments"]} == ids
        public = await topic_messages(
            kafka_bootstrap, topics.PUBLIC_APPOINTMENT_STATUS.name, key=key, expect=2
        )
        assert {(m["value"]["kind"], m["value"]["status"]) for m in public} == {
            ("booster", "booked"),
            ("integration", "booked"),
        }

        declined = await w.scheduler.decline_booster(w.clinic, dose.appointment_id, "client")
        assert declined.course is not None
        assert declined.course.status_of(dose.appointment_id) == ev.AppointmentStatus.CANCELLED
        assert ids.isdisjoint(await held_ids(w))  # both slots freed
        [fact] = await topic_messages(kafka_bootstrap, topics.BOOSTER_DECLINED.name, key=key)
        assert fact["value"]["declined_by"] == "client"
        assert declined.course.next_booster == 2

        second = await fire_when_due(w, declined)
        assert second.course is not None
        assert [b.number for b in second.course.booster_sessions] == [1, 2]
        announced = await topic_messages(
            kafka_bootstrap, topics.BOOSTER_DUE.name, key=key, expect=2
        )
        booked_twice = await topic_messages(
            kafka_bootstrap, topics.BOOSTER_SESSION_BOOKED.name, key=key, expect=2
        )
        new_ids = {str(a.appointment_id) for a in second.course.booster_sessions[1].appointments}
        assert new_ids <= await held_ids(w)
    assert [m["value"]["booster_number"] for m in announced] == [1, 2]
    assert [m["value"]["booster_number"] for m in booked_twice] == [1, 2]


async def test_boosters_falling_due_together_are_booked_in_one_batch_without_overlaps(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    """A batch reads the therapists' and rooms' bookings once (store.SharedReads): its own
    holds, not a second read, keep its boosters apart. Checked on the topic: no therapist
    or room has two booked sessions at once, and the ledger holds every one."""
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        clients = [await w.completed_client() for _ in range(6)]
        first = clients[0].course
        assert first is not None
        assert first.next_booster_due_at is not None
        w.clock.advance(first.next_booster_due_at - w.clock.now() + timedelta(minutes=1))
        fired, _ = await w.scheduler.fire_due_boosters(w.clinic)
        assert fired == len(clients)
        held = await held_ids(w)
        booked = [
            m
            for c in clients
            for m in await topic_messages(
                kafka_bootstrap, topics.BOOSTER_SESSION_BOOKED.name, key=str(c.client_id)
            )
        ]
    sessions = [a for m in booked for a in m["value"]["appointments"]]
    assert len(booked) == len(clients)
    assert len(sessions) == 2 * len(clients)
    assert {a["appointment_id"] for a in sessions} <= held
    for resource in ("therapist_id", "room_id"):
        by_holder: dict[str, list[tuple[str, str]]] = {}
        for a in sessions:
            if a.get(resource):
                by_holder.setdefault(a[resource], []).append((a["starts_at"], a["ends_at"]))
        for spans in by_holder.values():
            spans.sort()
            for (_, ended), (started, _) in itertools.pairwise(spans):
                assert ended <= started, (resource, spans)


async def test_a_clinics_boosters_are_all_announced_before_any_is_booked(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 19: the slot search is most of a booster's cost, so boosters falling due
    together are announced first, batch after batch, and booked after. Checked on the
    topics: every client's BoosterDue was produced before the first BoosterSessionBooked
    (in one step, batches of 2 would announce the third client after two bookings)."""
    monkeypatch.setattr(timers, "BOOSTER_BATCH", 2)
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        clients = {str((await w.completed_client()).client_id) for _ in range(5)}
        first = (await w.load(uuid.UUID(min(clients)))).course
        assert first is not None
        assert first.next_booster_due_at is not None
        w.clock.advance(first.next_booster_due_at - w.clock.now() + timedelta(minutes=1))
        rounds = [await w.scheduler.fire_due_boosters(w.clinic)]
        while rounds[-1][1]:
            rounds.append(await w.scheduler.fire_due_boosters(w.clinic))
        names = [topics.BOOSTER_DUE.name, topics.BOOSTER_SESSION_BOOKED.name]
        records = [
            r for r in await read_to_end(kafka_bootstrap, names) if r.key.decode() in clients
        ]
    due = [r.timestamp for r in records if r.topic == topics.BOOSTER_DUE.name]
    booked = [r.timestamp for r in records if r.topic == topics.BOOSTER_SESSION_BOOKED.name]
    assert sum(fired for fired, _ in rounds) == len(due) == len(booked) == len(clients)
    assert max(due) <= min(booked)


async def test_an_announced_boosters_booking_is_owed_until_booked_or_stopped(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    """The announcement's step saves the booking owed and makes the booster's lease due
    again: a later round (any replica's) books it once; boosters stopped in between, it
    books nothing (a plan set again later would not book it either)."""
    async with world(kafka_bootstrap, redis_url, tmp_path) as w:
        kept, stopped = await w.completed_client(), await w.completed_client()
        assert kept.course is not None
        assert kept.course.next_booster_due_at is not None
        w.clock.advance(kept.course.next_booster_due_at - w.clock.now() + timedelta(minutes=1))
        calendar = await w.scheduler.calendar(w.clinic)
        announced, claimed, owed = await w.scheduler._round(w.clinic, calendar)  # then lost
        assert (announced, claimed, owed) == (2, 2, True)
        due_set = key(w.clinic, "boosters", "due")
        for client in (kept, stopped):
            course = (await w.load(client.client_id)).course
            assert course is not None
            assert [b.number for b in course.boosters_to_book] == [1]
            assert await w.redis.zscore(due_set, booster_member(client.client_id, 1)) is not None
        await w.scheduler.set_boosters(w.clinic, stopped.client_id, None)

        for _ in range(2):  # again: nothing more
            assert await w.replica().fire_due_boosters(w.clinic) == (0, False)
        held = await held_ids(w)
        booked = [
            (r.key.decode(), ev.BoosterSessionBooked.model_validate_json(r.value).booster_number)
            for r in await read_to_end(kafka_bootstrap, [topics.BOOSTER_SESSION_BOOKED.name])
            if r.key.decode() in {str(kept.client_id), str(stopped.client_id)}
        ]
        after = {client.client_id: await w.load(client.client_id) for client in (kept, stopped)}
    assert booked == [(str(kept.client_id), 1)]  # once, and none for the stopped one
    kept_course, stopped_course = after[kept.client_id].course, after[stopped.client_id].course
    assert kept_course is not None
    assert stopped_course is not None
    assert [b.number for b in kept_course.booster_sessions] == [1]
    assert {str(a.appointment_id) for a in kept_course.booster_sessions[0].appointments} <= held
    assert stopped_course.booster_sessions == ()
    assert kept_course.boosters_to_book == stopped_course.boosters_to_book == ()
