"""Injected time. Every instant is UTC; clinics show it in their own zone."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol

from chassis.config import ServiceSettings

# A timer may fire a hair before its instant; this much later the item is surely due.
WAKE_SLACK_S = 0.001


class Clock(Protocol):
    def now(self) -> datetime: ...

    async def sleep(self, duration: timedelta) -> None: ...

    def real_seconds(self, duration: timedelta) -> float:
        """How long `duration` of this clock's time lasts on the wall."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, duration: timedelta) -> None:
        await asyncio.sleep(max(duration.total_seconds(), 0.0))

    def real_seconds(self, duration: timedelta) -> float:
        return duration.total_seconds()


class ScaledClock:
    """Simulated time starting at `origin` when the wall clock read `anchor`."""

    def __init__(self, origin: datetime, anchor: datetime, scale: float) -> None:
        self._origin = origin.astimezone(UTC)
        self._anchor = anchor.astimezone(UTC)
        self._scale = scale

    def now(self) -> datetime:
        elapsed = datetime.now(UTC) - self._anchor
        return self._origin + elapsed * self._scale

    async def sleep(self, duration: timedelta) -> None:
        await asyncio.sleep(max(self.real_seconds(duration), 0.0))

    def real_seconds(self, duration: timedelta) -> float:
        return duration.total_seconds() / self._scale


class FrozenClock:
    """A clock that moves only when told: for unit tests."""

    def __init__(self, at: datetime) -> None:
        self._now = at.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, by: timedelta) -> None:
        self._now += by

    async def sleep(self, duration: timedelta) -> None:
        self.advance(duration)
        await asyncio.sleep(0)

    def real_seconds(self, duration: timedelta) -> float:
        return 0.0


def clock_from(settings: ServiceSettings) -> Clock:
    if settings.clock_origin is None and settings.clock_scale == 1.0:
        return SystemClock()
    started = datetime.now(UTC)
    return ScaledClock(
        origin=settings.clock_origin or started,
        anchor=settings.clock_anchor or started,
        scale=settings.clock_scale,
    )


def next_wake_s(clock: Clock, earliest_due: datetime | None, poll_s: float) -> float:
    """Real seconds to sleep until the earliest due item (a message, a timer) falls
    due, within [0, poll_s].

    The poll bound still applies: other replicas' plans and hints, expired leases and
    clock changes are found by it. A clock that does not move by itself (a test's
    manual clock: `real_seconds` is 0 for any span) leaves only the poll.
    """
    if earliest_due is None:
        return poll_s
    ahead = earliest_due - clock.now()
    if ahead <= timedelta(0):
        return 0.0
    real = clock.real_seconds(ahead)
    if real <= 0:
        return poll_s
    return min(real + WAKE_SLACK_S, poll_s)
