"""The sending loop: claim what is due, deliver each claimed message, sleep until the next.

Once per round: a replica leases a batch of messages due now or within
LOOKAHEAD_S (queue.DeliveryQueue.claim_due) and delivers each in the background
(handover.Handover: prepared, handed over at its due instant, its outcome
written under its lease with its event by the unit of work: outcomes.Outcomes,
finishes.Finishes), at most MAX_IN_FLIGHT at once, while the next round claims
what falls due next.

While the notifier's view of a client's schedule lags behind the scheduler's
topics, that client's time-bound messages are held apart from the due set
(lag_gate.LagGate, asked once per round, and again by a message whose turn
comes later: handover.py FRESH_S); everything else, above all the urgent
clinical alert, goes regardless. While any are held, the loop looks again
within the lag's bound or MIN_RECHECK_S.

Which clinics a round looks at: those the due index (chassis.due_work) finds
with a message due in this replica's buckets, and a few of the slow sweep's; a
woken round, only the clinics woken. Each clinic looked at is settled: its index
score is its next message's time again (or its earliest lease's end), what waits
is counted for the gauge, and whether messages are held is noted for the gate.
A held message is planned in the held set by a write step, whose hint brings the
clinic to the round of its bucket's owner.

The loop sleeps until LOOKAHEAD_S before the earliest message of its buckets
falls due (on the injected clock, so on time on the demo's fast clock too), at
most `poll_s`, and is woken earlier by a plan holding a message due sooner
(`wake`). Outcome events left unpublished by a dead replica are the unit of
work's relay's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chassis.buckets import BucketOwners
from chassis.clinics import Clinic, ClinicDirectory
from chassis.clock import WAKE_SLACK_S, Clock, next_wake_s
from chassis.config import ServiceSettings
from chassis.due_index import DueIndex
from chassis.due_work import DueWork
from chassis.events import EventPublisher
from chassis.metrics import ServiceMetrics
from chassis.unit_of_work import UnitOfWork
from services.notifier.alerts import Alerts
from services.notifier.channels import DEFAULT_CONNECTIONS, Sender
from services.notifier.contacts import Contacts
from services.notifier.earlier import take_over
from services.notifier.finishes import Finishes
from services.notifier.handover import ContactsRead, Handover
from services.notifier.lag_gate import LagGate
from services.notifier.measures import MeasureRequests
from services.notifier.outcomes import Outcomes
from services.notifier.pacing import ScheduleLagGauge, Verdict, service_span
from services.notifier.plans import PlanStore
from services.notifier.queue import Claim, DeliveryQueue
from shared import events as ev

log = logging.getLogger(__name__)

_DEFAULTS = ServiceSettings.model_fields
DUE_BUCKETS: int = _DEFAULTS["due_buckets"].default
DUE_LEASE_MS: int = _DEFAULTS["due_lease_ms"].default
DUE_SWEEP_S: float = _DEFAULTS["due_sweep_s"].default

# Far longer than one send may take (channels time out after 10 s per step); renewed
# just before each send, so it bounds one send, not a whole batch.
LEASE_MS = 60_000
BATCH = 20


# Real seconds: messages due this soon are claimed and prepared (contact, render, the
# mail composed but for its Date), then handed over at their due instant, so the round's
# own work is not lateness.
LOOKAHEAD_S = 0.06
# How many messages are handed over at once (the email pool's connections).
SEND_CONCURRENCY = DEFAULT_CONNECTIONS


# While messages are held for the schedule lag, look again this often (real time):
# at least this long between looks, at most the poll.
MIN_RECHECK_S = 0.01
# Claimed messages being delivered at once, at most (rounds do not wait for each other).
MAX_IN_FLIGHT = 4 * BATCH
# On stop, how long deliveries under way may take to end before they are cancelled.
DRAIN_S = 2.0


@dataclass
class RoundResult:
    busy: bool = False  # a full batch was claimed: more may be due at once


class Delivery:
    def __init__(
        self,
        queue: DeliveryQueue,
        contacts: Contacts,
        plans: PlanStore,
        clinics: ClinicDirectory,
        senders: Mapping[ev.Channel, Sender],
        publisher: EventPublisher,
        clock: Clock,
        poll_s: float,
        metrics: ServiceMetrics | None = None,
        *,
        unit_of_work: UnitOfWork,
        lease_ms: int = LEASE_MS,
        schedule_lag: ScheduleLagGauge | None = None,
        send_concurrency: int = SEND_CONCURRENCY,
        stopping: asyncio.Event | None = None,
        alerts: Alerts | None = None,
        measures: MeasureRequests | None = None,
        due: DueWork | None = None,
    ) -> None:
        self._queue = queue
        self.unit_of_work = unit_of_work
        self._due = due or notifier_due_work(queue, unit_of_work, clinics, clock)
        self._due.next_due = self._look_again_at
        # Set when the service stops: the loop ends after its round (a drain).
        self._stopping = stopping or asyncio.Event()
        self._clinics = clinics
        self._clock = clock
        self._poll_s = poll_s
        self._metrics = metrics
        self._lease_ms = lease_ms
        self._schedule_lag = schedule_lag
        self._outcomes = Outcomes(Finishes(queue, unit_of_work), publisher, clock, metrics)
        self._handover = Handover(
            contacts,
            plans,
            queue,
            senders,
            self._outcomes,
            clock,
            lease_ms=lease_ms,
            send_concurrency=send_concurrency,
            schedule_lag=schedule_lag,
            alerts=alerts,
            measures=measures,
        )
        self._redis, self._publisher = queue.redis, publisher
        self._taken_over: set[str] = set()  # clinics whose earlier-version keys were looked at
        self._in_flight: set[asyncio.Task[None]] = set()
        self._woken = asyncio.Event()
        self._woken_clinics: set[str] = set()
        # When the sleeping loop will look anyway (service clock); None: awake, or unknown.
        self._next_look: datetime | None = None
        self._gate = LagGate(queue, clock, schedule_lag, self.wake, held_limit=BATCH)

    def wake(self, clinic_id: str, due_at: datetime | None = None) -> None:
        """A plan of `clinic_id` holds a message due at `due_at` (None: now): look before then.

        Only a hint (what is due still comes from Redis): another replica's
        messages are found by its own poll, and a lost hint costs one poll. A
        message due no earlier than the loop means to look anyway needs no wake.
        """
        if due_at is not None and self._next_look is not None and due_at >= self._next_look:
            return
        self._woken_clinics.add(clinic_id)
        self._woken.set()

    async def run(self) -> None:
        """Until cancelled: a failed round (Redis or Kafka away) is logged and tried again."""
        task = asyncio.current_task()
        only: set[str] | None = None  # every clinic
        next_full_round = time.monotonic() + self._poll_s
        wake_on_stop = asyncio.create_task(self._wake_when_stopping())
        try:
            while not self._stopping.is_set() and (task is None or not task.cancelling()):
                result = RoundResult()
                self._next_look = None  # a hint during the round always wakes the next one
                try:
                    result = await self.round(only)
                    wait_s = 0.0 if result.busy else await self._until_next_due()
                except Exception:
                    log.error("delivery round failed; trying again", exc_info=True)
                    wait_s = self._poll_s
                woken = result.busy
                if not result.busy:
                    try:
                        await asyncio.wait_for(self._woken.wait(), max(wait_s, WAKE_SLACK_S))
                        woken = True
                    except TimeoutError:
                        pass
                # No await from here to the round: a wake after this is the next round's.
                self._woken.clear()
                self._next_look = None
                # Every clinic at least once a poll, however often hints come.
                full = not woken or result.busy or time.monotonic() >= next_full_round
                only = None if full else self._woken_clinics
                self._woken_clinics = set()
                if full:
                    next_full_round = time.monotonic() + self._poll_s
        finally:
            wake_on_stop.cancel()
            # What was claimed is due within LOOKAHEAD_S: let it finish (a send cut off
            # between the hand-over and its record would go again), within reason.
            if self._in_flight:
                await asyncio.wait(self._in_flight, timeout=DRAIN_S)
            for delivering in self._in_flight:
                delivering.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)
            if self._schedule_lag is not None:
                await self._schedule_lag.close()
            with contextlib.suppress(Exception):  # else the others take them when leases end
                await self._due.owners.release()
        # A client library may turn our cancellation into an error of its own
        # (caught above): stop all the same, or shutdown would wait forever.
        raise asyncio.CancelledError

    async def _wake_when_stopping(self) -> None:
        await self._stopping.wait()
        self._woken.set()

    async def _until_next_due(self) -> float:
        """How long the loop may sleep; sets when it will look anyway, for `wake`.

        Held messages are not in the due set: while any wait, the poll bound
        makes the next round look again whether the schedule view caught up.
        """
        first = await self._due.index.earliest(self._due.owners.owned)
        earliest = datetime.fromtimestamp(first, UTC) if first is not None else None
        held = self._gate.held_clinics
        # Woken a lookahead early: the round prepares what falls due, then waits for it.
        if earliest is not None:
            earliest -= service_span(self._clock, LOOKAHEAD_S)
        wait_s = next_wake_s(self._clock, earliest, self._poll_s)
        if held and self._schedule_lag is not None:
            # Held for a lag that is over once the group handles a few records: soon.
            recheck_s = min(max(self._schedule_lag.bound_s, MIN_RECHECK_S), self._poll_s)
            if recheck_s < wait_s:
                wait_s, earliest = recheck_s, None
        # Only when the loop sleeps toward `earliest`: a later plan needs no wake then.
        self._next_look = earliest if wait_s > 0 and earliest is not None else None
        return wait_s

    async def round(self, only: set[str] | None = None) -> RoundResult:
        """One pass over the clinics found due (or those in `only`).

        What each has due now or within LOOKAHEAD_S is claimed first; each
        message is then prepared and handed over at its due instant, up to
        SEND_CONCURRENCY at once. The schedule lag is asked once for all the
        clients whose time-bound messages are due or held, just before the first
        of them falls due (and again by a message whose turn comes later).
        """
        result = RoundResult()
        horizon = self._clock.now() + service_span(self._clock, LOOKAHEAD_S)
        if only is None:
            clinic_ids = await self._due.clinics(horizon.timestamp())
        else:
            clinic_ids = sorted(only)
        batch: list[tuple[Clinic, Claim]] = []
        for clinic_id in clinic_ids:
            clinic = self._clinics.get(clinic_id)
            if clinic is None:  # retired: nothing of it is sent any more
                await self._due.forget(clinic_id)
                continue
            if clinic.id not in self._taken_over:
                await self._take_over(clinic.id)
            claims = await self._queue.claim_due(
                clinic.id, horizon, limit=BATCH, lease_ms=self._lease_ms
            )
            await self._due.settle(clinic.id)
            batch += [(clinic, claim) for claim in claims]
            result.busy = result.busy or len(claims) == BATCH
        # Delivered in the background: the next round claims what falls due next
        # while these wait for their instant or their channel.
        gate = asyncio.create_task(self._gate.behind(batch))
        self._track(gate)
        contacts = await self._handover.contacts_for(claim for _, claim in batch)
        for clinic, claim in batch:
            self._track(asyncio.create_task(self._deliver(clinic, claim, gate, contacts)))
        while len(self._in_flight) >= MAX_IN_FLIGHT:
            await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
        return result

    async def _look_again_at(self, clinic_id: str) -> float | None:
        """When `clinic_id` is next to be looked at (its index score); counts what waits,
        and notes whether any is held for the gate."""
        when, (due, held) = await self._queue.leases.earliest_counting(
            clinic_id, self._clock, self._queue.counted(clinic_id)
        )
        if held:
            self._gate.held_clinics.add(clinic_id)
        else:
            self._gate.held_clinics.discard(clinic_id)
        if self._metrics is not None:
            self._metrics.pending("notification", clinic_id, due + held)
        return when

    async def _take_over(self, clinic_id: str) -> None:
        """What the version before the lease queue left in the clinic, once (again next
        round should Kafka be away: the rest of the round goes on meanwhile)."""
        try:
            await take_over(self._redis, self._queue, self._publisher, clinic_id)
        except Exception:
            log.error("clinic %s: taking over earlier state failed", clinic_id, exc_info=True)
        else:
            self._taken_over.add(clinic_id)

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._in_flight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # Redis or Kafka away: the message's lease runs out and it is claimed again.
            log.error("delivery failed; left to its lease", exc_info=error)

    async def _deliver(
        self, clinic: Clinic, claim: Claim, gate: asyncio.Task[Verdict], contacts: ContactsRead
    ) -> None:
        if await self._handover.deliver(clinic, claim, gate, contacts):
            self._gate.held_clinics.add(clinic.id)


def notifier_due_work(
    queue: DeliveryQueue,
    unit_of_work: UnitOfWork,
    clinics: ClinicDirectory,
    clock: Clock,
    *,
    buckets: int = DUE_BUCKETS,
    lease_ms: int = DUE_LEASE_MS,
    sweep_s: float = DUE_SWEEP_S,
    kind: str = "notifier",
    metrics: ServiceMetrics | None = None,
) -> DueWork:
    """The delivery's due index (over the due and the held sets, hinted by
    `unit_of_work`), its buckets and its sweep; main.create_app passes the settings'."""
    index = DueIndex(queue.redis, kind, buckets, [queue.leases.due_key, queue.held_key])
    unit_of_work.index_due(index)
    queue.index = index
    owners = BucketOwners(queue.redis, kind, buckets, lease_ms)

    async def unset(clinic_id: str) -> float | None:  # Delivery sets its own
        return await queue.leases.earliest(clinic_id, clock)

    clinic_ids = lambda: [c.id for c in clinics.all()]  # noqa: E731
    return DueWork(index, owners, clinic_ids, unset, sweep_s, metrics)
