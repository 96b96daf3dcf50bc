"""The loop every scheduler timer runs: each round fires what is due in the clinics found due.

The clinics come from the timer kind's due index (chassis.due_work): those of this
replica's buckets with something due by now, and a few of the slow sweep's, so a
round costs what is due, not one look per clinic. Each is fired, then settled (its
index score is its next due time again). A clinic that books nothing here (gone
from the clinics, or no scheduler calendar) leaves the index; one clinic's failure
does not hold up the others, and the loop outlives Redis, Kafka or the clinics
failing. A full batch means more is probably due already (boosters and follow-ups
fall due together at 09:00 clinic time), so the next round starts at once;
otherwise it sleeps until the earliest item of its buckets falls due, at most
`poll_s` (a booster is announced when it falls due, not up to a poll later),
ending after the round in progress once `stopping` is set (a drain), when it lets
go of its buckets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Protocol

from chassis.clinics import ClinicDirectory
from chassis.clock import Clock, next_wake_s
from chassis.due_work import DueWork

log = logging.getLogger(__name__)

# Fires what is due in one clinic: (how many fired, whether more may be due already).
Fire = Callable[[str], Awaitable[tuple[int, bool]]]


class Clinics(Protocol):
    clinics: ClinicDirectory
    clock: Clock

    async def has_calendar(self, clinic_id: str) -> bool: ...


def timer_loop(
    what: str, timers: Clinics, fire: Fire, work: DueWork, poll_s: float, stopping: asyncio.Event
) -> Callable[[], Coroutine[Any, Any, None]]:
    async def fire_when_due() -> None:
        # redis-py 8.1 can swallow a cancellation that lands inside a script
        # call, so the loop also asks whether it is being cancelled.
        task = asyncio.current_task()
        try:
            while not stopping.is_set() and (task is None or not task.cancelling()):
                try:
                    started = timers.clock.now()
                    more_due = await one_round(what, timers, fire, work)
                    if more_due:
                        wait_s = 0.0
                    else:
                        wait_s = await until_next_due(timers.clock, work, started, poll_s)
                except Exception:  # Redis, Kafka or the clinics: the loop outlives them
                    log.exception("%s timer round failed", what)
                    wait_s = poll_s
                if wait_s > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), wait_s)
        finally:
            with contextlib.suppress(Exception):  # else the others take them when leases end
                await work.owners.release()

    fire_when_due.__name__ = f"fire_{what}s_when_due"
    return fire_when_due


async def until_next_due(clock: Clock, work: DueWork, started: datetime, poll_s: float) -> float:
    """Real seconds to sleep after a round (begun at `started`) that left nothing due:
    until the earliest item of this replica's buckets falls due, at most `poll_s`; none
    if one fell due while the round ran. One due before the round began, and left by it
    (a clinic failing, a lease another replica holds), waits the whole poll, or the
    loop would spin on it."""
    first = await work.earliest()
    if first is not None and first < started.timestamp():
        return poll_s
    earliest = datetime.fromtimestamp(first, UTC) if first is not None else None
    return next_wake_s(clock, earliest, poll_s)


async def one_round(what: str, timers: Clinics, fire: Fire, work: DueWork) -> bool:
    """Fire what is due in the clinics found due; whether more may be due already."""
    more_due = False
    for clinic_id in await work.clinics(timers.clock.now().timestamp()):
        clinic = timers.clinics.get(clinic_id)
        try:
            if clinic is None or (
                not clinic.section("scheduler") and not await timers.has_calendar(clinic_id)
            ):
                await work.forget(clinic_id)
                continue
            fired, more = await fire(clinic_id)
            await work.settle(clinic_id)
            more_due = more_due or more
            if fired:
                log.info("%ss due announced", what, extra={"clinic_id": clinic_id})
        except Exception:  # one clinic's failure does not hold up the others
            log.exception("%s timer round failed", what, extra={"clinic_id": clinic_id})
    return more_due
