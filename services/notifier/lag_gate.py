"""Time-bound messages and the schedule lag: one request per round, held ones released.

A round's time-bound messages wait for the notifier's view of their client's
schedule (lag.ScheduleLag: an unhandled change on the client's partition,
older than the bound). The lag is asked once per round, just before the first
of them falls due, for every client whose messages are due or held; a message
found behind is held by its handover (outcomes.Outcomes.hold), and held
messages whose view caught up are released (due again) and the loop woken to
claim them. The answer carries when it was asked (`Verdict`): a message whose
turn comes later than FRESH_S after that asks again on its own
(handover.Handover), and is held too when every answer comes back slow.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

from chassis.clinics import Clinic
from chassis.clock import Clock
from services.notifier.handover import GATE_LEAD_S, subject_of
from services.notifier.lag_records import Subject
from services.notifier.model import TIME_BOUND_KINDS, PlannedMessage
from services.notifier.pacing import ScheduleLagGauge, Verdict, service_span, until
from services.notifier.queue import Claim, DeliveryQueue


class LagGate:
    def __init__(
        self,
        queue: DeliveryQueue,
        clock: Clock,
        schedule_lag: ScheduleLagGauge | None,
        wake: Callable[[str], None],
        *,
        held_limit: int,
    ) -> None:
        self._queue = queue
        self._clock = clock
        self._schedule_lag = schedule_lag
        self._wake = wake
        self._held_limit = held_limit
        self._looking = False
        # Clinics with messages held for the schedule lag, as last seen in Redis (a
        # hint: the loop refreshes it from Redis whenever it goes to sleep).
        self.held_clinics: set[str] = set()

    async def behind(self, batch: list[tuple[Clinic, Claim]]) -> Verdict:
        """The (client, appointment) pairs whose schedule view lags, asked once just before
        the first time-bound message falls due; held messages of the others are released
        (due again, and the loop woken to claim them)."""
        if self._schedule_lag is None:
            return Verdict()
        bound = [claim.message for _, claim in batch if claim.message.kind in TIME_BOUND_KINDS]
        held: list[tuple[str, str, Subject]] = []
        # Held messages are looked at by one round at a time (Kafka may be away).
        if not self._looking:
            self._looking = True
            try:
                for clinic_id in sorted(self.held_clinics):
                    rows = await self._queue.held(clinic_id, self._held_limit)
                    held += [(clinic_id, i, c) for i, c in rows]
            finally:
                self._looking = bool(held)
        try:
            return await self._ask_and_release(self._schedule_lag, bound, held)
        finally:
            if held:
                self._looking = False

    async def _ask_and_release(
        self,
        gauge: ScheduleLagGauge,
        bound: list[PlannedMessage],
        held: list[tuple[str, str, Subject]],
    ) -> Verdict:
        subjects = {subject_of(message) for message in bound} | {c for _, _, c in held}
        if not subjects:
            return Verdict()
        if bound:
            first = min(message.send_at for message in bound)
            await until(self._clock, first - service_span(self._clock, GATE_LEAD_S))
        asked_at = time.monotonic()
        behind = await gauge.behind(subjects)
        caught_up: dict[str, list[str]] = defaultdict(list)
        for clinic_id, notification_id, subject in held:
            if subject not in behind:
                caught_up[clinic_id].append(notification_id)
        for clinic_id, ids in caught_up.items():
            if await self._queue.release_held(clinic_id, ids):
                self._wake(clinic_id)
        return Verdict(behind, asked_at)
