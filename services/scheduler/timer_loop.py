"""The loop every scheduler timer runs: each round fires what is due in every clinic.

A clinic that books nothing here (no scheduler calendar) is passed over; one
clinic's failure does not hold up the others, and the loop outlives Redis, Kafka
or the clinics file failing. A full batch means more is probably due already
(boosters and follow-ups fall due together at 09:00 clinic time), so the next
round starts at once; otherwise it sleeps `poll_s`, ending after the round in
progress once `stopping` is set (a drain).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from chassis.clinics import ClinicDirectory

log = logging.getLogger(__name__)

# Fires what is due in one clinic: (how many fired, whether more may be due already).
Fire = Callable[[str], Awaitable[tuple[int, bool]]]


class Clinics(Protocol):
    clinics: ClinicDirectory

    async def has_calendar(self, clinic_id: str) -> bool: ...


def timer_loop(
    what: str, timers: Clinics, fire: Fire, poll_s: float, stopping: asyncio.Event
) -> Callable[[], Coroutine[Any, Any, None]]:
    async def fire_when_due() -> None:
        # redis-py 8.1 can swallow a cancellation that lands inside a script
        # call, so the loop also asks whether it is being cancelled.
        task = asyncio.current_task()
        while not stopping.is_set() and (task is None or not task.cancelling()):
            try:
                more_due = await _one_round(what, timers, fire)
            except Exception:  # Redis, Kafka or the clinics file: the loop outlives them
                log.exception("%s timer round failed", what)
                more_due = False
            if not more_due:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), poll_s)

    fire_when_due.__name__ = f"fire_{what}s_when_due"
    return fire_when_due


async def _one_round(what: str, timers: Clinics, fire: Fire) -> bool:
    """Fire what is due in every clinic; whether more may be due already somewhere."""
    more_due = False
    for clinic in timers.clinics.all():
        if not clinic.section("scheduler") and not await timers.has_calendar(clinic.id):
            continue
        try:
            fired, more = await fire(clinic.id)
            more_due = more_due or more
            if fired:
                log.info("%ss due announced", what, extra={"clinic_id": clinic.id})
        except Exception:  # one clinic's failure does not hold up the others
            log.exception("%s timer round failed", what, extra={"clinic_id": clinic.id})
    return more_due
