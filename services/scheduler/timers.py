"""The booster timers: every replica polls, a lease shares the work, one write step fires.

Boosters fall due together (09:00 clinic time), so a batch claimed from the
clinic's lease queue (chassis.leases) is fired in one write step: the leases
still held are fenced (a replica whose lease ran out, and was taken over,
writes nothing), their clients' schedules read with their keys watched, every
announcement decided (booster_lifecycle.booster_fired announces a booster once,
and only the one still pending), and the saves, the next timers, the leases let
go and the announcements recorded in one MULTI, published after.

A booster announced is owed its booking (domain.booster_booking.owe_booking) and
its lease is due again at once: claimed again, after every booster due before it,
it is booked in a later step (its slots held through the step's Booking,
BoosterTimers._book). The search for free slots is most of a booster's cost, so a
clinic's 09:00 boosters are all announced before any is booked (issue 19), and the
owed booking, saved with the announcement, survives a replica lost in between.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from redis.asyncio.client import Pipeline

from chassis.due_work import DueWork
from chassis.leases import Lease
from chassis.outbox import Output
from chassis.unit_of_work import Decision, Transaction
from services.scheduler.changes import BOOKING_ATTEMPTS, ScheduleChanges
from services.scheduler.domain import booster_booking, booster_lifecycle, booster_sessions, measures
from services.scheduler.domain import ids as domain_ids
from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.facts import Change, course_of
from services.scheduler.domain.plans import PlanFailure
from services.scheduler.domain.schedule import ClientSchedule
from services.scheduler.ledger import Booking, claims_for
from services.scheduler.store import ScheduleWrite, SharedReads, booster_member, booster_of
from services.scheduler.timer_loop import timer_loop
from shared.events import Appointment

BOOSTER_BATCH = 200  # boosters claimed, and fired together, per round
LEASE_MS = 30_000  # real time a claimed batch is a replica's before another may take it


class BoosterTimers(ScheduleChanges):
    async def fire_due_boosters(self, clinic_id: str) -> tuple[int, bool]:
        """Announce the boosters due by now, then book those announced; (how many were
        announced, whether more may be due already)."""
        calendar = await self.calendar(clinic_id)  # before claiming: a bad calendar claims nothing
        announced, claimed, owed = await self._round(clinic_id, calendar)
        if owed and claimed < BOOSTER_BATCH:  # their bookings are due now: at once
            _, claimed, _ = await self._round(clinic_id, calendar)
        self.metrics.pending("booster", clinic_id, await self.store.boosters.due(clinic_id))
        return announced, claimed == BOOSTER_BATCH

    async def _round(self, clinic_id: str, calendar: ClinicCalendar) -> tuple[int, int, bool]:
        """One claimed batch fired: (boosters announced, leases claimed, bookings owed)."""
        now = self.clock.now()
        boosters = self.store.boosters
        leases = await boosters.claim(clinic_id, now, LEASE_MS, BOOSTER_BATCH)
        if not leases:
            return 0, 0, False
        async with boosters.handed_back_on_failure(leases):
            outcome = await self.unit_of_work.run(
                clinic_id, [], functools.partial(self._fire, calendar, now, leases)
            )
        fired = outcome if isinstance(outcome, BoostersFired) else BoostersFired()
        return fired.announced, len(leases), fired.owed

    async def _fire(
        self, calendar: ClinicCalendar, now: datetime, leases: list[Lease], tx: Transaction
    ) -> Decision[BoostersFired]:
        """The write step of a claimed batch: only the leases still held (fenced), their
        clients' schedules watched from the read, every change in one MULTI. A booster
        due is announced and owed its booking, its lease due again now; the booster's
        lease, claimed again, books it."""
        boosters, clinic_id = self.store.boosters, tx.clinic_id
        fenced = await boosters.fence_all(tx, leases)
        held = [lease for lease, ok in zip(leases, fenced, strict=True) if ok]
        by_client: dict[UUID, list[int]] = {}
        due = sorted((booster_of(lease.member) for lease in held), key=lambda b: b[1])
        for client_id, number in due:
            by_client.setdefault(client_id, []).append(number)
        clients = list(by_client)
        await tx.watch(*(self.store.schedule_key(clinic_id, c) for c in clients))
        saves: list[tuple[ClientSchedule, ClientSchedule]] = []
        outputs: list[Output] = []
        owed: set[str] = set()  # the leases due again now, for their bookings
        booking, holds, fired = self.store.ledger.booking(tx, clinic_id), _Held(), BoostersFired()
        shared = SharedReads()  # the therapists' and rooms' bookings, read once
        book = calendar.policy.book_boosters
        for schedule in await self.store.load_many(clinic_id, clients):
            if schedule is None or schedule.course is None:
                continue  # nothing to announce: the timer is let go with the others
            course_id, before, owes = schedule.course.plan.course_id, schedule, False
            for number in by_client[schedule.client_id]:  # several: the scheduler was away
                due_at = schedule.course.next_booster_due_at if schedule.course else None
                schedule, events = booster_lifecycle.booster_fired(schedule, number, calendar, now)
                if events and due_at is not None:
                    cause = domain_ids.booster_cause(course_id, number, due_at)
                    outputs += self.derived(schedule, events, cause)
                    fired.announced += 1
                    if book and booster_booking.may_book(schedule.course):
                        schedule = booster_booking.owe_booking(schedule, number, due_at)
                        owed.add(booster_member(schedule.client_id, number))
                        owes = True
                elif (to_book := booster_booking.booking_owed(schedule.course, number)) is None:
                    continue
                elif book and booster_booking.may_book(schedule.course):
                    schedule, events = await self._book(
                        calendar, schedule, number, to_book.due_at, now, booking, holds, shared
                    )
                    cause = domain_ids.booster_booking_cause(course_id, number, to_book.due_at)
                    outputs += self.derived(schedule, events, cause)
                else:  # stopped, ended, or no longer booked by the clinic: let go
                    schedule = booster_booking.booking_settled(schedule, number)
            if schedule is before:
                continue
            if not owes:  # a booked booster's dose is measured before (domain.measures)
                schedule = measures.replanned(schedule, calendar.policy.measures, calendar.tz, now)
            saves.append((domain_ids.saved(schedule, before), before))
        fired.owed = bool(owed)

        def write(p: Pipeline) -> None:
            boosters.retry_all_at(p, [lease for lease in held if lease.member in owed], now)
            boosters.done_all(p, [lease for lease in held if lease.member not in owed])
            self.store.save_all(  # arms the next boosters, if any
                p,
                [
                    ScheduleWrite(schedule, before, schedule.client_id not in holds.clients)
                    for schedule, before in saves
                ],
                now=now,
            )
            booking.write(p)

        return Decision(write, outputs, fired)

    async def _book(
        self,
        calendar: ClinicCalendar,
        schedule: ClientSchedule,
        number: int,
        due_at: datetime,
        now: datetime,
        booking: Booking,
        held: _Held,
        shared: SharedReads,
    ) -> Change:
        """Book the booster that fell due, its slots held through the step's Booking (the
        batch's earlier holds, not in the ledger yet, count as taken); else the failure."""
        course = course_of(schedule)
        course_id, client_id = course.plan.course_id, schedule.client_id
        last = calendar.policy.booster_booking_days[1]
        ahead = max(0, (due_at - now).days) + last + 15 + booster_sessions.EARLIEST_FIT_DAYS
        own = booster_sessions.booster_ids(course_id, number)
        for _ in range(BOOKING_ATTEMPTS):
            bookings = await self.store.bookings(calendar, client_id, now, ahead, own, shared)
            bookings = booster_sessions.with_held(
                bookings, held.others(client_id), held.own(client_id)
            )
            placed = booster_sessions.place_booster(
                calendar,
                bookings,
                course_id,
                number,
                due_at,
                now,
                course.plan.therapist_id,
                schedule.course_availability(calendar.policy.course_in_consultation_times),
            )
            if isinstance(placed, PlanFailure):
                return booster_booking.booster_booking_failed(schedule, number, due_at, placed, now)
            if await self.reserved(booking, claims_for(client_id, placed)):
                held.add(client_id, placed)
                return booster_booking.booster_booked(schedule, number, due_at, placed, now)
            shared.by_horizon.clear()  # taken meanwhile: what was read is out of date
        taken = PlanFailure(reason="the booster's slots kept being taken")
        return booster_booking.booster_booking_failed(schedule, number, due_at, taken, now)


@dataclass
class BoostersFired:
    """What one write step did: boosters announced, and whether bookings are owed."""

    announced: int = 0
    owed: bool = False


@dataclass
class _Held:
    """Sessions one write step has held so far, by client."""

    by_client: dict[UUID, list[Appointment]] = field(default_factory=dict)

    @property
    def clients(self) -> set[UUID]:
        return set(self.by_client)

    def add(self, client_id: UUID, appointments: Sequence[Appointment]) -> None:
        self.by_client.setdefault(client_id, []).extend(appointments)

    def own(self, client_id: UUID) -> list[Appointment]:
        return self.by_client.get(client_id, [])

    def others(self, client_id: UUID) -> list[Appointment]:
        return [a for c, held in self.by_client.items() if c != client_id for a in held]


def booster_timer(
    timers: BoosterTimers, work: DueWork, poll_s: float, stopping: asyncio.Event
) -> Callable[[], Coroutine[Any, Any, None]]:
    """The loop over the clinics `work` finds due; it ends after the round in progress
    once `stopping` is set (a drain)."""
    return timer_loop("booster", timers, timers.fire_due_boosters, work, poll_s, stopping)
