"""The booster timers: every replica polls, a lease shares the work, one write step fires.

Boosters fall due together (09:00 clinic time), so a batch claimed from the
clinic's lease queue (chassis.leases) is fired in one write step: the leases
still held are fenced (a replica whose lease ran out, and was taken over,
writes nothing), their clients' schedules read with their keys watched, every
announcement decided (booster_lifecycle.booster_fired announces a booster once,
and only the one still pending), each booster announced booked there and then
(its slots held through the step's Booking, BoosterTimers._book), and the saves,
the next timers, the leases let go, the ledger's holds and the announcements
recorded in one MULTI, published after.
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
from services.scheduler.store import SharedReads, booster_of
from services.scheduler.timer_loop import timer_loop
from shared.events import Appointment

BOOSTER_BATCH = 200  # boosters claimed, and fired together, per round
LEASE_MS = 30_000  # real time a claimed batch is a replica's before another may take it


class BoosterTimers(ScheduleChanges):
    async def fire_due_boosters(self, clinic_id: str) -> tuple[int, bool]:
        """Announce the boosters due by now; (how many, whether more may be due already)."""
        now = self.clock.now()
        calendar = await self.calendar(clinic_id)  # before claiming: a bad calendar claims nothing
        boosters = self.store.boosters
        leases = await boosters.claim(clinic_id, now, LEASE_MS, BOOSTER_BATCH)
        fired = 0
        if leases:
            async with boosters.handed_back_on_failure(leases):
                outcome = await self.unit_of_work.run(
                    clinic_id, [], functools.partial(self._fire, calendar, now, leases)
                )
            fired = outcome if isinstance(outcome, int) else 0
        self.metrics.pending("booster", clinic_id, await boosters.due(clinic_id))
        return fired, len(leases) == BOOSTER_BATCH

    async def _fire(
        self, calendar: ClinicCalendar, now: datetime, leases: list[Lease], tx: Transaction
    ) -> Decision[int]:
        """The write step of a claimed batch: only the leases still held (fenced), their
        clients' schedules watched from the read, every announcement in one MULTI."""
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
        booking, holds = self.store.ledger.booking(tx, clinic_id), _Held()
        shared = SharedReads()  # the therapists' and rooms' bookings, read once
        for schedule in await self.store.load_many(clinic_id, clients):
            if schedule is None or schedule.course is None:
                continue  # nothing to announce: the timer is let go with the others
            course_id, before = schedule.course.plan.course_id, schedule
            announced: list[Output] = []
            for number in by_client[schedule.client_id]:  # several: the scheduler was away
                due_at = schedule.course.next_booster_due_at if schedule.course else None
                schedule, events = booster_lifecycle.booster_fired(schedule, number, calendar, now)
                if events and due_at is not None:
                    if calendar.policy.book_boosters and booster_booking.may_book(schedule.course):
                        schedule, booked = await self._book(
                            calendar, schedule, number, due_at, now, booking, holds, shared
                        )
                        events += booked
                    cause = domain_ids.booster_cause(course_id, number, due_at)
                    announced += self.derived(schedule, events, cause)
            if announced:  # a booked booster's dose is measured before (domain.measures)
                policy = calendar.policy.measures
                schedule = measures.replanned(schedule, policy, calendar.tz, now)
                saves.append((domain_ids.saved(schedule, before), before))
                outputs += announced

        def write(p: Pipeline) -> None:
            for lease in held:
                boosters.done(p, lease)
            for schedule, before in saves:  # arms the next booster, if any
                booked = schedule.client_id in holds.clients
                self.store.save(p, schedule, same_appointments=not booked, before=before, now=now)
            booking.write(p)

        return Decision(write, outputs, len(saves))

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
