"""Delivery's hand-over slots: when many messages fall due at one instant (the send window
opening), reminders and clinical alerts, whose timing is part of their truth, get the next
free slot before the rest. And the schedule lag's last answer before a hand-over is fresh
when it comes back, not only when it was asked."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any, cast
from uuid import uuid4

import pytest

from chassis.clock import FrozenClock
from services.notifier.handover import FRESH_TRIES, Handover
from services.notifier.lag_records import Subject


async def test_urgent_hand_overs_get_the_next_free_slot_before_the_rest() -> None:
    from chassis.turns import Turns  # the hand-over's turns (pacing.Slots before)

    slots = Turns(1)
    order: list[str] = []
    holding, release = asyncio.Event(), asyncio.Event()

    async def hand_over(name: str, urgent: bool, hold: bool = False) -> None:
        async with slots.turn(0 if urgent else 1):
            order.append(name)
            if hold:
                holding.set()
                await release.wait()

    first = asyncio.create_task(hand_over("first", urgent=False, hold=True))
    await holding.wait()  # it holds the only slot while the others fall due
    waiting = [
        asyncio.create_task(hand_over(name, urgent))
        for name, urgent in [("news", False), ("reminder", True), ("later", False), ("alert", True)]
    ]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, *waiting)
    assert order == ["first", "reminder", "alert", "news", "later"]


async def test_a_hand_over_cancelled_while_waiting_gives_its_turn_to_the_next() -> None:
    from chassis.turns import Turns

    slots = Turns(1)
    order: list[str] = []
    holding = asyncio.Event()
    release = asyncio.Event()

    async def hand_over(name: str, urgent: bool, hold: bool = False) -> None:
        async with slots.turn(0 if urgent else 1):
            order.append(name)
            if hold:
                holding.set()
                await release.wait()

    first = asyncio.create_task(hand_over("first", False, hold=True))
    await holding.wait()
    gone = asyncio.create_task(hand_over("gone", True))
    kept = asyncio.create_task(hand_over("kept", False))
    await asyncio.sleep(0)
    gone.cancel()
    release.set()
    await asyncio.gather(first, kept)
    assert order == ["first", "kept"]
    async with asyncio.timeout(1):  # and the slot is free again
        async with slots.turn(1):
            order.append("after")


class SlowGauge:
    """A schedule lag whose answers take `delays_s` in turn (then no time), each saying
    nothing waits, or every subject does (`behind`)."""

    bound_s = 0.0

    def __init__(self, delays_s: list[float], *, behind: bool = False) -> None:
        self.delays_s, self.asked, self._behind = delays_s, 0, behind

    async def behind(self, subjects: Collection[Subject]) -> set[Subject]:
        delay = self.delays_s[self.asked] if self.asked < len(self.delays_s) else 0.0
        self.asked += 1
        await asyncio.sleep(delay)
        return set(subjects) if self._behind else set()

    async def close(self) -> None:
        return None


def _handover(gauge: SlowGauge) -> Handover:
    unused = cast(Any, None)  # only the schedule lag is asked here
    return Handover(
        unused,
        unused,
        unused,
        {},
        unused,
        FrozenClock(datetime(2026, 3, 2, tzinfo=UTC)),
        lease_ms=1000,
        send_concurrency=1,
        schedule_lag=gauge,
    )


@pytest.mark.parametrize(
    ("delays_s", "behind", "caught_up", "asked"),
    [
        ([], False, True, 1),  # a quick answer: current
        ([0.3], False, True, 2),  # a slow answer is as old as its question: asked again
        ([0.3] * FRESH_TRIES, False, False, FRESH_TRIES),  # only slow ones: it waits
        ([], True, False, 1),  # a change waits unread
    ],
)
async def test_a_message_goes_only_on_an_answer_fresh_when_it_came_back(
    delays_s: list[float], behind: bool, caught_up: bool, asked: int
) -> None:
    gauge = SlowGauge(delays_s, behind=behind)
    subject: Subject = (uuid4(), uuid4())
    assert await _handover(gauge)._caught_up_now(subject) is caught_up
    assert gauge.asked == asked
