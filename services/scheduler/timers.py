"""The booster timers: every replica polls, a lease shares the work, one write step fires.

Boosters fall due together (09:00 clinic time), so a batch claimed from the
clinic's lease queue (chassis.leases) is fired in one write step: the leases
still held are fenced (a replica whose lease ran out, and was taken over,
writes nothing), their clients' schedules read with their keys watched, every
announcement decided (booster_lifecycle.booster_fired announces a booster once,
and only the one still pending), and the saves, the next timers, the leases let
go and the announcements recorded in one MULTI, published after.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any
from uuid import UUID

from redis.asyncio.client import Pipeline

from chassis.leases import Lease
from chassis.outbox import Output
from chassis.unit_of_work import Decision, Transaction
from services.scheduler.changes import ScheduleChanges
from services.scheduler.domain import booster_lifecycle
from services.scheduler.domain import ids as domain_ids
from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.schedule import ClientSchedule
from services.scheduler.store import booster_of

log = logging.getLogger(__name__)

BOOSTER_BATCH = 50  # boosters claimed, and fired together, per round
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
        saves: list[ClientSchedule] = []
        outputs: list[Output] = []
        for schedule in await self.store.load_many(clinic_id, clients):
            if schedule is None or schedule.course is None:
                continue  # nothing to announce: the timer is let go with the others
            course_id, before = schedule.course.plan.course_id, schedule
            announced: list[Output] = []
            for number in by_client[schedule.client_id]:  # several: the scheduler was away
                due_at = schedule.course.next_booster_due_at if schedule.course else None
                schedule, events = booster_lifecycle.booster_fired(schedule, number, calendar, now)
                if events and due_at is not None:
                    cause = domain_ids.booster_cause(course_id, number, due_at)
                    announced += self.derived(schedule, events, cause)
            if announced:
                saves.append(domain_ids.saved(schedule, before))
                outputs += announced

        def write(p: Pipeline) -> None:
            for lease in held:
                boosters.done(p, lease)
            for schedule in saves:  # arms the next booster, if any
                self.store.save(p, schedule, same_appointments=True)

        return Decision(write, outputs, len(saves))


def booster_timer(
    timers: BoosterTimers, poll_s: float, stopping: asyncio.Event
) -> Callable[[], Coroutine[Any, Any, None]]:
    """The loop; it ends after the round in progress once `stopping` is set (a drain)."""

    async def fire_boosters_when_due() -> None:
        # redis-py 8.1 can swallow a cancellation that lands inside a script
        # call, so the loop also asks whether it is being cancelled.
        task = asyncio.current_task()
        while not stopping.is_set() and (task is None or not task.cancelling()):
            try:
                more_due = await _one_round(timers)
            except Exception:  # Redis, Kafka or the clinics file: the loop outlives them
                log.exception("booster timer round failed")
                more_due = False
            # Boosters fall due together (09:00 clinic time): a full batch means
            # the next is probably waiting already, so no sleep before it.
            if not more_due:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), poll_s)

    return fire_boosters_when_due


async def _one_round(timers: BoosterTimers) -> bool:
    """Fire what is due in every clinic; whether more may be due already somewhere."""
    more_due = False
    for clinic in timers.clinics.all():
        if not clinic.section("scheduler") and not await timers.has_calendar(clinic.id):
            continue  # a clinic that books nothing here has no boosters either
        try:
            fired, more = await timers.fire_due_boosters(clinic.id)
            more_due = more_due or more
            if fired:
                log.info("boosters due announced", extra={"clinic_id": clinic.id})
        except Exception:  # one clinic's failure does not hold up the others
            log.exception("booster timer round failed", extra={"clinic_id": clinic.id})
    return more_due
