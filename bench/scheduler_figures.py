"""The scheduler's figures (issue #9): planning a course, a booking race, booster timers.

    python -m bench.scheduler_figures [load ...]   # planning figures only, no Kafka or Redis

1. Planning: a clinic of 20 therapists (each working 3 to 5 of 6 open days) and 8 rooms,
   with six weeks of bookings filling `load` of every therapist's and room's hours; a
   course planned from random starts with a random preferred therapist. Each case is
   timed three times and the fastest kept (CPU time of this thread), so a busy shared
   machine skews less. The headline is at 45% booked.
2. Booking race: 100 tasks, each on its own Redis connection, reserve the same slot
   through the booking ledger at once; exactly one must win. Then 1,000 reservations
   that do not conflict, by 100 tasks, for a throughput.
3. Booster timers: 100,000 pending in one clinic's due set, of which 1,000 belong to
   clients with a completed course and fall due over ten seconds while the scheduler's
   own timer loop runs (default poll interval, wall clock) against Redis and Kafka.
   Lag is the BoosterDue record's Kafka timestamp (set when it is sent) minus the due
   instant; each due booster must be announced exactly once.

Every run uses fresh clinic ids and removes their keys from Redis afterwards.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from bench.system import percentile
from chassis.clock import SystemClock
from chassis.due_work import DueWork
from chassis.service import ServiceRuntime, settle_heap
from ops import demo_clinics
from ops.reading import read_to_end
from services.scheduler.config import Settings
from services.scheduler.domain.planner import find_consultation_slot, plan_course
from services.scheduler.domain.plans import CoursePlan
from services.scheduler.ledger import BookingLedger, Claim, claims_for
from services.scheduler.main import SERVICE, due_works, scheduler_for
from services.scheduler.scheduler import Scheduler
from services.scheduler.store import key
from services.scheduler.timers import booster_timer
from shared import events as ev
from shared.topics import BOOSTER_DUE
from tests.builders.scheduler import (
    DAYS,
    ROOMS,
    START,
    THERAPISTS,
    FigureFailed,
    booked,
    clinic,
    completed_course,
    due_at,
)

T = TypeVar("T")

PLAN_LOAD = 0.45  # the headline: nearly half of every hour booked, a busy clinic's weeks
OTHER_LOADS = (0.3, 0.6)
DEFAULT_POLL_MS: int = Settings.model_fields["timer_poll_ms"].default


# --- planning ---------------------------------------------------------------


def fastest_of_three(run: Callable[..., T], *args: Any) -> tuple[float, T]:
    """Milliseconds of this thread's CPU time, the least of three runs, and the result."""
    timings = []
    for _ in range(3):
        started = time.thread_time()
        result = run(*args)
        timings.append(time.thread_time() - started)
    return min(timings) * 1000, result


def plan_figures(load: float = PLAN_LOAD, cases: int = 200, seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)  # noqa: S311 - reproducible cases, not secrets
    calendar = clinic(rng)
    bookings = booked(calendar, rng, load)
    courses, slots, planned = [], [], 0
    for _ in range(cases):
        not_before = START + timedelta(days=rng.randint(0, 6), hours=rng.randint(7, 18))
        at = not_before.replace(tzinfo=calendar.tz).astimezone(UTC)
        preferred = f"t{rng.randint(0, THERAPISTS - 1)}"
        millis, plan = fastest_of_three(
            plan_course, calendar, bookings, uuid.uuid4(), at, preferred
        )
        courses.append(millis)
        planned += isinstance(plan, CoursePlan)
        slots.append(fastest_of_three(find_consultation_slot, calendar, bookings, [], at)[0])
    courses.sort()
    slots.sort()
    return {
        "load": load,
        "cases": cases,
        "planned": planned,
        "p50_ms": percentile(courses, 0.50),
        "p99_ms": percentile(courses, 0.99),
        "max_ms": courses[-1],
        "consultation_p50_ms": percentile(slots, 0.50),
        "consultation_p99_ms": percentile(slots, 0.99),
        "clinic": f"{THERAPISTS} therapists, {ROOMS} rooms, {DAYS // 7} weeks booked",
        "booked_intervals": sum(
            len(spans) for spans in (*bookings.therapists.values(), *bookings.rooms.values())
        ),
        "timing": "fastest of 3 runs, CPU time of the planning thread",
    }


# --- booking race -----------------------------------------------------------


def dose(therapist: str, room: str, starts_at: datetime) -> ev.Appointment:
    return ev.Appointment(
        appointment_id=uuid.uuid4(),
        kind=ev.AppointmentKind.MEDICINE,
        starts_at=starts_at,
        ends_at=starts_at + timedelta(hours=3),
        therapist_id=therapist,
        room_id=room,
        dose_number=1,
    )


async def _connections(redis_url: str, count: int) -> list[Redis]:
    """`count` clients, each with its own connection already open."""
    clients = [Redis.from_url(redis_url, decode_responses=True) for _ in range(count)]
    await asyncio.gather(*(client.ping() for client in clients))
    return clients


async def booking_race(redis_url: str, clinic_id: str, contenders: int = 100) -> dict[str, Any]:
    """`contenders` clients book the same dose slot (therapist and room) at the same time."""
    clients = await _connections(redis_url, contenders)
    try:
        ledgers = [BookingLedger(client) for client in clients]
        slot = datetime(2027, 3, 1, 9, tzinfo=UTC)
        # Load the script into Redis first, so the race measures reservations only.
        await ledgers[0].reserve(clinic_id, claims_for(uuid.uuid4(), [dose("t-warm", "r-", slot)]))
        bids = [claims_for(uuid.uuid4(), [dose("t0", "r0", slot)]) for _ in ledgers]
        go = asyncio.Event()

        async def bid(ledger: BookingLedger, claims: Sequence[Claim]) -> bool:
            await go.wait()
            return await ledger.reserve(clinic_id, claims) is None

        tasks = [
            asyncio.create_task(bid(ledger, claims))
            for ledger, claims in zip(ledgers, bids, strict=True)
        ]
        await asyncio.sleep(0.1)  # every task waiting at the line
        started = time.perf_counter()
        go.set()
        won = await asyncio.gather(*tasks)
        seconds = time.perf_counter() - started
        # The slot stays taken, by the winner: one more bid meets their appointment.
        late = claims_for(uuid.uuid4(), [dose("t0", "r0", slot)])
        conflict = await ledgers[0].reserve(clinic_id, late)
        winners = sum(won)
        winner = [
            claims[0].appointment_id for claims, first in zip(bids, won, strict=True) if first
        ]
        if winners != 1 or conflict is None or [conflict.taken_by] != winner:
            raise FigureFailed(f"{winners} of {contenders} won one slot; then {conflict}")
        return {
            "contenders": contenders,
            "winners": winners,
            "seconds": seconds,
            "bookings_per_s": contenders / seconds,  # attempts decided, one of them won
        }
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))


async def booking_throughput(
    redis_url: str, clinic_id: str, bookings: int = 1000, workers: int = 100
) -> dict[str, Any]:
    """`bookings` dose sessions (a therapist, a room and a client each), none overlapping,
    reserved by `workers` concurrent tasks on their own connections."""
    clients = await _connections(redis_url, workers)
    try:
        first = datetime(2027, 3, 1, tzinfo=UTC)
        wanted = [
            claims_for(
                uuid.uuid4(),
                [dose(f"t{n % THERAPISTS}", f"r{n % ROOMS}", first + timedelta(hours=3 * n))],
            )
            for n in range(bookings)
        ]

        async def book(ledger: BookingLedger, share: Sequence[list[Claim]]) -> int:
            return sum([await ledger.reserve(clinic_id, claims) is None for claims in share])

        ledgers = [BookingLedger(client) for client in clients]
        started = time.perf_counter()
        held = await asyncio.gather(
            *(book(ledger, wanted[n::workers]) for n, ledger in enumerate(ledgers))
        )
        seconds = time.perf_counter() - started
        if sum(held) != bookings:
            raise FigureFailed(f"{bookings - sum(held)} of {bookings} free slots were refused")
        return {
            "bookings": bookings,
            "workers": workers,
            "claims_per_booking": len(wanted[0]),
            "seconds": seconds,
            "bookings_per_s": bookings / seconds,
        }
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))


# --- booster timers ---------------------------------------------------------


async def _booster_offsets(bootstrap: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(BOOSTER_DUE.name) or set()
        tps = [TopicPartition(BOOSTER_DUE.name, p) for p in partitions]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def _boosters_announced(
    bootstrap: str, since: dict[TopicPartition, int], clients: Collection[str]
) -> list[tuple[str, int, int]]:
    """(client, booster number, record timestamp ms) of each BoosterDue for `clients`
    published since the offsets `since`. Records are keyed by client; the topic's others
    (other clinics, tests' malformed input) are passed over."""
    found = []
    for record in await read_to_end(bootstrap, [BOOSTER_DUE.name], since):
        if (record.key or b"").decode() in clients:
            event = ev.BoosterDue.model_validate_json(record.value)
            found.append((str(event.client_id), event.booster_number, record.timestamp))
    return found


async def timer_figures(
    redis_url: str,
    kafka_bootstrap: str,
    clinic_id: str,
    *,
    pending: int = 100_000,
    due: int = 1000,
    window_s: float = 10.0,
) -> dict[str, Any]:
    """`pending` boosters in the clinic's due set, `due` of them falling due over `window_s`
    seconds from a moment after the scheduler's timer loop started."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    workdir = tempfile.TemporaryDirectory(prefix="kap-bench-")
    due_set = key(clinic_id, "boosters", "due")
    try:
        await _far_off_boosters(redis, due_set, pending - due)
        settings = Settings(
            KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
            REDIS_URL=redis_url,
            KAP_CLINICS_FILE=demo_clinics.write(
                Path(workdir.name) / "clinics.json",
                {clinic_id: {"name": "Bench timers", "timezone": "Europe/Lisbon"}},
            ),
            KAP_TIMER_POLL_MS=DEFAULT_POLL_MS,
        )
        since = await _booster_offsets(kafka_bootstrap)
        async with _timer_loop(settings) as (scheduler, work):
            calendar = await scheduler.calendar(clinic_id)
            template = completed_course(calendar, datetime.now(UTC) - timedelta(days=14))
            first_due = time.time() + 2.0
            instants = {str(uuid.uuid4()): first_due + window_s * n / due for n in range(due)}
            async with redis.pipeline(transaction=False) as tx:
                for client, instant in instants.items():
                    at = datetime.fromtimestamp(instant, UTC)
                    scheduler.store.save(tx, due_at(template, uuid.UUID(client), at))
                await tx.execute()
            # Written here, not through a write step: the due index is told as one would.
            await work.index.hint(clinic_id, first_due)
            in_set = await redis.zcard(due_set)
            memory = int(await redis.memory_usage(due_set, samples=0) or 0)
            await _all_fired(redis, clinic_id, first_due + window_s)
        announced = await _boosters_announced(kafka_bootstrap, since, instants)
    finally:
        await redis.aclose()
        workdir.cleanup()
    times = Counter((client, number) for client, number, _ in announced)
    once = sum(times[client, 1] == 1 for client in instants)
    if once != due or len(announced) != due:
        raise FigureFailed(f"of {due} due boosters {once} were announced once, of {len(announced)}")
    lags = sorted(stamp - instants[client] * 1000 for client, _, stamp in announced)
    return {
        "pending": in_set,
        "fired": once,
        "due_window_s": window_s,
        "poll_ms": settings.timer_poll_ms,
        "lag_p50_ms": percentile(lags, 0.50),
        "lag_p99_ms": percentile(lags, 0.99),
        "lag_max_ms": lags[-1],
        "redis_memory_bytes": memory,
        "redis_bytes_per_timer": memory / in_set,
        "lag": "Kafka timestamp of each BoosterDue minus its due instant",
    }


async def _far_off_boosters(redis: Redis, due_set: str, count: int) -> None:
    """Boosters due in one to twelve months (what a clinic's set mostly holds), of clients
    who need no schedule: none falls due while the figures are taken."""
    rng, now = random.Random(count), time.time()  # noqa: S311 - not secrets
    later = [
        (f"{uuid.uuid4()}|{rng.randint(1, 8)}", now + 86400 * rng.uniform(30, 365))
        for _ in range(count)
    ]
    for start in range(0, count, 10_000):
        await redis.zadd(due_set, dict(later[start : start + 10_000]))


@asynccontextmanager
async def _timer_loop(settings: Settings) -> AsyncIterator[tuple[Scheduler, DueWork]]:
    """The scheduler service's composition without its event subscribers (nothing joins
    its consumer group): the booster timer loop runs as in the service, on the wall clock."""
    runtime = ServiceRuntime.create(SERVICE, settings, SystemClock())
    scheduler = scheduler_for(runtime)
    work = due_works(runtime, scheduler.store)["booster"]
    poll_s = settings.timer_poll_ms / 1000
    runtime.workers.append(booster_timer(scheduler, work, poll_s, runtime.supervisor.stopping))
    settle_heap()  # as the service's `serve` does before it starts
    try:
        await runtime.start()
        yield scheduler, work
    finally:
        await runtime.stop()


async def _all_fired(redis: Redis, clinic_id: str, last_due: float) -> None:
    """Until every booster due by `last_due` was claimed and done (none left in flight)."""
    due_set, inflight = key(clinic_id, "boosters", "due"), key(clinic_id, "boosters", "inflight")
    deadline = last_due + 120
    while True:
        await asyncio.sleep(0.2)
        if time.time() < last_due:
            continue
        # Scores went through datetime (microseconds): one may sit a hair above `last_due`.
        due_by_then = await redis.zcount(due_set, "-inf", last_due + 1.0)
        if not due_by_then and not await redis.zcard(inflight):
            return
        if time.time() > deadline:
            raise FigureFailed("boosters still due two minutes after the last fell due")


# --- all of them ----------------------------------------------------------------


async def measure(redis_url: str, kafka_bootstrap: str, *, quick: bool = False) -> dict[str, Any]:
    """The scheduler's figures; `quick` shrinks every size for a smoke run of seconds."""
    run = uuid.uuid4().hex[:8]
    race, load, timers, burst = (
        f"bench-sched-{run}-{part}" for part in ("race", "load", "timers", "burst")
    )
    plan = plan_figures(cases=20 if quick else 200)
    if not quick:
        plan["by_load"] = [
            {k: figures[k] for k in ("load", "planned", "p50_ms", "p99_ms")}
            for figures in (plan_figures(other) for other in OTHER_LOADS)
        ]
    try:
        return {
            "plan": plan,
            "booking_race": await booking_race(redis_url, race),
            "bookings": await booking_throughput(redis_url, load, 200 if quick else 1000),
            "timers": await timer_figures(
                redis_url,
                kafka_bootstrap,
                timers,
                pending=2000 if quick else 100_000,
                due=50 if quick else 1000,
                window_s=1.0 if quick else 10.0,
            ),
            # Every booster of a clinic falls due at 09:00 clinic time: all at once.
            "timers_burst": await timer_figures(
                redis_url,
                kafka_bootstrap,
                burst,
                pending=2000 if quick else 100_000,
                due=50 if quick else 1000,
                window_s=0.0,
            ),
        }
    finally:
        await demo_clinics.reset(redis_url, [race, load, timers, burst])


def main(loads: Sequence[float]) -> None:
    for load in loads:
        figures = plan_figures(load)
        print(
            f"load {load:.0%} ({figures['planned']}/{figures['cases']} planned): plan_course "
            f"p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, max "
            f"{figures['max_ms']:.1f} ms; find_consultation_slot p99 "
            f"{figures['consultation_p99_ms']:.1f} ms"
        )


if __name__ == "__main__":
    main([float(arg) for arg in sys.argv[1:]] or [PLAN_LOAD, *OTHER_LOADS])
