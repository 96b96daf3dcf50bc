"""The booster timer loop: every replica polls; the claim script shares the work."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from services.scheduler.operations import Scheduler

log = logging.getLogger(__name__)


def booster_timer(
    scheduler: Scheduler, poll_s: float, stopping: asyncio.Event
) -> Callable[[], Coroutine[Any, Any, None]]:
    """The loop; it ends after the round in progress once `stopping` is set (a drain)."""

    async def fire_boosters_when_due() -> None:
        # redis-py 8.1 can swallow a cancellation that lands inside a script
        # call, so the loop also asks whether it is being cancelled.
        task = asyncio.current_task()
        while not stopping.is_set() and (task is None or not task.cancelling()):
            try:
                more_due = await _one_round(scheduler)
            except Exception:  # Redis, Kafka or the clinics file: the loop outlives them
                log.exception("booster timer round failed")
                more_due = False
            # Boosters fall due together (09:00 clinic time): a full batch means
            # the next is probably waiting already, so no sleep before it.
            if not more_due:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), poll_s)

    return fire_boosters_when_due


async def _one_round(scheduler: Scheduler) -> bool:
    """Fire what is due in every clinic; whether more may be due already somewhere."""
    more_due = False
    for clinic in scheduler.clinics.all():
        if not clinic.section("scheduler") and not await scheduler.has_calendar(clinic.id):
            continue  # a clinic that books nothing here has no boosters either
        try:
            fired, more = await scheduler.fire_due_boosters(clinic.id)
            more_due = more_due or more
            if fired:
                log.info("boosters due announced", extra={"clinic_id": clinic.id})
        except Exception:  # one clinic's failure does not hold up the others
            log.exception("booster timer round failed", extra={"clinic_id": clinic.id})
    return more_due
