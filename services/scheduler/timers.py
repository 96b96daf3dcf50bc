"""The booster timers: every replica polls, a lease shares the work, one write step fires.

Boosters fall due together (09:00 clinic time), so a claimed batch is fired in
one write step: its clients' schedules are read with their keys watched, every
announcement decided (lifecycle.booster_fired announces a booster once, and
only the one still pending), and the saves, the timers' removal and the
announcements recorded in one MULTI, published after. A replica whose lease ran
out while another took the batch over writes nothing: the schedules it read
changed, so its step decides again and finds nothing left to announce.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any
from uuid import UUID

from redis.asyncio.client import Pipeline

from chassis.effects import Output
from chassis.unit_of_work import Decision, Transaction
from services.scheduler.changes import ScheduleChanges
from services.scheduler.domain import ids as domain_ids
from services.scheduler.domain import lifecycle
from services.scheduler.domain.schedule import ClientSchedule

log = logging.getLogger(__name__)

BOOSTER_BATCH = 50  # boosters claimed, and fired together, per round
LEASE_S = 30.0  # real seconds a claimed batch is a replica's before another may take it


class BoosterTimers(ScheduleChanges):
    async def fire_due_boosters(self, clinic_id: str) -> tuple[int, bool]:
        """Announce the boosters due by now; (how many, whether more may be due already)."""
        now = self.clock.now()
        lease = now + timedelta(seconds=self.clock_seconds(LEASE_S))
        calendar = await self.calendar(clinic_id)  # before claiming: a bad calendar claims nothing
        due = await self.store.claim_due_boosters(clinic_id, now, lease, limit=BOOSTER_BATCH)
        by_client: dict[UUID, list[int]] = {}
        for client_id, number in sorted(due, key=lambda d: d[1]):
            by_client.setdefault(client_id, []).append(number)
        clients = list(by_client)

        async def step(tx: Transaction) -> Decision[int]:
            await tx.watch(*(self.store.schedule_key(clinic_id, c) for c in clients))
            fired: list[tuple[ClientSchedule, list[int]]] = []
            outputs: list[Output] = []
            for schedule in await self.store.load_many(clinic_id, clients):
                if schedule is None or schedule.course is None:
                    continue  # left in flight: taken over when its lease ends
                course_id, before = schedule.course.plan.course_id, schedule
                numbers = by_client[schedule.client_id]
                announced = []
                for number in numbers:  # several only if the scheduler was away that long
                    due_at = schedule.course.next_booster_due_at if schedule.course else None
                    schedule, events = lifecycle.booster_fired(schedule, number, calendar, now)
                    if events and due_at is not None:
                        cause = domain_ids.booster_cause(course_id, number, due_at)
                        announced += self.derived(schedule, events, cause)
                if announced:
                    schedule = domain_ids.saved(schedule, before)
                fired.append((schedule if announced else before, numbers))
                outputs += announced

            def write(p: Pipeline) -> None:
                for schedule, numbers in fired:
                    for number in numbers:
                        self.store.booster_done(p, clinic_id, schedule.client_id, number)
                    self.store.save(p, schedule, same_appointments=True)

            return Decision(write, outputs, len({o.event.client_id for o in outputs}))

        fired = 0
        if clients:
            outcome = await self.unit_of_work.run(clinic_id, [], step)
            fired = outcome if isinstance(outcome, int) else 0
        self.metrics.pending("booster", clinic_id, await self.store.pending_boosters(clinic_id))
        return fired, len(due) == BOOSTER_BATCH

    def clock_seconds(self, real_seconds: float) -> float:
        """`real_seconds` of wall time in this clock's time (leases count in real time)."""
        one = self.clock.real_seconds(timedelta(seconds=1)) or 1.0
        return real_seconds / one


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
