"""Delivery's small timing and concurrency helpers.

The service clock in real time (`service_span`, `until`), and one shared request
for every message asking the schedule lag again (`Recheck`). The hand-over's turns,
urgent messages first, are chassis.turns.Turns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from chassis.clock import Clock
from services.notifier.lag_records import Subject

# A message found behind is asked about again, RECHECK_S apart (real time, one Kafka
# request for every message waiting), for up to RECHECK_FOR_S before it is held: on
# the demo's clock the group is often a few records behind for some milliseconds, and
# going out as soon as it caught up beats a hold, a release and a claim again.
RECHECK_FOR_S = 0.03
RECHECK_S = 0.001


@dataclass(frozen=True)
class Verdict:
    """A round's answer: the subjects whose view lags, and when the question was put (real
    monotonic seconds: a change on its topic before then is applied, or holds its message)."""

    behind: set[Subject] = field(default_factory=set)
    asked_at: float = field(default_factory=time.monotonic)


class ScheduleLagGauge(Protocol):
    """Which (client, appointment) changes the notifier's view lags behind on
    (lag.ScheduleLag)."""

    bound_s: float  # real seconds

    async def behind(self, subjects: Collection[Subject]) -> set[Subject]: ...

    async def close(self) -> None: ...


def service_span(clock: Clock, real_s: float) -> timedelta:
    """How much of `clock`'s time passes in `real_s` real seconds (none on a clock that
    does not move by itself)."""
    per_second = clock.real_seconds(timedelta(seconds=1))
    return timedelta(seconds=real_s / per_second) if per_second > 0 else timedelta(0)


async def until(clock: Clock, instant: datetime) -> None:
    """Sleep until `instant` on the service clock (at once on a clock that does not move
    by itself: what it claimed is due already)."""
    while (ahead := instant - clock.now()) > timedelta(0):
        real_s = clock.real_seconds(ahead)
        if real_s <= 0:
            return
        await asyncio.sleep(real_s)


class Recheck:
    """Asks the schedule lag again for every message waiting on it, in one request."""

    def __init__(self, gauge: ScheduleLagGauge) -> None:
        self._gauge = gauge
        self.bound_s = gauge.bound_s  # real seconds: a change younger than this holds nothing
        self._subjects: set[Subject] = set()
        self._asking: asyncio.Task[set[Subject]] | None = None

    async def behind(self, subject: Subject) -> bool:
        self._subjects.add(subject)
        if self._asking is None:
            self._asking = asyncio.create_task(self._ask())
        return subject in await asyncio.shield(self._asking)

    async def _ask(self) -> set[Subject]:
        await asyncio.sleep(RECHECK_S)  # the others waiting join in meanwhile
        # Taken together, without an await: one added later starts the next ask.
        subjects, self._subjects, self._asking = self._subjects, set(), None
        return await self._gauge.behind(subjects)
