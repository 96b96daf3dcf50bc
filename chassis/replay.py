"""What a service's rebuild from the topics (ops/rebuild.py) runs its own code with.

A replay hands recorded events to the service's own steps: on a clock set to each
record's time, with a publisher that publishes nothing (what the steps cause is on
the topics already) but remembers the ids of what it was given, so a replay can
tell which recorded facts its steps have made again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from chassis.events import EventPublisher
from shared import events as ev
from shared.envelope import Envelope


class ReplayClock:
    """The Clock of a replay: the time of the record being applied."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def now(self) -> datetime:
        return self.at

    async def sleep(self, duration: timedelta) -> None:
        await asyncio.sleep(0)

    def real_seconds(self, duration: timedelta) -> float:
        return 0.0


class DroppingPublisher(EventPublisher):
    """Publishes nothing: what a replayed step caused is on the topics already.

    An EventPublisher for the envelopes it derives (envelope_for), with no broker;
    `dropped` holds the events it was handed, by id."""

    def __init__(self, service: str) -> None:  # no super(): it declares a broker's topics
        self._source = f"/kap/{service}"
        self._metrics = None
        self.dropped: dict[str, ev.Event] = {}

    @property
    def source(self) -> str:
        """The `source` of the envelopes the service publishes."""
        return self._source

    async def publish_all(self, items: Sequence[tuple[ev.Event, Envelope]]) -> None:
        self.dropped.update((envelope.id, event) for event, envelope in items)
