"""How long the scheduler's timer loop sleeps after a round (timer_loop.until_next_due):
until its buckets' earliest item falls due, within the poll; at once for one that fell
due while the round ran; a whole poll for one the round left behind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from chassis.clock import WAKE_SLACK_S, FrozenClock
from chassis.due_work import DueWork
from services.scheduler.timer_loop import until_next_due

NOW = datetime(2027, 3, 28, 8, 0, 30, tzinfo=UTC)
POLL_S = 0.2


class StillWallClock(FrozenClock):
    """A clock standing at NOW whose spans last as long on the wall (the system clock's
    real_seconds): what a sleep would take is known exactly."""

    def real_seconds(self, duration: timedelta) -> float:
        return duration.total_seconds()


class Index:
    def __init__(self, earliest: datetime | None) -> None:
        self._earliest = earliest

    async def earliest(self) -> float | None:
        return self._earliest.timestamp() if self._earliest else None


async def wait_s(earliest: datetime | None, started: datetime) -> float:
    work = cast(DueWork, cast(Any, Index(earliest)))
    return await until_next_due(StillWallClock(NOW), work, started, POLL_S)


async def test_the_loop_wakes_when_the_next_item_falls_due_not_a_poll_later() -> None:
    started = NOW - timedelta(milliseconds=10)

    soon = await wait_s(NOW + timedelta(milliseconds=50), started)

    assert soon == pytest.approx(0.05 + WAKE_SLACK_S)
    assert await wait_s(NOW + timedelta(hours=1), started) == POLL_S  # the poll bounds it
    assert await wait_s(None, started) == POLL_S  # nothing due in its buckets


async def test_an_item_due_during_the_round_goes_at_once_one_it_left_waits_the_poll() -> None:
    started = NOW - timedelta(milliseconds=40)

    during = await wait_s(NOW - timedelta(milliseconds=5), started)
    left = await wait_s(NOW - timedelta(milliseconds=50), started)

    assert during == 0.0
    assert left == POLL_S  # else a clinic failing every round would spin the loop
