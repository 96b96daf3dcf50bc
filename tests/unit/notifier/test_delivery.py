"""Delivery's hand-over slots: when many messages fall due at one instant (the send window
opening), reminders and clinical alerts, whose timing is part of their truth, get the next
free slot before the rest."""

from __future__ import annotations

import asyncio


async def test_urgent_hand_overs_get_the_next_free_slot_before_the_rest() -> None:
    from services.notifier.pacing import Slots  # the slots arrived with this behaviour

    slots = Slots(1)
    order: list[str] = []
    holding, release = asyncio.Event(), asyncio.Event()

    async def hand_over(name: str, urgent: bool, hold: bool = False) -> None:
        async with slots.turn(urgent=urgent):
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
    from services.notifier.pacing import Slots

    slots = Slots(1)
    order: list[str] = []
    holding = asyncio.Event()
    release = asyncio.Event()

    async def hand_over(name: str, urgent: bool, hold: bool = False) -> None:
        async with slots.turn(urgent=urgent):
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
        async with slots.turn(urgent=False):
            order.append("after")
