"""A scheduler of its own for a fresh clinic, driven by calls instead of HTTP or Kafka.

Fault tests (issue 14) need what HTTP cannot give: a publisher that fails or
stalls, a lock that expires, two deliveries at once. Kafka and Redis stay real;
only the publisher may be wrapped. Each world is a new clinic id, so its ledger
and schedules start empty, and its keys are removed afterwards. `World.http` serves
the clinic's HTTP API over the same scheduler, for tests of what a route answers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from chassis.clock import FrozenClock
from chassis.events import EventPublisher
from chassis.service import ServiceRuntime, http_app
from chassis.unit_of_work import UnitOfWork
from ops import demo_clinics
from services.scheduler.api import routes
from services.scheduler.config import Settings
from services.scheduler.domain import lifecycle, measures
from services.scheduler.domain.planner import plan_course
from services.scheduler.domain.plans import Bookings, CoursePlan
from services.scheduler.domain.schedule import ClientSchedule
from services.scheduler.ledger import claims_for
from services.scheduler.main import SERVICE, scheduler_for
from services.scheduler.scheduler import Scheduler
from shared import events as ev
from shared.envelope import Envelope
from shared.topics import Topic
from tests.builders.scheduler import completed_course

# A Monday 08:00 in Lisbon: the demo calendar books a whole course from here on.
MONDAY = datetime(2027, 6, 7, 7, tzinfo=UTC)


class FlakyPublisher(EventPublisher):
    """The runtime's publisher, which can be told to fail or to stall before sending.

    Kafka stays real: a publish that is let through goes to the broker as usual.
    """

    def __init__(self, inner: EventPublisher, also: EventPublisher | None = None) -> None:
        self.__dict__.update(inner.__dict__)
        if also is not None:  # topics the catalogue does not (yet) give the scheduler
            self._publishers = {**self._publishers, **also._publishers}
        self.fail = False
        self.stall_s = 0.0
        self.stalled = asyncio.Event()

    async def publish_all(self, items: Sequence[tuple[ev.Event, Envelope]]) -> None:
        if self.fail:
            raise ConnectionError("the broker is unreachable (injected)")
        if self.stall_s:
            self.stalled.set()
            await asyncio.sleep(self.stall_s)
        await super().publish_all(items)


@dataclass
class World:
    clinic: str
    runtime: ServiceRuntime
    clock: FrozenClock
    publisher: FlakyPublisher
    redis: Redis
    schedulers: list[Scheduler] = field(default_factory=list)

    @property
    def scheduler(self) -> Scheduler:
        return self.schedulers[0]

    def replica(self) -> Scheduler:
        """Another scheduler on the same Redis and broker, as a second replica would be."""
        replica = scheduler_for(self.runtime)
        self.schedulers.append(replica)
        return replica

    @asynccontextmanager
    async def http(self) -> AsyncIterator[httpx.AsyncClient]:
        """The clinic's HTTP API (services.scheduler.api) over this world's scheduler, its
        runtime already running: requests as staff send them, with the clinic's key."""
        app = http_app(self.runtime, title="KAP scheduler", routers=[routes(self.scheduler)])
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url=f"http://test/v1/clinics/{self.clinic}",
            headers={"X-API-Key": demo_clinics.api_key(self.clinic)},
        ) as client:
            yield client

    async def booked_client(self) -> ClientSchedule:
        """A client whose course is booked (ledger held, schedule saved), starting today."""
        calendar = await self.scheduler.calendar(self.clinic)
        plan = plan_course(
            calendar, Bookings(), uuid.uuid4(), self.clock.now() + timedelta(hours=1)
        )
        assert isinstance(plan, CoursePlan)
        client = uuid.uuid4()
        schedule = ClientSchedule(
            clinic_id=self.clinic, client_id=client, correlation_id=str(client)
        )
        schedule, _ = lifecycle.course_booked(schedule, plan, self.clock.now())
        # As the write step saves a booked course: with its measures (domain.measures).
        policy = calendar.policy.measures
        schedule = measures.replanned(schedule, policy, calendar.tz, self.clock.now())
        assert (
            await self.scheduler.store.ledger.reserve(
                self.clinic, claims_for(client, plan.appointments)
            )
            is None
        )
        await self.save(schedule)
        return schedule

    async def completed_client(self) -> ClientSchedule:
        """A client whose course completed now: booster 1 due in 14 days at 09:00 local."""
        calendar = await self.scheduler.calendar(self.clinic)
        schedule = completed_course(calendar, self.clock.now())
        await self.save(schedule)
        return schedule

    async def save(self, schedule: ClientSchedule) -> None:
        async with self.redis.pipeline(transaction=True) as tx:
            self.scheduler.store.save(tx, schedule)
            await tx.execute()

    async def load(self, client: uuid.UUID) -> ClientSchedule:
        schedule = await self.scheduler.store.load(self.clinic, client)
        assert schedule is not None
        return schedule

    async def ledger(self) -> dict[str, set[str]]:
        """Every booking set of the clinic with its members, as Redis holds them."""
        found: dict[str, set[str]] = {}
        async for name in self.redis.scan_iter(match=f"sched:{{{self.clinic}}}:booked:*"):
            members = set(await self.redis.zrange(name, 0, -1))
            if members:
                found[name] = members
        return found


def ledger_of(
    clinic: str, schedule: ClientSchedule, saved_at: datetime | None = None
) -> dict[str, set[str]]:
    """The booking sets a saved schedule implies: every appointment still held, less, in
    the client's own set, what had ended when a write step saved it at `saved_at`
    (store.save trims it)."""
    assert schedule.course is not None
    course = schedule.course
    held = [
        a
        for a in course.plan.appointments
        if course.status_of(a.appointment_id)
        not in (ev.AppointmentStatus.CANCELLED, ev.AppointmentStatus.NOSHOW)
    ]
    found: dict[str, set[str]] = {}
    for claim in claims_for(schedule.client_id, held):
        if claim.resource == "client" and saved_at is not None and claim.ends_at <= saved_at:
            continue
        name = f"sched:{{{clinic}}}:booked:{claim.resource}:{claim.resource_id}"
        found.setdefault(name, set()).add(claim.member)
    return found


@asynccontextmanager
async def world(
    kafka_bootstrap: str,
    redis_url: str,
    tmp_path: Path,
    at: datetime = MONDAY,
    declare: tuple[Topic, ...] = (),
    **extra: Any,
) -> AsyncIterator[World]:
    clinic = f"faults-{uuid.uuid4().hex[:10]}"
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        REDIS_URL=redis_url,
        KAP_CLINICS_FILE=demo_clinics.write(
            tmp_path / f"{clinic}.json", {clinic: {"name": "Faults", "timezone": "Europe/Lisbon"}}
        ),
        **extra,
    )
    clock = FrozenClock(at)
    runtime = ServiceRuntime.create(SERVICE, settings, clock)
    also = EventPublisher(runtime.broker, SERVICE, declare) if declare else None
    publisher = FlakyPublisher(runtime.publisher, also)
    scheduler = scheduler_for(runtime)
    scheduler.publisher = publisher
    scheduler.unit_of_work = UnitOfWork(runtime.redis, SERVICE, publisher)
    redis = Redis.from_url(redis_url, decode_responses=True)
    await runtime.start()
    try:
        yield World(clinic, runtime, clock, publisher, redis, [scheduler])
    finally:
        await runtime.stop()
        await redis.aclose()
        await demo_clinics.reset(redis_url, [clinic])
