"""The scheduler's Redis state: client schedules, appointment index, calendars, timers.

Every key carries the `{clinic_id}` hash tag (see ledger.py for the bookings,
measure_log.py for the answered measures). Booster and measure timers are the
clinic's lease queues (chassis.leases): with several replicas polling, each timer
is claimed by one of them, and one that died mid-way is taken over when its lease
runs out. Writes are queued on a write
step's MULTI (chassis.unit_of_work); nothing here writes on its own but the
calendar set through the API.
"""

from __future__ import annotations

import base64
import functools
import logging
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.typing import EncodableT, FieldT

from chassis.leases import LeaseQueue
from chassis.unit_of_work import Transaction
from services.scheduler.domain import measures
from services.scheduler.domain.clinic import ClinicCalendar, Interval
from services.scheduler.domain.plans import Bookings
from services.scheduler.domain.schedule import ClientSchedule
from services.scheduler.ledger import (
    Booked,
    BookingLedger,
    Resource,
    booking_key,
    queue_trim_ended,
    text,
)
from services.scheduler.measure_log import MeasureLog
from services.scheduler.waitlist_store import WaitlistStore

log = logging.getLogger(__name__)


def key(clinic_id: str, *parts: str) -> str:
    return ":".join(("sched", f"{{{clinic_id}}}", *parts))


# A schedule is kept compressed (issue 18: at most 20 KB of Redis per client once the
# course ended): its JSON repeats field names, ids and times, and deflates to about a
# quarter (a finished 6-session course: 9.7 KB of JSON, 2.7 KB stored). As text, for the
# services' clients decode replies: base64, whose codec is C (Base85's is Python, and
# took a fifth of a booster announcement's CPU, issue 19) for 6% more bytes. Schedules
# saved before, in Base85 or as plain JSON, still read.
_PACKED = "z2:"
_PACKED_BASE85 = "z1:"


def pack(schedule: ClientSchedule) -> str:
    # Fields at their defaults (empty maps, unset times) are left out: they read back
    # as the defaults, deterministic ones only (no factory makes ids or times).
    deflated = zlib.compress(schedule.model_dump_json(exclude_defaults=True).encode(), 9)
    return _PACKED + base64.b64encode(deflated).decode()


def unpack(raw: str | bytes) -> ClientSchedule:
    stored = raw.decode() if isinstance(raw, bytes) else raw
    if stored.startswith(_PACKED):
        stored = zlib.decompress(base64.b64decode(stored[len(_PACKED) :])).decode()
    elif stored.startswith(_PACKED_BASE85):
        stored = zlib.decompress(base64.b85decode(stored[len(_PACKED_BASE85) :])).decode()
    return ClientSchedule.model_validate_json(stored)


@functools.lru_cache(maxsize=16_384)
def _interval(starts_at: datetime, ends_at: datetime) -> Interval:
    """A booked span as the planner takes it, validated once per span: the same bookings
    are read for every request (an Interval is frozen, so one is shared)."""
    return Interval(starts_at=starts_at, ends_at=ends_at)


# The appointment index (appointment -> client, for the clinic's routes) is one hash per
# clinic whose fields and values are the ids' 16 bytes in base64url (22 characters): a
# key per appointment (about 20 per course) cost 168 bytes each, mostly the key's own
# name and overhead; a field of this hash costs about 48 (96 once a clinic's hash holds
# more than Redis's `hash-max-listpack-entries`, 128 by default, and is a table).
# Indexes written before, one string key per appointment, still read.
def compact_id(value: UUID) -> str:
    return base64.urlsafe_b64encode(value.bytes).decode().rstrip("=")


def id_of_compact(value: str) -> UUID:
    return UUID(bytes=base64.urlsafe_b64decode(value + "=="))


def calendar_key(clinic_id: str) -> str:
    """The clinic's calendar set through the API (JSON)."""
    return key(clinic_id, "calendar")


def appointments_key(clinic_id: str) -> str:
    return key(clinic_id, "appointments")


class BoosterQueue(LeaseQueue):
    """The booster timers: chassis.leases on the keys they had before it, so a running
    deployment's timers carry over (an old in-flight claim, scored on the service
    clock in seconds, reads as a lease long expired and is taken over at once)."""

    def due_key(self, clinic_id: str) -> str:
        return key(clinic_id, "boosters", "due")

    def leased_key(self, clinic_id: str) -> str:
        return key(clinic_id, "boosters", "inflight")

    def tokens_key(self, clinic_id: str) -> str:
        return key(clinic_id, "boosters", "tokens")


class MeasureQueue(LeaseQueue):
    """The measure timers: one member per pending measure, due when it opens."""

    def due_key(self, clinic_id: str) -> str:
        return key(clinic_id, "measure-timers", "due")

    def leased_key(self, clinic_id: str) -> str:
        return key(clinic_id, "measure-timers", "inflight")

    def tokens_key(self, clinic_id: str) -> str:
        return key(clinic_id, "measure-timers", "tokens")


def measure_member(client_id: UUID, measure_id: UUID) -> str:
    return f"{client_id}|{measure_id}"


def measure_of(member: str) -> tuple[UUID, UUID]:
    client, measure = member.split("|")
    return UUID(client), UUID(measure)


def booster_member(client_id: UUID, number: int) -> str:
    return f"{client_id}|{number}"


def booster_of(member: str) -> tuple[UUID, int]:
    client, number = member.split("|")
    return UUID(client), int(number)


@dataclass
class SharedReads:
    """The clinic's therapists' and rooms' bookings by horizon, as one write step read
    them: a batch of boosters reads them once, not once a booster (the step's own holds
    come on top, booster_sessions.with_held; the ledger's script checks every claim)."""

    by_horizon: dict[tuple[datetime, datetime], dict[tuple[Resource, str], list[Booked]]] = field(
        default_factory=dict
    )


@dataclass(frozen=True)
class ScheduleWrite:
    """One client's schedule for `SchedulerStore.save_all`: `before` as read (its measures
    no longer pending lose their timers), `same_appointments` when none changed (the
    appointment index stands)."""

    schedule: ClientSchedule
    before: ClientSchedule | None = None
    same_appointments: bool = False


def _index_of(schedule: ClientSchedule) -> dict[FieldT, EncodableT]:
    """The appointment index's fields for the schedule's appointments."""
    appointments = [schedule.consultation] if schedule.consultation else []
    if schedule.course:
        appointments += list(schedule.course.plan.appointments)
        appointments += [a for b in schedule.course.booster_sessions for a in b.appointments]
    owner = compact_id(schedule.client_id)
    return {compact_id(a.appointment_id): owner for a in appointments}


class SchedulerStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.ledger = BookingLedger(redis)
        self.boosters = BoosterQueue(redis, "boosters")
        self.waitlist = WaitlistStore(redis)
        self.measures = MeasureQueue(redis, "measure-timers")
        self.measure_log = MeasureLog(redis)

    # --- client schedules -------------------------------------------------

    async def load(self, clinic_id: str, client_id: UUID) -> ClientSchedule | None:
        raw = await self.redis.get(key(clinic_id, "client", str(client_id)))
        return unpack(raw) if raw else None

    async def load_watched(
        self, tx: Transaction, clinic_id: str, client_id: UUID
    ) -> ClientSchedule | None:
        """The schedule a change decides on, its key watched by `tx` (one round trip). The
        clinic's calendar set through the API comes with it, unwatched, for the change's
        `calendar_override` (most changes plan on the calendar)."""
        schedule, calendar = self.schedule_key(clinic_id, client_id), calendar_key(clinic_id)
        async with await tx.watched_reads(schedule) as reads:
            reads.get(schedule)
            reads.get(calendar)
            raw, tx.unwatched[calendar] = await reads.execute()
        return unpack(raw) if raw else None

    async def load_many(
        self, clinic_id: str, client_ids: Sequence[UUID]
    ) -> list[ClientSchedule | None]:
        """The schedules of `client_ids`, in order, read in one round trip."""
        if not client_ids:
            return []
        raws = await self.redis.mget([key(clinic_id, "client", str(c)) for c in client_ids])
        return [unpack(raw) if raw else None for raw in raws]

    async def client_ids(self, clinic_id: str) -> list[UUID]:
        """Every client the clinic's scheduler has a schedule for."""
        members = await self.redis.smembers(key(clinic_id, "clients"))
        return sorted(UUID(text(member)) for member in members)

    def schedule_key(self, clinic_id: str, client_id: UUID) -> str:
        """The key a change watches from its read to its write."""
        return key(clinic_id, "client", str(client_id))

    async def client_of(self, clinic_id: str, appointment_id: UUID) -> UUID | None:
        found = await self.redis.hget(appointments_key(clinic_id), compact_id(appointment_id))
        if found:
            return id_of_compact(text(found))
        legacy = await self.redis.get(key(clinic_id, "appointment", str(appointment_id)))
        return UUID(text(legacy)) if legacy else None

    async def clients_of(self, clinic_id: str, appointment_ids: Sequence[UUID]) -> dict[UUID, UUID]:
        """The client of each of `appointment_ids` the index knows, as `client_of` finds
        it: one HMGET for them all (and one MGET for those only a legacy key may name)."""
        if not appointment_ids:
            return {}
        fields = [compact_id(a) for a in appointment_ids]
        found = await self.redis.hmget(appointments_key(clinic_id), fields)
        owners = {
            a: id_of_compact(text(owner))
            for a, owner in zip(appointment_ids, found, strict=True)
            if owner
        }
        unindexed = [a for a in appointment_ids if a not in owners]
        if unindexed:
            legacy = await self.redis.mget(
                [key(clinic_id, "appointment", str(a)) for a in unindexed]
            )
            owners |= {a: UUID(text(o)) for a, o in zip(unindexed, legacy, strict=True) if o}
        return owners

    def save(
        self,
        tx: Pipeline,
        schedule: ClientSchedule,
        *,
        same_appointments: bool = False,
        before: ClientSchedule | None = None,
        now: datetime | None = None,
    ) -> None:
        """Add the schedule, its appointment index, its booster timer and its measure timers to
        a write step's MULTI (`tx`).

        `same_appointments`: the caller changed no appointment, so the index stands.
        `before`: the schedule as read; the timers of its measures no longer pending go.
        `now`: the step's instant; the client's own booking set loses what ended before it.
        """
        self.save_all(tx, [ScheduleWrite(schedule, before, same_appointments)], now=now)

    def save_all(
        self, tx: Pipeline, writes: Sequence[ScheduleWrite], *, now: datetime | None = None
    ) -> None:
        """`save` for several clients of one clinic, each key's commands merged into one
        (a batch's reply parsing is per command, chassis.leases)."""
        if not writes:
            return
        clinic = writes[0].schedule.clinic_id
        clients = [str(w.schedule.client_id) for w in writes]
        if any(w.schedule.clinic_id != clinic for w in writes) or len(set(clients)) < len(writes):
            raise ValueError("one write per client, all of one clinic")
        index: dict[FieldT, EncodableT] = {}
        boosters: dict[str, datetime] = {}
        measures_due: dict[str, datetime] = {}
        measures_gone: list[str] = []
        for write, client in zip(writes, clients, strict=True):
            schedule = write.schedule
            tx.set(key(clinic, "client", client), pack(schedule))
            if not write.same_appointments:
                index |= _index_of(schedule)
            course = schedule.course
            if course and course.next_booster and course.next_booster_due_at:
                member = booster_member(schedule.client_id, course.next_booster)
                boosters[member] = course.next_booster_due_at
            timer = functools.partial(measure_member, schedule.client_id)
            waiting = {m.measure_id: m.opens_at for m in measures.pending(schedule)}
            measures_due |= {timer(measure_id): at for measure_id, at in waiting.items()}
            measures_gone += [
                timer(gone.measure_id)
                for gone in measures.pending(write.before)
                if gone.measure_id not in waiting
            ]
        if index:
            tx.hset(appointments_key(clinic), mapping=index)
        if now is not None:
            # A client's own slots guard only against booking them twice at once; no
            # booking is made in the past, so what ended goes: a client whose sessions
            # are all over keeps no booking set at all (issue 18).
            queue_trim_ended(tx, [booking_key(clinic, "client", c) for c in clients], now)
        self.boosters.schedule_all(tx, clinic, boosters)
        self.measures.schedule_all(tx, clinic, measures_due)
        self.measures.cancel_all(tx, clinic, measures_gone)
        tx.sadd(key(clinic, "clients"), *clients)

    # --- calendars --------------------------------------------------------

    async def calendar_override(self, clinic_id: str, tx: Transaction | None = None) -> str | None:
        """The calendar set through the API (JSON), if any; it wins over the clinics file.
        Inside a change (`tx`), as its schedule's read fetched it."""
        calendar = calendar_key(clinic_id)
        if tx is not None and calendar in tx.unwatched:
            raw = tx.unwatched[calendar]
        else:
            raw = await self.redis.get(calendar)
        return str(raw) if raw else None

    async def has_calendar_override(self, clinic_id: str) -> bool:
        return bool(await self.redis.exists(calendar_key(clinic_id)))

    async def save_calendar(self, calendar: ClinicCalendar) -> None:
        await self.redis.set(calendar_key(calendar.clinic_id), calendar.model_dump_json())

    async def bookings(
        self,
        calendar: ClinicCalendar,
        client_id: UUID,
        since: datetime,
        days: int,
        ignore: Iterable[UUID] = (),
        shared: SharedReads | None = None,
    ) -> Bookings:
        """What is taken over the planning horizon, less the caller's own appointments.
        `shared`: the therapists' and rooms' bookings as an earlier call of the same step
        read them over the same horizon, reused (its own holds are the step's to add)."""
        until = since + timedelta(days=days)
        ignored = set(ignore)
        everyone: list[tuple[Resource, str]] = [
            *(("therapist", t.id) for t in calendar.therapists),
            *(("room", r.id) for r in calendar.rooms),
        ]
        client: tuple[Resource, str] = ("client", str(client_id))
        known = shared.by_horizon.get((since, until)) if shared is not None else None
        resources = [client] if known is not None else [*everyone, client]
        booked = await self.ledger.booked(calendar.clinic_id, resources, since, until)
        found = dict(zip(resources, booked, strict=True))
        if known is not None:
            found.update(known)
        elif shared is not None:
            shared.by_horizon[since, until] = {r: found[r] for r in everyone}
        taken = {
            resource: tuple(
                _interval(b.starts_at, b.ends_at) for b in held if b.appointment_id not in ignored
            )
            for resource, held in found.items()
        }
        return Bookings(
            therapists={t.id: taken["therapist", t.id] for t in calendar.therapists},
            rooms={r.id: taken["room", r.id] for r in calendar.rooms},
            client=taken["client", str(client_id)],
        )
