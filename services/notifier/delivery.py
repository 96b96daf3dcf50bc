"""The sending loop: claim what is due, address it as prefs stand now, render, send, record.

Once per message: a replica leases a batch of messages due now or within
LOOKAHEAD_S (store.claim_due), prepares each (contact, channel, render, a first
check), waits for its due instant, renews its lease just before sending it
(store.renew, fenced by the lease token: a message that outlived its lease and
was re-claimed by another replica is left to that replica), hands it over (up
to SEND_CONCURRENCY at once: many messages fall due at one instant, such as the
send window opening, and one after the other they would queue behind each
channel exchange) and records the outcome under that lease after, so a
redelivered event, a second replica or a restart never sends it again. The one
gap left is a crash between the channel accepting a message and the outcome
being recorded: the lease then expires and the message goes again, with the
same Message-ID (or SMS Idempotency-Key), so the duplicate can be recognised
downstream.

Only true messages: a time-bound message (reminders, session instructions) is
checked just before it is sent against the notifier's own projection of its
appointment (store.appointment): one whose session has started, or whose
appointment was moved, cancelled or held meanwhile, is skipped (state
"skipped", a permanent NotificationFailed with a reason "stale: ...", and the
kap_notifications_skipped counter). While the notifier's view of a client's
schedule lags behind the scheduler's topics (lag.ScheduleLag: an unhandled
change on the client's partition, older than the bound), that client's
time-bound messages wait (planned, in a held set apart from the due set, the
attempt not counted; the lag is asked once per round for every client whose
messages are due or held, and those caught up are released, looked at again
within the bound or MIN_RECHECK_S); everything else, above all the urgent
clinical alert, goes regardless.

The loop sleeps until LOOKAHEAD_S before the earliest planned message falls
due (on the injected clock, so on time on the demo's fast clock too), at most
`poll_s`, and is woken earlier by a plan holding a message due sooner (`wake`).
A message is never handed over before its due instant; the last check, the
mail's Date and the NotificationSent time are the instant it is handed over.

Outcome events are queued with the outcome (store outbox) and published after,
so none is lost when the process dies in between; their ids derive from the
notification id, so a republished one is a duplicate readers drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import jinja2
from prometheus_client import Counter

from chassis.clinics import Clinic, ClinicDirectory
from chassis.clock import Clock
from chassis.events import EventPublisher
from chassis.metrics import ServiceMetrics
from services.notifier.channels import (
    DEFAULT_CONNECTIONS,
    Outgoing,
    PermanentSendError,
    Sender,
    TransientSendError,
)
from services.notifier.config import template_overrides
from services.notifier.lag import Subject
from services.notifier.model import (
    STAFF_KINDS,
    TIME_BOUND_KINDS,
    AppointmentFact,
    PlannedMessage,
    readdress,
    staleness,
)
from services.notifier.store import Claim, NotifierStore, Outcome
from services.notifier.templates import RenderedMessage, TemplateSet
from shared import events as ev
from shared.envelope import Envelope, derived_event_id

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
FIRST_RETRY = timedelta(minutes=1)  # then 2, 4, 8 minutes, on the service clock
# Far longer than one send may take (channels time out after 10 s per step); renewed
# just before each send, so it bounds one send, not a whole batch.
LEASE_MS = 60_000
BATCH = 20
OUTBOX_GRACE_MS = 30_000  # an outcome this old with its event unpublished was orphaned
HOUSEKEEPING_S = 2.0  # how often a replica looks for orphaned outcomes and counts what waits


# A timer may fire a hair before its instant; this much later the message is surely due.
WAKE_SLACK_S = 0.001
# Real seconds: messages due this soon are claimed and prepared (contact, render, the
# mail composed but for its Date), then handed over at their due instant, so the round's
# own work is not lateness.
LOOKAHEAD_S = 0.06
# Real seconds: the schedule lag is asked, the lease renewed and the appointment read this
# long before a message falls due. Measured in make demo (2 shared cores, one notifier):
# from this instant to the checks' end 6 ms at the median, 12 to 18 ms at the 90th
# percentile; a 12 ms lead left a fifth of the late reminders late for their checks alone.
GATE_LEAD_S = 0.03
# How many messages are handed over at once (the email pool's connections).
SEND_CONCURRENCY = DEFAULT_CONNECTIONS


# While messages are held for the schedule lag, look again this often (real time):
# at least this long between looks, at most the poll.
MIN_RECHECK_S = 0.01
# A message found behind is asked about again, RECHECK_S apart (real time, one Kafka
# request for every message waiting), for up to RECHECK_FOR_S before it is held: on
# the demo's clock the group is often a few records behind for some milliseconds, and
# going out as soon as it caught up beats a hold, a release and a claim again.
RECHECK_FOR_S = 0.03
RECHECK_S = 0.001
# Claimed messages being delivered at once, at most (rounds do not wait for each other).
MAX_IN_FLIGHT = 4 * BATCH
# On stop, how long deliveries under way may take to end before they are cancelled.
DRAIN_S = 2.0


class ScheduleLagGauge(Protocol):
    """Which (client, appointment) changes the notifier's view lags behind on
    (lag.ScheduleLag)."""

    bound_s: float  # real seconds

    async def behind(self, subjects: Collection[Subject]) -> set[Subject]: ...

    async def close(self) -> None: ...


def next_wake_s(clock: Clock, earliest_due: datetime | None, poll_s: float) -> float:
    """Real seconds to sleep until the earliest planned message falls due, within [0, poll_s].

    The poll bound still applies: other replicas' plans, expired leases and
    clock changes are found by it. A clock that does not move by itself (a
    test's manual clock: `real_seconds` is 0 for any span) leaves only the poll.
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


def service_span(clock: Clock, real_s: float) -> timedelta:
    """How much of `clock`'s time passes in `real_s` real seconds (none on a clock that
    does not move by itself)."""
    per_second = clock.real_seconds(timedelta(seconds=1))
    return timedelta(seconds=real_s / per_second) if per_second > 0 else timedelta(0)


@dataclass
class RoundResult:
    busy: bool = False  # a full batch was claimed: more may be due at once


class _Slots:
    """At most `size` hand-overs at once; urgent ones (time-bound messages, clinical alerts)
    get the next free slot before the rest, then first come first served.

    Many messages fall due at one instant (the send window opening): a reminder's
    timing is part of its truth, a screening outcome's is not.
    """

    def __init__(self, size: int) -> None:
        self._free = max(size, 1)
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def turn(self, urgent: bool) -> AsyncIterator[None]:
        if self._free > 0 and not self._waiting:
            self._free -= 1
        else:
            given: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (0 if urgent else 1, next(self._order), given))
            try:
                await given
            except asyncio.CancelledError:
                if given.done() and not given.cancelled():
                    self._release()  # handed a slot as it was cancelled: pass it on
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            _, _, waiter = heapq.heappop(self._waiting)
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


class _Recheck:
    """Asks the schedule lag again for every message waiting on it, in one request."""

    def __init__(self, gauge: ScheduleLagGauge) -> None:
        self._gauge = gauge
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


class UnknownClient(TransientSendError):
    """No contact details yet: the request may still be on its way on another topic."""


@dataclass(frozen=True)
class ClinicTemplates:
    """One clinic's templates; an override that does not compile fails only its own kind."""

    templates: TemplateSet
    broken: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, overrides: Mapping[str, Mapping[str, str]]) -> ClinicTemplates:
        usable, broken = {}, {}
        for kind, parts in overrides.items():
            try:
                TemplateSet({kind: parts})
            # ValueError: an unknown kind or part; TypeError, AttributeError: not a mapping.
            except (jinja2.TemplateError, ValueError, TypeError, AttributeError) as error:
                broken[kind] = f"clinic template override of {kind} is unusable: {error}"
            else:
                usable[kind] = parts
        return cls(TemplateSet(usable), broken)

    def render(self, message: PlannedMessage, client_name: str | None) -> RenderedMessage:
        if reason := self.broken.get(message.kind):
            raise PermanentSendError(reason)
        try:
            return self.templates.render(message, client_name=client_name)
        except jinja2.TemplateError as error:
            raise PermanentSendError(str(error)) from error


class Delivery:
    def __init__(
        self,
        store: NotifierStore,
        clinics: ClinicDirectory,
        senders: Mapping[ev.Channel, Sender],
        publisher: EventPublisher,
        clock: Clock,
        poll_s: float,
        metrics: ServiceMetrics | None = None,
        *,
        lease_ms: int = LEASE_MS,
        schedule_lag: ScheduleLagGauge | None = None,
        send_concurrency: int = SEND_CONCURRENCY,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self._store = store
        # Set when the service stops: the loop ends after its round (a drain).
        self._stopping = stopping or asyncio.Event()
        self._clinics = clinics
        self._senders = senders
        self._publisher = publisher
        self._clock = clock
        self._poll_s = poll_s
        self._metrics = metrics
        self._lease_ms = lease_ms
        self._schedule_lag = schedule_lag
        self._slots = _Slots(send_concurrency)
        self._recheck = _Recheck(schedule_lag) if schedule_lag is not None else None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._looking_at_held = False
        self._templates: dict[str, tuple[str, ClinicTemplates]] = {}
        self._woken = asyncio.Event()
        self._woken_clinics: set[str] = set()
        self._next_housekeeping = 0.0  # monotonic; the first round does it
        # When the sleeping loop will look anyway (service clock); None: awake, or unknown.
        self._next_look: datetime | None = None
        # Clinics with messages held for the schedule lag, as last seen in Redis (a
        # hint: refreshed from Redis whenever the loop goes to sleep).
        self._held: set[str] = set()
        self._skipped = (
            Counter(
                "kap_notifications_skipped",
                "Time-bound messages not sent because they were no longer true when due "
                "(moved, cancelled, or the session had started), by clinic and kind.",
                ["service", "clinic", "kind"],
                registry=metrics.registry,
            )
            if metrics is not None
            else None
        )

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
        earliest: datetime | None = None
        held: set[str] = set()
        for clinic in self._clinics.all():
            due, waiting = await self._store.due_summary(clinic.id)
            if due is not None and (earliest is None or due < earliest):
                earliest = due
            if waiting:
                held.add(clinic.id)
        self._held = held
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
        """One pass over every clinic (or those in `only`).

        What every clinic has due now or within LOOKAHEAD_S is claimed first;
        each message is then prepared and handed over at its due instant, up to
        SEND_CONCURRENCY at once. The schedule lag is asked once for all the
        clients whose time-bound messages are due or held, just before the first
        of them falls due.
        """
        result = RoundResult()
        # Orphaned outcomes are at least OUTBOX_GRACE_MS old, and the gauge is for
        # dashboards: neither needs looking at every round (rounds follow every
        # plan with a message due now; two extra calls per clinic each time showed
        # in the make bench profile).
        housekeeping = time.monotonic() >= self._next_housekeeping
        if housekeeping:
            self._next_housekeeping = time.monotonic() + HOUSEKEEPING_S
        horizon = self._clock.now() + service_span(self._clock, LOOKAHEAD_S)
        batch: list[tuple[Clinic, Claim]] = []
        for clinic in self._clinics.all():
            if only is not None and clinic.id not in only and not housekeeping:
                continue
            if housekeeping:
                await self._publish_orphans(clinic.id)
            claims = await self._store.claim_due(
                clinic.id, horizon, limit=BATCH, lease_ms=self._lease_ms
            )
            batch += [(clinic, claim) for claim in claims]
            result.busy = result.busy or len(claims) == BATCH
            if housekeeping and self._metrics is not None:
                waiting = await self._store.waiting(clinic.id)
                self._metrics.pending("notification", clinic.id, waiting)
        # Delivered in the background: the next round claims what falls due next
        # while these wait for their instant or their channel.
        gate = asyncio.create_task(self._behind(batch))
        self._track(gate)
        for clinic, claim in batch:
            self._track(asyncio.create_task(self._deliver(clinic, claim, gate)))
        while len(self._in_flight) >= MAX_IN_FLIGHT:
            await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
        return result

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._in_flight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # Redis or Kafka away: the message's lease runs out and it is claimed again.
            log.error("delivery failed; left to its lease", exc_info=error)

    async def _behind(self, batch: list[tuple[Clinic, Claim]]) -> set[Subject]:
        """The (client, appointment) pairs whose schedule view lags, asked once just before
        the first time-bound message falls due; held messages of the others are released
        (due again, and the loop woken to claim them)."""
        if self._schedule_lag is None:
            return set()
        bound = [claim.message for _, claim in batch if claim.message.kind in TIME_BOUND_KINDS]
        held: list[tuple[str, str, Subject]] = []
        # Held messages are looked at by one round at a time (Kafka may be away).
        if not self._looking_at_held:
            self._looking_at_held = True
            try:
                for clinic_id in sorted(self._held):
                    rows = await self._store.held(clinic_id, BATCH)
                    held += [(clinic_id, i, c) for i, c in rows]
            finally:
                self._looking_at_held = bool(held)
        try:
            return await self._ask_and_release(self._schedule_lag, bound, held)
        finally:
            if held:
                self._looking_at_held = False

    async def _ask_and_release(
        self,
        gauge: ScheduleLagGauge,
        bound: list[PlannedMessage],
        held: list[tuple[str, str, Subject]],
    ) -> set[Subject]:
        subjects = {_subject(message) for message in bound} | {c for _, _, c in held}
        if not subjects:
            return set()
        if bound:
            first = min(message.send_at for message in bound)
            await self._until(first - service_span(self._clock, GATE_LEAD_S))
        behind = await gauge.behind(subjects)
        caught_up: dict[str, list[str]] = defaultdict(list)
        for clinic_id, notification_id, subject in held:
            if subject not in behind:
                caught_up[clinic_id].append(notification_id)
        for clinic_id, ids in caught_up.items():
            if await self._store.release_held(clinic_id, ids):
                self.wake(clinic_id)
        return behind

    async def _until(self, instant: datetime) -> None:
        """Sleep until `instant` on the service clock (at once on a clock that does not move
        by itself: what it claimed is due already)."""
        while (ahead := instant - self._clock.now()) > timedelta(0):
            real_s = self._clock.real_seconds(ahead)
            if real_s <= 0:
                return
            await asyncio.sleep(real_s)

    async def _deliver(
        self, clinic: Clinic, claim: Claim, gate: asyncio.Task[set[Subject]]
    ) -> None:
        """Send one claimed message at its due instant, or record why not, or hold it for the
        schedule view."""
        planned = claim.message
        if claim.attempts > MAX_ATTEMPTS:
            # Only a replica dying mid-send gets here: stop before it happens again.
            await self._fail(claim, planned, "gave up: delivery was interrupted", permanent=False)
            return
        time_bound = planned.kind in TIME_BOUND_KINDS
        if time_bound and (reason := await self._stale(planned, clinic)) is not None:
            await self._skip(claim, planned, reason)  # no use preparing it
            return
        try:
            message, outgoing = await self._prepare(clinic, planned)
        except PermanentSendError as error:
            await self._fail(claim, planned, error.reason, permanent=True)
            return
        except TransientSendError as error:
            await self._retry_or_give_up(claim, error)
            return
        # The checks that need a round trip are made just ahead of the due instant (the
        # lag request's time ahead), so the hand-over itself is on time.
        await self._until(planned.send_at - service_span(self._clock, GATE_LEAD_S))
        if time_bound and await self._behind_on(_subject(planned), gate):
            # A change to this appointment may be waiting unread: not now, not counted.
            if await self._store.hold(claim):
                self._held.add(clinic.id)
            return
        renewed, fact = await asyncio.gather(
            self._store.renew(claim, self._lease_ms),
            self._fact(planned) if time_bound else _nothing(),
        )
        if not renewed:
            log.info(
                "notification %s: lease lost while waiting in the batch; left to its new holder",
                planned.notification_id,
                extra=_ids(claim),
            )
            return
        await self._until(planned.send_at)
        async with self._slots.turn(urgent=time_bound or planned.kind in STAFF_KINDS):
            # One instant for the last check, the mail's Date and the sent fact: the
            # hand-over, so what was checked true is what the client is told it was.
            at = self._clock.now()

            if (reason := staleness(planned, fact, at, clinic.zone)) is not None:
                await self._skip(claim, planned, reason)
                return
            try:
                await self._senders[message.channel].send(replace(outgoing, at=at))
            except PermanentSendError as error:
                await self._fail(claim, planned, error.reason, permanent=True)
                return
            except TransientSendError as error:
                await self._retry_or_give_up(claim, error)
                return
        await self._sent(claim, message, at)

    async def _behind_on(self, subject: Subject, gate: asyncio.Task[set[Subject]]) -> bool:
        """Whether the view of the message's appointment still lags, asked again for a short
        while."""
        if subject not in await gate:
            return False
        until = time.monotonic() + RECHECK_FOR_S
        while time.monotonic() < until:
            if self._recheck is None or not await self._recheck.behind(subject):
                return False
        return True

    async def _fact(self, planned: PlannedMessage) -> AppointmentFact | None:
        if planned.appointment_id is None:
            return None
        return await self._store.appointment(planned.clinic_id, planned.appointment_id)

    async def _stale(self, planned: PlannedMessage, clinic: Clinic) -> str | None:
        return staleness(planned, await self._fact(planned), self._clock.now(), clinic.zone)

    async def _prepare(
        self, clinic: Clinic, planned: PlannedMessage
    ) -> tuple[PlannedMessage, Outgoing]:
        client_name = None
        if planned.recipient == "staff":
            if not clinic.staff_email:
                raise PermanentSendError("the clinic has no staff email address")
            message, to = planned, clinic.staff_email
        else:
            known = await self._store.contact(planned.clinic_id, planned.client_id)
            if known is None or known.contact is None:
                raise UnknownClient("unknown client: no contact details received")
            readdressed = readdress(planned, known.prefs)
            if readdressed is None:
                raise PermanentSendError("no usable channel: opted out, or no SMS consent")
            message, client_name = readdressed, known.contact.name
            address = known.contact.email if message.channel == "email" else known.contact.phone
            if address is None:
                raise PermanentSendError("no phone number for SMS")
            to = address
        rendered = self._templates_of(clinic).render(message, client_name)
        outgoing = Outgoing(message.notification_id, to, rendered, clinic.name, self._clock.now())
        return message, self._senders[message.channel].prepare(outgoing)

    def _templates_of(self, clinic: Clinic) -> ClinicTemplates:
        overrides = template_overrides(clinic)
        stamp = json.dumps(overrides, sort_keys=True, default=str)
        cached = self._templates.get(clinic.id)
        if cached is None or cached[0] != stamp:
            cached = (stamp, ClinicTemplates.build(overrides))
            self._templates[clinic.id] = cached
        return cached[1]

    async def _retry_or_give_up(self, claim: Claim, error: TransientSendError) -> None:
        if claim.attempts >= MAX_ATTEMPTS:
            reason = f"gave up after {claim.attempts} attempts: {error.reason}"
            permanent = isinstance(error, UnknownClient)
            await self._fail(claim, claim.message, reason, permanent=permanent)
            return
        at = self._clock.now() + FIRST_RETRY * 2 ** (claim.attempts - 1)
        if await self._store.retry_at(claim, at, error.reason):
            log.warning(
                "notification %s: attempt %d failed (%s); retrying",
                claim.message.notification_id,
                claim.attempts,
                error.reason,
                extra=_ids(claim),
            )

    async def _sent(self, claim: Claim, message: PlannedMessage, at: datetime) -> None:
        event = ev.NotificationSent(
            clinic_id=message.clinic_id,
            client_id=message.client_id,
            occurred_at=at,
            notification_id=message.notification_id,
            message_kind=message.kind,
            channel=message.channel,
            cause_event_id=message.cause_event_id,
            appointment_id=message.appointment_id,
            refers_to=message.refers_to,
        )
        details = {"sent_as": str(message.notification_id), "sent_channel": message.channel}
        await self._record(claim, Outcome("sent", event, self._envelope(event, claim), details))

    async def _fail(
        self,
        claim: Claim,
        message: PlannedMessage,
        reason: str,
        *,
        permanent: bool,
        state: Literal["failed", "skipped"] = "failed",
    ) -> bool:
        event = ev.NotificationFailed(
            clinic_id=message.clinic_id,
            client_id=message.client_id,
            occurred_at=self._clock.now(),
            notification_id=message.notification_id,
            message_kind=message.kind,
            channel=message.channel,
            cause_event_id=message.cause_event_id,
            reason=reason,
            permanent=permanent,
            appointment_id=message.appointment_id,
            refers_to=message.refers_to,
        )
        details = {"reason": reason, "permanent": str(permanent).lower()}
        return await self._record(
            claim, Outcome(state, event, self._envelope(event, claim), details)
        )

    async def _skip(self, claim: Claim, message: PlannedMessage, reason: str) -> None:
        """No longer true: never sent, and said so on the failed topic (permanent, "stale: ")."""
        recorded = await self._fail(claim, message, reason, permanent=True, state="skipped")
        if recorded and self._skipped is not None and self._metrics is not None:
            self._skipped.labels(self._metrics.service, message.clinic_id, message.kind).inc()

    def _envelope(
        self, event: ev.NotificationSent | ev.NotificationFailed, claim: Claim
    ) -> Envelope:
        outcome = "sent" if isinstance(event, ev.NotificationSent) else "failed"
        envelope = self._publisher.envelope_for(
            event,
            event_id=derived_event_id(str(claim.message.notification_id), f"notifier/{outcome}"),
            correlation_id=claim.correlation_id,
        )
        return envelope.model_copy(update={"causation_id": claim.message.cause_event_id})

    async def _record(self, claim: Claim, outcome: Outcome) -> bool:
        if not await self._store.finish(claim, outcome):
            log.warning(
                "notification %s: lease lost before its outcome was recorded",
                claim.message.notification_id,
                extra=_ids(claim),
            )
            return False
        log.info(
            "notification %s %s (%s)",
            claim.message.notification_id,
            outcome.state,
            outcome.details.get("reason") or outcome.details.get("sent_channel"),
            extra=_ids(claim),
        )
        await self._publisher.publish(outcome.event, outcome.envelope)
        await self._store.published(claim.message.clinic_id, str(claim.message.notification_id))
        return True

    async def _publish_orphans(self, clinic_id: str) -> None:
        orphans = await self._store.unpublished(
            clinic_id, older_than_ms=OUTBOX_GRACE_MS, limit=BATCH
        )
        for notification_id, event, envelope in orphans:
            await self._publisher.publish(event, envelope)
            await self._store.published(clinic_id, notification_id)


def _subject(message: PlannedMessage) -> Subject:
    return (message.client_id, message.appointment_id)


async def _nothing() -> None:
    return None


def _ids(claim: Claim) -> dict[str, str]:
    message = claim.message
    return {
        "clinic_id": message.clinic_id,
        "client_id": str(message.client_id),
        "causation_id": message.cause_event_id,
        "correlation_id": claim.correlation_id,
    }
