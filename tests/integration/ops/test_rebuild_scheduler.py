"""Kafka is the record: the scheduler's Redis, rebuilt from the topics
(`kapctl rebuild scheduler`) into a wiped database, answers as the old one did.

Real Kafka and Redis; a scheduler of the test's own (its own clinic and calendar) on
the live Redis, on a clock that reads the wall and can be moved on (sessions are
held in the future), then one on db 8 (flushed here) after the rebuild. The
comparison is over the scheduler's HTTP API.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from chassis.clinics import ClinicDirectory
from chassis.clock import FrozenClock
from chassis.config import ServiceSettings
from chassis.events import EventPublisher
from chassis.kafka import make_broker
from ops import kapctl
from ops.reading import in_kafka_order
from ops.rebuild import replay_records
from services.scheduler.config import Settings
from services.scheduler.main import create_app
from services.scheduler.rebuild import SchedulerReplay
from services.scheduler.store import SchedulerStore, pack
from shared import events as ev
from shared import topics
from shared.envelope import HEADER_CLINIC, Envelope
from tests.builders.scheduler import PASSING_CHECKIN
from tests.helpers import serving, topic_messages, write_clinics
from tests.integration.notifier.support import caught_up
from tests.integration.scheduler.conftest import CALENDAR

pytestmark = pytest.mark.integration

REBUILT_DB = 8  # a spare database, flushed by this test only


class MovableClock(FrozenClock):
    """The wall clock, moved on by what `advance` added (sessions are held in the future)."""

    def __init__(self) -> None:
        super().__init__(datetime.now(UTC))
        self._offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def advance(self, by: timedelta) -> None:
        self._offset += by


@pytest.fixture
def clinic(unique: str) -> dict[str, str]:
    return {"id": f"c-{unique}", "key": f"key-{unique}"}


@pytest.fixture
def clinics_path(tmp_path: Path, clinic: dict[str, str]) -> Path:
    spec = {
        "name": "Rebuilt",
        "timezone": "Europe/Lisbon",
        "key": clinic["key"],
        "sections": {"scheduler": CALENDAR},
    }
    return write_clinics(tmp_path / "clinics.json", {clinic["id"]: spec})


@pytest.fixture
async def intake_events(kafka_bootstrap: str) -> AsyncIterator[EventPublisher]:
    broker = make_broker(ServiceSettings(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap), "intake")
    publisher = EventPublisher(broker, "intake", topics.produced_by("intake"))
    await broker.start()
    yield publisher
    await broker.stop()


def _settings(kafka: str, redis: str, clinics: Path) -> Settings:
    return Settings(KAFKA_BOOTSTRAP_SERVERS=kafka, REDIS_URL=redis, KAP_CLINICS_FILE=clinics)


async def _eventually(check: Callable[[], Awaitable[Any]], wait_s: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + wait_s
    while not (found := await check()):
        assert asyncio.get_running_loop().time() < deadline, "not within the time allowed"
        await asyncio.sleep(0.05)
    return found


class Front:
    """The clinic's staff, over the scheduler's API."""

    def __init__(self, http: httpx.AsyncClient, clinic: dict[str, str]) -> None:
        self.http, self.base = http, f"/v1/clinics/{clinic['id']}"
        self.headers = {"X-API-Key": clinic["key"]}

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = await self.http.post(self.base + path, json=body, headers=self.headers)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    async def schedule(self, client: uuid.UUID) -> dict[str, Any] | None:
        answer = await self.http.get(f"{self.base}/clients/{client}/schedule", headers=self.headers)
        return dict(answer.json()) if answer.status_code == 200 else None


async def _lifecycle(
    front: Front, intake: EventPublisher, clock: MovableClock, clinic: str
) -> tuple[list[uuid.UUID], ev.ClientEnrolled]:
    """Ada asks for a consultation (booked); Bob is enrolled (a course booked), checked
    in and his first dose held (PHQ-9 item 9 answered 0), his second dose missed (the
    course re-planned), then his course paused and resumed."""
    ada, bob = uuid.uuid4(), uuid.uuid4()
    now = clock.now()
    weekday = ev.PreferredTime(weekday=1, start=time(9), end=time(17))
    contact = ev.Contact(name="Ada", email=f"ada.{ada.hex[:8]}@example.org")
    asked = ev.ConsultationRequested(
        clinic_id=clinic,
        client_id=ada,
        occurred_at=now,
        contact=contact,
        preferred_times=(weekday,),
    )
    await intake.publish(asked, intake.envelope_for(asked))
    # One after the other: events handled at once, live, may compete for a slot in an
    # order the replay cannot know (it counts such a fact as `diverged`).
    await _eventually(lambda: front.schedule(ada))
    enrolled = ev.ClientEnrolled(
        clinic_id=clinic,
        client_id=bob,
        occurred_at=now,
        consent_recorded_at=now,
        phq9_total=14,
        phq9_band=ev.Phq9Band.MODERATE,
        gad7_total=9,
    )
    await intake.publish(enrolled, intake.envelope_for(enrolled))
    course = await _eventually(lambda: _with_course(front, bob))
    doses = [a for a in course["course"]["appointments"] if a["kind"] == "medicine"]
    first, second = (ev.Appointment.model_validate(d) for d in doses[:2])

    clock.advance(first.starts_at - clock.now())
    path = f"/appointments/{first.appointment_id}"
    await front.post(f"{path}/check-in", PASSING_CHECKIN.model_dump(mode="json"))
    clock.advance(first.ends_at - clock.now())
    answers = {"ride_home_confirmed": True, "phq9_total": 8, "phq9_item9": 0}
    await front.post(f"{path}/completion", answers)
    clock.advance(second.ends_at - clock.now() + timedelta(minutes=5))
    await front.post(f"/appointments/{second.appointment_id}/missed", {})
    await front.post(f"/clients/{bob}/course/pause", {})
    clock.advance(timedelta(days=1))
    await front.post(f"/clients/{bob}/course/resume", {})
    return [ada, bob], enrolled


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    """Where two API answers differ, by path (readable where == is not)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = dict.fromkeys([*old, *new])
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{path}.{k}")]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            d
            for i, (o, n) in enumerate(zip(old, new, strict=True))
            for d in _differences(o, n, f"{path}[{i}]")
        ]
    return [] if old == new else [f"{path}: {old!r} != {new!r}"]


async def _with_course(front: Front, client: uuid.UUID) -> dict[str, Any] | None:
    schedule = await front.schedule(client)
    return schedule if schedule and schedule.get("course") else None


async def test_the_scheduler_rebuilt_from_the_topics_in_any_relay_order_answers_as_before(
    kafka_bootstrap: str,
    redis_url: str,
    rebuilt_url: str,
    rebuilt_redis: Redis,
    clinic: dict[str, str],
    clinics_path: Path,
    intake_events: EventPublisher,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = MovableClock()
    live = create_app(_settings(kafka_bootstrap, redis_url, clinics_path), clock)
    async with serving(live) as http:
        await caught_up(kafka_bootstrap, live.state.runtime.broker, service="scheduler")
        front = Front(http, clinic)
        clients, enrolled = await _lifecycle(front, intake_events, clock, clinic["id"])
        before = {str(c): await front.schedule(c) for c in clients}

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("KAP_CLINICS_FILE", str(clinics_path))
    command = ["rebuild", "scheduler", "--redis", rebuilt_url, "--clinic", clinic["id"]]
    assert await asyncio.to_thread(kapctl.main, command) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["refused"] == counts["unreadable"] == 0, counts
    assert counts["not_rebuilt"] == {}, counts  # every fact made again by a replayed step
    assert counts["keys_written"] == len(await rebuilt_redis.keys("*"))
    # Each client's public numbering goes on where the live one stood.
    live_redis = Redis.from_url(redis_url)
    try:
        for client in clients:
            key = f"scheduler:{{{clinic['id']}}}:public-seq:{client}"
            live_number = int(await live_redis.get(key) or 0)
            assert live_number > 0
            assert int(await rebuilt_redis.get(key) or 0) == live_number
    finally:
        await live_redis.aclose()

    rebuilt = create_app(_settings(kafka_bootstrap, rebuilt_url, clinics_path), clock)
    async with serving(rebuilt) as http:
        await caught_up(kafka_bootstrap, rebuilt.state.runtime.broker, service="scheduler")
        front = Front(http, clinic)
        after = {str(c): await front.schedule(c) for c in clients}
        assert _differences(before, after) == []

        # Bob's enrolment delivered again: its handled mark was rebuilt, so nothing is
        # booked or published again.
        booked = await topic_messages(
            kafka_bootstrap, topics.COURSE_BOOKED.name, key=str(enrolled.client_id), wait_s=2
        )
        [original] = await topic_messages(
            kafka_bootstrap, topics.CLIENT_ENROLLED.name, key=str(enrolled.client_id)
        )
        await intake_events.publish(enrolled, Envelope.from_headers(original["headers"]))
        await caught_up(kafka_bootstrap, rebuilt.state.runtime.broker, service="scheduler")
        assert _differences(before, {str(c): await front.schedule(c) for c in clients}) == []
        again = await topic_messages(
            kafka_bootstrap, topics.COURSE_BOOKED.name, key=str(enrolled.client_id), wait_s=2
        )
        assert len(again) == len(booked) == 1

        # The same records with the scheduler's own facts between two consumed events in
        # reverse: the outbox relay records one round's steps in any order (a timer's fact
        # once came before the completion it followed), and the rebuild takes them in the
        # order they were decided. The second copy of the enrolment is among them.
        await rebuilt_redis.flushdb()
        replay = SchedulerReplay(rebuilt_redis, ClinicDirectory(clinics_path))
        read = in_kafka_order(kafka_bootstrap, [t.name for t in replay.topics], required=True)
        records = [r async for r in read if _clinic_of(r) == clinic["id"]]
        reordered = await replay_records(replay, _listed(_own_facts_reversed(records)))
        assert reordered.unreadable == reordered.refused == 0
        assert reordered.not_rebuilt == {}, reordered.summary()
        assert _differences(before, {str(c): await front.schedule(c) for c in clients}) == []

        # The replay's schedule a version away from the one a request was decided on
        # live (a timer's step met in the other order: one retried after a write
        # conflict keeps its round's instant): the request is run on the version its
        # fact names, and every later one is found again.
        await rebuilt_redis.flushdb()
        replay = SchedulerReplay(rebuilt_redis, ClinicDirectory(clinics_path))
        moved = await replay_records(replay, _version_moved_before_check_in(records, rebuilt_redis))
        assert moved.not_rebuilt == {}, moved.summary()
        assert _differences(before, {str(c): await front.schedule(c) for c in clients}) == []


async def _version_moved_before_check_in(records: list[Any], redis: Redis) -> AsyncIterator[Any]:
    """`records`, the checked-in client's stored schedule one version on when the
    check-in comes (as if a step the replay has not met yet had saved it)."""
    store = SchedulerStore(redis)
    for record in records:
        if record.topic == topics.SESSION_CHECKED_IN.name:
            event = ev.SessionCheckedIn.model_validate_json(record.value)
            schedule = await store.load(event.clinic_id, event.client_id)
            assert schedule is not None
            moved = schedule.model_copy(update={"version": schedule.version + 1})
            await redis.set(store.schedule_key(event.clinic_id, event.client_id), pack(moved))
        yield record


def _clinic_of(record: Any) -> str:
    return dict(record.headers or ()).get(HEADER_CLINIC, b"").decode()


def _own_facts_reversed(records: list[Any]) -> list[Any]:
    """`records` with each run of the scheduler's own facts (between consumed events) reversed."""
    own = {t.name for t in topics.produced_by("scheduler")}
    out: list[Any] = []
    run: list[Any] = []
    for record in records:
        if record.topic in own:
            run.append(record)
            continue
        out += reversed(run)
        run = []
        out.append(record)
    return out + list(reversed(run))


async def _listed(records: list[Any]) -> AsyncIterator[Any]:
    for record in records:
        yield record
