"""1,000 clinics, 100,000 pending timers and messages (issue 18): is due work still on time?

    python -m bench --case thousand-clinics [--due-clinics 1000] [--due-pending 100000]

The scheduler and the notifier run as processes (ops.stack), one replica each and then
two each, on this machine's Kafka and a Redis database of their own (`--due-redis-db`,
emptied before and after; refused if it holds keys the bench did not write).

1. Seeded once, before the services start, through the services' own classes and
   write steps (chassis.unit_of_work, which hints the due index after each commit):
   half the pending items are booster timers in the scheduler's lease queue, half are
   planned emails in the notifier's queue (plans.PlanStore, a known contact each), all
   due in one to twelve months.
2. Each phase: the stack starts; for `IDLE_S` nothing is due (the idle cost of a
   round); then `due` boosters of clients with a completed course and `due` emails fall
   due spread over `window_s` seconds, in clinics picked at random.
3. Booster lag: each BoosterDue record's Kafka timestamp (set when it was sent) minus
   its due instant. Delivery lag: each NotificationSent record's Kafka timestamp minus
   its message's due instant (the send is before it: the SMTP exchange, then the write
   step, then the event). Every due item must be announced or sent exactly once.
4. Redis commands per round: INFO commandstats' calls (every command Redis ran,
   those inside MULTI and Lua scripts included, from every client of the server: the
   machine's other users count too) over a span, divided by the due-work rounds the
   services ran in it (`kap_due_rounds_total` from each process's /metrics: booster,
   measure and offer timers, and delivery, of every replica). Taken over the measured
   window (firing and sending included) and over the idle span before it.

The services' clock runs at real speed (scale 1) from the bench's origin, so every
clinic's booster booking sees the same week; no due time needs scaling, being seconds
away.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiokafka import TopicPartition
from redis.asyncio import Redis

from bench.system import Probe, percentile
from chassis.clock import ScaledClock
from chassis.leases import LeaseQueue
from chassis.service import ServiceRuntime
from chassis.unit_of_work import Decision, Transaction, UnitOfWork
from ops import demo_clinics
from ops.reading import read_to_end
from ops.stack import Stack
from services.notifier.config import Settings as NotifierSettings
from services.notifier.contacts import KnownContact
from services.notifier.delivery import notifier_due_work
from services.notifier.model import MessageKind, PlannedMessage
from services.notifier.planning import Plan
from services.notifier.plans import PlanStore
from services.notifier.queue import DeliveryQueue
from services.scheduler.config import Settings as SchedulerSettings
from services.scheduler.domain.schedule import ClientSchedule
from services.scheduler.main import due_works, scheduler_for
from services.scheduler.scheduler import Scheduler
from services.scheduler.store import booster_member
from shared import events as ev
from shared.envelope import Envelope
from shared.topics import BOOSTER_DUE, NOTIFICATION_SENT
from tests.builders.scheduler import FigureFailed, completed_course, due_at

# Enough zones that clinics' 09:00 and send windows fall all over the day.
ZONES = (
    "Europe/Lisbon", "Europe/Berlin", "Europe/Helsinki", "America/New_York",
    "America/Chicago", "America/Denver", "America/Los_Angeles", "America/Sao_Paulo",
    "Australia/Sydney", "Australia/Perth", "Asia/Tokyo", "Asia/Kolkata",
)  # fmt: skip
CLIENTS_PER_CLINIC = 5  # the notifier's pending mails go to this many clients a clinic
IDLE_S = 3.0  # nothing due: what a round costs by itself
LEAD_S = 3.0  # from the seeding of the due items to the first one falling due
SEED_CONCURRENCY = 16
# Marks the database as the bench's: emptied at the start of a run only if marked or empty.
MARK = "kap-bench:{thousand-clinics}:owner"

# Writes the stack's environment: (clinics file, Redis URL, clock anchor) -> env.
Env = Callable[[Path, str, datetime], dict[str, str]]


@dataclass(frozen=True)
class Sizes:
    clinics: int = 1000
    pending: int = 100_000  # boosters and mails, half each, nearly all months away
    due: int = 300  # boosters, and as many mails, falling due in each phase's window
    window_s: float = 20.0


def clinics(run: str, count: int) -> dict[str, dict[str, str]]:
    return {
        f"due-{run}-{n:04d}": {"name": f"Due Clinic {n}", "timezone": ZONES[n % len(ZONES)]}
        for n in range(count)
    }


def in_db(redis_url: str, db: int) -> str:
    parts = urlsplit(redis_url)
    return urlunsplit(parts._replace(path=f"/{db}"))


class Seeder:
    """The services' stores and write steps in this process, on the bench's database.

    Built like the services (ServiceRuntime, the scheduler's due works, the notifier's),
    never started: nothing here consumes or publishes (no write step has outputs)."""

    def __init__(self, env: dict[str, str], clock: ScaledClock) -> None:
        sched = SchedulerSettings(**env)  # type: ignore[arg-type]
        self.scheduler_runtime = ServiceRuntime.create("scheduler", sched, clock)
        self.scheduler: Scheduler = scheduler_for(self.scheduler_runtime)
        due_works(self.scheduler_runtime, self.scheduler.store)  # the indexes told to its uow
        notif = NotifierSettings(**env)  # type: ignore[arg-type]
        self.notifier_runtime = ServiceRuntime.create("notifier", notif, clock)
        self.queue = DeliveryQueue(self.notifier_runtime.redis)
        notifier_due_work(
            self.queue,
            self.notifier_runtime.unit_of_work,
            self.notifier_runtime.clinics,
            clock,
            buckets=notif.due_buckets,
        )
        self.plans = PlanStore(self.notifier_runtime.redis)
        self.clock = clock
        self.templates: dict[str, ClientSchedule] = {}

    async def close(self) -> None:
        await self.scheduler_runtime.redis.aclose()
        await self.notifier_runtime.redis.aclose()

    # --- boosters ---------------------------------------------------------------

    async def far_boosters(self, clinic_id: str, count: int, rng: random.Random) -> None:
        """Boosters of clients who need no schedule, due in one to twelve months."""
        boosters: LeaseQueue = self.scheduler.store.boosters
        now = self.clock.now()
        due = [
            (booster_member(uuid.uuid4(), rng.randint(1, 8)), now + _months(rng))
            for _ in range(count)
        ]

        async def step(tx: Transaction) -> Decision[None]:
            def write(p: Any) -> None:
                for member, at in due:
                    boosters.schedule(p, clinic_id, member, at)

            return Decision(write)

        await self.scheduler.unit_of_work.run(clinic_id, [], step)

    async def prepare(self, clinic_ids: Sequence[str]) -> None:
        """A completed course per time zone, copied for each due booster's client (a
        course is planned once per zone, not per booster: planning is not what is timed)."""
        for clinic_id in clinic_ids:
            calendar = await self.scheduler.calendar(clinic_id)
            zone = str(calendar.tz)
            if zone not in self.templates:
                completed = self.clock.now() - timedelta(days=14)
                self.templates[zone] = completed_course(calendar, completed)

    async def due_booster(self, clinic_id: str, at: datetime) -> str:
        """A client with a completed course whose first booster falls due at `at`."""
        calendar = await self.scheduler.calendar(clinic_id)
        template = self.templates[str(calendar.tz)]
        client = uuid.uuid4()
        schedule = due_at(template, client, at).model_copy(update={"clinic_id": clinic_id})
        store = self.scheduler.store

        async def step(tx: Transaction) -> Decision[None]:
            return Decision(lambda p: store.save(p, schedule))

        await self.scheduler.unit_of_work.run(clinic_id, [], step)
        return str(client)

    # --- mails ------------------------------------------------------------------------

    async def mails(self, clinic_id: str, send_at: Sequence[datetime]) -> list[str]:
        """Planned emails (a consultation request's receipt) due at `send_at`, spread over
        CLIENTS_PER_CLINIC clients with a known contact, in one write step; their ids."""
        uow: UnitOfWork = self.notifier_runtime.unit_of_work
        clients = [uuid.uuid4() for _ in range(min(CLIENTS_PER_CLINIC, len(send_at)))]
        now = self.clock.now()
        clinic = self.notifier_runtime.clinics.get(clinic_id)
        name = clinic.name if clinic is not None else clinic_id
        plans: list[tuple[uuid.UUID, Plan]] = []
        ids: list[str] = []
        for n, client in enumerate(clients):
            cause = str(uuid.uuid4())
            messages = [
                PlannedMessage(
                    notification_id=uuid.uuid4(),
                    cause_event_id=cause,
                    clinic_id=clinic_id,
                    client_id=client,
                    kind=MessageKind.CONSULTATION_REQUEST_RECEIVED,
                    channel="email",
                    recipient="client",
                    send_at=at,
                    context={"clinic_name": name, "repeat_request": False},
                )
                for at in send_at[n :: len(clients)]
            ]
            ids += [str(m.notification_id) for m in messages]
            envelope = Envelope(
                id=cause,
                source="/kap/bench",
                type="kap.bench.pending",
                time=now,
                subject=str(client),
                clinic_id=clinic_id,
                correlation_id=cause,
            )
            plans.append((client, Plan(cause=envelope, messages=messages)))

        async def step(tx: Transaction) -> Decision[None]:
            writes = []
            for client, plan in plans:
                contact = KnownContact(
                    contact=ev.Contact(
                        name="Bench Person", email=f"{client.hex[:12]}@bench.example"
                    )
                )
                writes.append(  # new clients: never tidied
                    await self.plans.writes(
                        tx, plan, client_id=client, contact=contact, now=now, tidied=None
                    )
                )

            def write(p: Any) -> None:
                for each in writes:
                    each(p)

            return Decision(write)

        await uow.run(clinic_id, [], step)
        return ids


def _months(rng: random.Random) -> timedelta:
    return timedelta(days=rng.uniform(30, 365))


async def _bounded(calls: Sequence[Callable[[], Any]], limit: int = SEED_CONCURRENCY) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Any]) -> Any:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(c) for c in calls)))


# --- measuring -------------------------------------------------------------------


async def redis_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values() if isinstance(v, dict))


def due_rounds(stack: Stack) -> int:
    """Due-work rounds so far, every service process of `stack` summed (/metrics)."""
    total = 0.0
    for process in stack.processes:
        if process.http_port is None:
            continue
        url = f"http://127.0.0.1:{process.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("kap_due_rounds_total{"):
                    total += float(line.rsplit(" ", 1)[1])
    return int(total)


async def sample(redis: Redis, stack: Stack) -> tuple[float, int, int]:
    rounds = await asyncio.to_thread(due_rounds, stack)
    return time.monotonic(), await redis_calls(redis), rounds


def per_round(before: tuple[float, int, int], after: tuple[float, int, int]) -> dict[str, float]:
    seconds, calls, rounds = (a - b for a, b in zip(after, before, strict=True))
    return {
        "seconds": round(seconds, 2),
        "redis_commands": calls,
        "rounds": rounds,
        "commands_per_round": round(calls / rounds, 1) if rounds else float("nan"),
        "commands_per_s": round(calls / seconds, 1),
    }


def lag_figures(lags_ms: list[float]) -> dict[str, float]:
    ordered = sorted(lags_ms)
    return {
        "p50_ms": round(percentile(ordered, 0.50), 1),
        "p99_ms": round(percentile(ordered, 0.99), 1),
        "max_ms": round(ordered[-1], 1) if ordered else float("nan"),
    }


class Case:
    def __init__(
        self,
        redis_url: str,
        bootstrap: str,
        env: Env,
        workdir: Path,
        sizes: Sizes,
        ports: list[int] | None = None,
    ) -> None:
        self.redis_url, self.bootstrap, self.env_of = redis_url, bootstrap, env
        self.workdir, self.sizes, self.ports = workdir, sizes, ports or []
        self.run = uuid.uuid4().hex[:6]
        self.clinics = clinics(self.run, sizes.clinics)
        self.anchor = datetime.now(UTC)
        self.rng = random.Random(7)  # noqa: S311 - reproducible picks, not secrets

    def env(self) -> dict[str, str]:
        path = demo_clinics.write(
            self.workdir / "clinics.json", self.clinics, therapists=2, rooms=2
        )
        return self.env_of(path, self.redis_url, self.anchor)

    def clock(self, env: dict[str, str]) -> ScaledClock:
        origin = datetime.fromisoformat(env["KAP_CLOCK_ORIGIN"])
        return ScaledClock(origin=origin, anchor=self.anchor, scale=1.0)

    async def measure(self) -> dict[str, Any]:
        started = time.monotonic()
        redis = Redis.from_url(self.redis_url, decode_responses=True)
        env = self.env()
        clock = self.clock(env)
        seeder = Seeder(env, clock)
        try:
            await _claim(redis)
            seeded = time.monotonic()
            await self.seed_far(seeder)
            seeding_s = time.monotonic() - seeded
            keys = await redis.dbsize()
            used = int((await redis.info("memory"))["used_memory"])
            phases = {}
            for replicas in (1, 2):
                phases[replicas] = await self.phase(replicas, env, redis, seeder, clock)
        finally:
            await seeder.close()
            await redis.flushdb()
            await redis.aclose()
        worst = max(
            phases[r][what]["p99_ms"] for r in phases for what in ("booster_lag", "delivery_lag")
        )
        return {
            "clinics": self.sizes.clinics,
            "pending": self.sizes.pending,
            "due_per_phase": {"boosters": self.sizes.due, "mails": self.sizes.due},
            "due_window_s": self.sizes.window_s,
            "seeding_s": round(seeding_s, 1),
            "redis_keys": keys,
            "redis_used_memory_bytes": used,
            "replicas_1": phases[1],
            "replicas_2": phases[2],
            "lag_p99_ms": worst,
            "redis_commands_per_tick": max(
                phases[r]["window"]["commands_per_round"] for r in phases
            ),
            "seconds": round(time.monotonic() - started, 1),
            "lag": "Kafka timestamp of each BoosterDue / NotificationSent minus its due instant",
            "redis_commands": "INFO commandstats calls (all clients, MULTI and script "
            "commands included) over the span, divided by the due-work rounds of every "
            "service process in it (kap_due_rounds_total)",
        }

    async def seed_far(self, seeder: Seeder) -> None:
        ids = list(self.clinics)
        boosters, mails = self.sizes.pending // 2, self.sizes.pending - self.sizes.pending // 2
        now = seeder.clock.now()
        rng = self.rng
        calls: list[Callable[[], Any]] = []
        for n, clinic_id in enumerate(ids):
            b = boosters // len(ids) + (n < boosters % len(ids))
            m = mails // len(ids) + (n < mails % len(ids))
            times = [now + _months(rng) for _ in range(m)]
            calls.append(functools.partial(seeder.far_boosters, clinic_id, b, rng))
            calls.append(functools.partial(seeder.mails, clinic_id, times))
        await _bounded(calls)
        picked = rng.sample(ids, min(len(ids), 2 * self.sizes.due))
        await seeder.prepare(sorted(set(picked)))

    async def phase(
        self, replicas: int, env: dict[str, str], redis: Redis, seeder: Seeder, clock: ScaledClock
    ) -> dict[str, Any]:
        stack = Stack(
            self.workdir / f"replicas-{replicas}",
            env,
            replicas=replicas,
            services=("scheduler", "notifier"),
            ports=list(self.ports),
        )
        if self.ports:  # the sinks too, on the given ports
            stack.smtp_port, stack.sms_port = self.ports[-1], self.ports[-2]
        probe = Probe(self.bootstrap, self.redis_url)
        try:
            await asyncio.to_thread(stack.start)
            await probe.start()
            await probe.refresh()
            since = await probe.ends([BOOSTER_DUE.name, NOTIFICATION_SENT.name])
            await asyncio.sleep(1.0)  # the replicas have shared the buckets out
            idle_from = await sample(redis, stack)
            await asyncio.sleep(IDLE_S)
            idle = per_round(idle_from, await sample(redis, stack))
            boosters, mails, _, last = await self.seed_due(seeder, clock)
            window_from = await sample(redis, stack)
            await asyncio.sleep(max(0.0, last - time.time()) + 1.0)
            window = per_round(window_from, await sample(redis, stack))
            announced, sent = await self.collect(since, boosters, mails, last + 30)
        finally:
            with contextlib.suppress(Exception):  # not started, if the stack failed
                await probe.stop()
            await asyncio.to_thread(stack.stop)
        booster_lags = [stamp - boosters[client] * 1000 for client, stamp in announced]
        mail_lags = [stamp - mails[i] * 1000 for i, stamp in sent]
        _exactly_once("booster", [c for c, _ in announced], boosters)
        _exactly_once("mail", [i for i, _ in sent], mails)
        result = {
            "replicas": replicas,
            "booster_lag": {"count": len(booster_lags), **lag_figures(booster_lags)},
            "delivery_lag": {"count": len(mail_lags), **lag_figures(mail_lags)},
            "idle": idle,
            "window": window,
        }
        print(f"thousand clinics, {replicas} replica(s): {json.dumps(result)}", flush=True)
        return result

    async def seed_due(
        self, seeder: Seeder, clock: ScaledClock
    ) -> tuple[dict[str, float], dict[str, float], float, float]:
        """The boosters and mails falling due in the window (wall-clock due instants)."""
        due, window = self.sizes.due, self.sizes.window_s
        first = time.time() + LEAD_S
        instants = [first + window * n / max(due - 1, 1) for n in range(due)]
        ids = list(self.clinics)

        def service_time(wall: float) -> datetime:
            return clock.now() + timedelta(seconds=wall - time.time())

        booster_clinics = self.rng.sample(ids, min(due, len(ids)))
        clinic_of = [booster_clinics[n % len(booster_clinics)] for n in range(due)]
        clients = await _bounded(
            [
                functools.partial(seeder.due_booster, c, service_time(w))
                for c, w in zip(clinic_of, instants, strict=True)
            ]
        )
        boosters = dict(zip(clients, instants, strict=True))
        mail_clinics = [self.rng.choice(ids) for _ in range(due)]
        by_clinic: dict[str, list[float]] = {}
        for clinic_id, wall in zip(mail_clinics, instants, strict=True):
            by_clinic.setdefault(clinic_id, []).append(wall)
        mails: dict[str, float] = {}

        async def plan(clinic_id: str, walls: list[float]) -> None:
            at = [service_time(w) for w in walls]
            # Each message's id with its own instant: ids are in `at`'s order per client.
            ids_ = await seeder.mails(clinic_id, at)
            per_client = min(CLIENTS_PER_CLINIC, len(walls))
            ordered = [w for n in range(per_client) for w in walls[n::per_client]]
            mails.update(zip(ids_, ordered, strict=True))

        await _bounded([functools.partial(plan, c, w) for c, w in by_clinic.items()])
        if time.time() > first:
            raise FigureFailed(f"seeding the due items took past the first due ({LEAD_S} s)")
        return boosters, mails, first, instants[-1]

    async def collect(
        self,
        since: dict[TopicPartition, int],
        boosters: dict[str, float],
        mails: dict[str, float],
        deadline: float,
    ) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """(client, Kafka timestamp ms) of each BoosterDue and (notification, timestamp)
        of each NotificationSent of this phase's due items, until all are in."""
        while True:
            announced, sent = [], []
            records = await read_to_end(
                self.bootstrap, [BOOSTER_DUE.name, NOTIFICATION_SENT.name], since
            )
            for record in records:
                if record.topic == BOOSTER_DUE.name:
                    if (record.key or b"").decode() in boosters:
                        event = ev.BoosterDue.model_validate_json(record.value)
                        announced.append((str(event.client_id), record.timestamp))
                    continue
                if not (record.value or b"").startswith(b"{"):
                    continue
                notification = json.loads(record.value).get("notification_id")
                if notification in mails:
                    sent.append((notification, record.timestamp))
            done = len(announced) >= len(boosters) and len(sent) >= len(mails)
            if done or time.time() > deadline:
                return announced, sent
            await asyncio.sleep(1.0)


def _exactly_once(what: str, found: list[str], due: dict[str, float]) -> None:
    times = Counter(found)
    once = sum(times[item] == 1 for item in due)
    if once != len(due) or len(found) != len(due):
        raise FigureFailed(f"of {len(due)} due {what}s {once} went once, of {len(found)} sent")


async def _claim(redis: Redis) -> None:
    """Empty the database, if it is empty or the bench's (marked) already."""
    if await redis.dbsize() and not await redis.exists(MARK):
        db = redis.connection_pool.connection_kwargs.get("db")
        raise FigureFailed(f"Redis db {db} holds keys the bench did not write: pick another")
    await redis.flushdb()
    await redis.set(MARK, "1")
