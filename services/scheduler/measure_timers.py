"""The measure timers: as the booster timers (timers.py), a lease shares the work and one
write step fires a claimed batch.

A timer waits for each pending measure of a course to open (store.save arms it;
domain.measures says when). Fired, in one write step: the leases still held are
fenced, their clients' schedules and measure logs read with their keys watched,
each measure decided (domain.measures.fired: sent once, only while open and not
answered), and the saves, the leases let go and the MeasureDue announcements
recorded in one MULTI, published after. A MeasureDue's id derives from its
measure's, so a timer fired again after a failed write repeats it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any
from uuid import UUID

from redis.asyncio.client import Pipeline

from chassis.due_work import DueWork
from chassis.leases import Lease
from chassis.outbox import Output
from chassis.unit_of_work import Decision, Transaction
from services.scheduler.changes import ScheduleChanges
from services.scheduler.domain import ids as domain_ids
from services.scheduler.domain import measures
from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.schedule import ClientSchedule
from services.scheduler.measure_log import log_key
from services.scheduler.store import ScheduleWrite, measure_member, measure_of
from services.scheduler.timer_loop import timer_loop

MEASURE_BATCH = 50  # measures claimed, and fired together, per round
LEASE_MS = 30_000  # real time a claimed batch is a replica's before another may take it


class MeasureTimers(ScheduleChanges):
    async def fire_due_measures(self, clinic_id: str) -> tuple[int, bool]:
        """Announce the measures open by now; (how many, whether more may be due already)."""
        now = self.clock.now()
        calendar = await self.calendar(clinic_id)  # before claiming: a bad calendar claims nothing
        queue = self.store.measures
        leases = await queue.claim(clinic_id, now, LEASE_MS, MEASURE_BATCH)
        fired = 0
        if leases:
            async with queue.handed_back_on_failure(leases):
                outcome = await self.unit_of_work.run(
                    clinic_id, [], functools.partial(self._fire_measures, calendar, now, leases)
                )
            fired = outcome if isinstance(outcome, int) else 0
        self.metrics.pending("measure", clinic_id, await queue.due(clinic_id))
        return fired, len(leases) == MEASURE_BATCH

    async def _fire_measures(
        self, calendar: ClinicCalendar, now: datetime, leases: list[Lease], tx: Transaction
    ) -> Decision[int]:
        queue, clinic_id = self.store.measures, tx.clinic_id
        fenced = await queue.fence_all(tx, leases)
        held = [lease for lease, ok in zip(leases, fenced, strict=True) if ok]
        by_client: dict[UUID, set[UUID]] = {}
        for client_id, measure_id in (measure_of(lease.member) for lease in held):
            by_client.setdefault(client_id, set()).add(measure_id)
        clients = list(by_client)
        await tx.watch(
            *(self.store.schedule_key(clinic_id, c) for c in clients),
            *(log_key(clinic_id, c) for c in clients),
        )
        answers = await self.store.measure_log.answers_of(clinic_id, clients)
        saves: list[tuple[ClientSchedule, ClientSchedule]] = []
        not_yet: list[tuple[str, datetime]] = []
        outputs: list[Output] = []
        for before in await self.store.load_many(clinic_id, clients):
            if before is None:
                continue  # nothing to announce: the timer is let go with the others
            client_id, policy = before.client_id, calendar.policy.measures
            after, due = measures.fired(
                before, by_client[client_id], answers[client_id], policy, calendar.tz, now
            )
            not_yet += [
                (measure_member(client_id, m.measure_id), m.opens_at)
                for m in measures.pending(after)
                if m.measure_id in by_client[client_id]
            ]
            if after != before:
                saves.append((domain_ids.saved(after, before), before))
            for event in due:
                outputs += self.derived(after, [event], domain_ids.measure_cause(event.measure_id))

        def write(p: Pipeline) -> None:
            queue.done_all(p, held)
            queue.schedule_all(p, clinic_id, dict(not_yet))  # fired early: opens later now
            self.store.save_all(
                p, [ScheduleWrite(after, before, True) for after, before in saves], now=now
            )

        return Decision(write, outputs, len(outputs))


def measure_timer(
    timers: MeasureTimers, work: DueWork, poll_s: float, stopping: asyncio.Event
) -> Callable[[], Coroutine[Any, Any, None]]:
    """The loop over the clinics `work` finds due; it ends after the round in progress
    once `stopping` is set (a drain)."""
    return timer_loop("measure", timers, timers.fire_due_measures, work, poll_s, stopping)
