"""One claimed message delivered: addressed as prefs stand now, rendered, checked, handed over.

Each message is prepared (contact, channel, render, a first check) as soon as
it is claimed, then waits for its due instant; just before it (GATE_LEAD_S) its
lease is renewed (queue.DeliveryQueue.renew, fenced by the lease's token: a
message that outlived its lease and was re-claimed by another replica is left
to that replica). A renewed lease is this replica's until its deadline (a live
lease is never claimed by anyone else), so the hand-over needs no round trip
of its own: only a turn that kept it waiting into the lease's last
LEASE_MARGIN_S checks it again (`still_held`: the token, and the deadline on
Redis's clock) before handing over. It is handed over
up to SEND_CONCURRENCY at once (chassis.turns, urgent ones first):
many messages fall due at one instant, such as the send window opening, and
one after the other they would queue behind each channel exchange.

Only true messages: a time-bound message (reminders, session instructions) is
checked just before it is sent against the notifier's own projection of its
appointment (plans.PlanStore.appointment): one whose session has started, or
whose appointment was moved, cancelled or held meanwhile, is skipped. While the
notifier's view of its client's schedule lags (the round's lag answer, asked
again for RECHECK_FOR_S), it is held instead, the attempt not counted. The
projection is read after the lag was asked, on an answer whose question was put
at most FRESH_S before the message's turn (asked again, and the projection read
again, when a message later in its round, a wait for its turn or a slow answer
made it older; held, too, when every answer is slow);
everything else, above all the urgent clinical alert, goes regardless. A
measure request is checked the same way against its measure (measures.py:
closed, or answered meanwhile), and its link is minted as it is prepared.

A message is never handed over before its due instant; the last check, the
mail's Date and the NotificationSent time are the instant it is handed over.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from uuid import UUID

import jinja2

from chassis.clinics import Clinic
from chassis.clock import Clock
from chassis.turns import Turns
from services.notifier.alerts import Alerts
from services.notifier.channels import Outgoing, PermanentSendError, Sender, TransientSendError
from services.notifier.config import template_overrides
from services.notifier.contacts import Contacts, KnownContact
from services.notifier.lag_records import Subject
from services.notifier.measures import MeasureRequests
from services.notifier.model import (
    STAFF_KINDS,
    STAFF_RECIPIENTS,
    TIME_BOUND_KINDS,
    MessageKind,
    PlannedMessage,
)
from services.notifier.outcomes import MAX_ATTEMPTS, Outcomes, UnknownClient, claim_ids
from services.notifier.pacing import (
    RECHECK_FOR_S,
    Recheck,
    ScheduleLagGauge,
    Verdict,
    service_span,
    until,
)
from services.notifier.plans import PlanStore
from services.notifier.prefs import readdress
from services.notifier.queue import Claim, DeliveryQueue
from services.notifier.staleness import AppointmentFact, staleness
from services.notifier.templates import RenderedMessage, TemplateSet
from shared import events as ev

log = logging.getLogger(__name__)

# The contacts a round's client messages go to, by (clinic id, client id).
ContactsRead = Mapping[tuple[str, UUID], KnownContact | None]

# Real seconds: the schedule lag is asked, the lease renewed and the appointment read this
# long before a message falls due. Measured in make demo (2 shared cores, one notifier):
# from this instant to the checks' end 6 ms at the median, 12 to 18 ms at the 90th
# percentile; a 12 ms lead left a fifth of the late reminders late for their checks alone.
GATE_LEAD_S = 0.03
# Real seconds: a time-bound message is handed over on a lag answer whose question was
# put at most this long before its turn (or the lag's bound, if longer): older, it is
# asked again, and the appointment read again after the answer; an answer that took
# longer than this to come back is as old as its question, and is asked again too,
# FRESH_TRIES times at most, then the message is held. A change that became readable
# after the question can still cross the message in flight: on the demo's clock, this
# plus the read and the SMTP exchange's start (the auditor's CROSSING_S allows 60 ms).
FRESH_S = 0.045
FRESH_TRIES = 3
LEASE_MARGIN_S = 5.0  # a renewed lease this close to its end is checked again before a send


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


class Handover:
    def __init__(
        self,
        contacts: Contacts,
        plans: PlanStore,
        queue: DeliveryQueue,
        senders: Mapping[ev.Channel, Sender],
        outcomes: Outcomes,
        clock: Clock,
        *,
        lease_ms: int,
        send_concurrency: int,
        schedule_lag: ScheduleLagGauge | None,
        alerts: Alerts | None = None,
        measures: MeasureRequests | None = None,
    ) -> None:
        self._alerts = alerts
        self._measures = measures
        self._contacts = contacts
        self._plans = plans
        self._queue = queue
        self._senders = senders
        self._outcomes = outcomes
        self._clock = clock
        self._lease_ms = lease_ms
        self._slots = Turns(send_concurrency)
        self._recheck = Recheck(schedule_lag) if schedule_lag is not None else None
        self._templates: dict[str, tuple[str, ClinicTemplates]] = {}

    async def contacts_for(self, claims: Iterable[Claim]) -> ContactsRead:
        """The contacts of the clients a round's claimed messages go to, read together: one
        round trip a round, not one a message (issue 19)."""
        return await self._contacts.get_many(
            (c.message.clinic_id, c.message.client_id)
            for c in claims
            if c.message.recipient not in STAFF_RECIPIENTS
        )

    async def deliver(
        self, clinic: Clinic, claim: Claim, gate: asyncio.Task[Verdict], contacts: ContactsRead
    ) -> bool:
        """Send one claimed message at its due instant, or record why not, or hold it for the
        schedule view (True: held). `contacts`: its round's (`contacts_for`)."""
        planned = claim.message
        outcomes = self._outcomes
        if claim.attempts > MAX_ATTEMPTS:
            # Only a replica dying mid-send gets here: stop before it happens again.
            await outcomes.fail(
                claim, planned, "gave up: delivery was interrupted", permanent=False
            )
            return False
        time_bound = planned.kind in TIME_BOUND_KINDS
        if time_bound and (reason := await self._stale(planned, clinic)) is not None:
            await outcomes.skip(claim, planned, reason)  # no use preparing it
            return False
        if (reason := await self._measure_stale(planned)) is not None:
            await outcomes.skip(claim, planned, reason)
            return False
        try:
            message, outgoing = self._prepare(clinic, planned, contacts)
        except (PermanentSendError, TransientSendError) as error:
            await outcomes.send_failed(claim, error)
            return False
        # The checks that need a round trip are made just ahead of the due instant (the
        # lag request's time ahead), so the hand-over itself is on time.
        await until(self._clock, planned.send_at - service_span(self._clock, GATE_LEAD_S))
        asked_at = time.monotonic()
        if time_bound:
            behind, asked_at = await self._behind_on(subject_of(planned), gate)
            if behind:
                # A change to this appointment may be waiting unread: not now, not counted.
                return await outcomes.hold(claim)
        renewing = time.monotonic()  # the lease runs from no earlier than this
        held_back = False
        renewed, fact = await asyncio.gather(
            self._queue.renew(claim, self._lease_ms),
            self._fact(planned) if time_bound else _nothing(),
        )
        if not renewed:
            log.info(
                "notification %s: lease lost while waiting in the batch; left to its new holder",
                planned.notification_id,
                extra=claim_ids(claim),
            )
            return False
        if await self._acknowledged(planned):
            await outcomes.skip(claim, planned, "stale: the alert was acknowledged")
            return False
        if (reason := await self._measure_stale(planned)) is not None:
            await outcomes.skip(claim, planned, reason)
            return False
        await until(self._clock, planned.send_at)
        # Urgent ones (time-bound messages, clinical alerts) get the next free turn before
        # the rest: many fall due at one instant (the send window opening), and a
        # reminder's timing is part of its truth, a screening outcome's is not.
        urgent = time_bound or planned.kind in STAFF_KINDS
        async with self._slots.turn(0 if urgent else 1):
            if time_bound and self._stale_answer(asked_at):
                # A busy round (a wait for its turn, a backlog): the lag's answer is old
                # by now. Asked again, then the fact read again after it: a change on
                # its topic before the question is in the fact, or holds the message.
                if await self._caught_up_now(subject_of(planned)):
                    fact = await self._fact(planned)
                else:
                    held_back = True
            # Known held while well inside the renewed lease; a round trip at the due
            # instant would make every hand-over that much late (a clinic's 10 minutes
            # are milliseconds on the demo's clock). After the asking above: it may take
            # seconds under load.
            near_end = time.monotonic() - renewing > self._lease_ms / 1000 - LEASE_MARGIN_S
            if near_end and not held_back and not await self._queue.still_held(claim):
                log.info(
                    "notification %s: lease lost waiting for its turn; left to its new holder",
                    planned.notification_id,
                    extra=claim_ids(claim),
                )
                return False
            # One instant for the last check, the mail's Date and the sent fact: the
            # hand-over, so what was checked true is what the client is told it was.
            at = self._clock.now()
            failed: PermanentSendError | TransientSendError | None = None
            if not held_back and (reason := staleness(planned, fact, at, clinic.zone)) is None:
                try:
                    await self._senders[message.channel].send(replace(outgoing, at=at))
                except (PermanentSendError, TransientSendError) as error:
                    failed = error
        # Recorded after the turn: the next hand-over need not wait for the write.
        if held_back:
            return await outcomes.hold(claim)
        if reason is not None:
            await outcomes.skip(claim, planned, reason)
        elif failed is not None:
            await outcomes.send_failed(claim, failed)
        else:
            await outcomes.sent(claim, message, at)
        return False

    def _stale_answer(self, asked_at: float) -> bool:
        """Whether a lag answer to a question put at `asked_at` is too old to send on: older
        than FRESH_S, or than the lag's own bound if longer (a change younger than the
        bound holds nothing, so a fresher answer would add nothing). No lag, no answer."""
        if self._recheck is None:
            return False
        return time.monotonic() - asked_at > max(FRESH_S, self._recheck.bound_s)

    async def _behind_on(self, subject: Subject, gate: asyncio.Task[Verdict]) -> tuple[bool, float]:
        """Whether the view of the message's appointment still lags, from the round's answer
        (asked again if it is stale by now: a message later in the round, or a slow
        answer), asked again for a short while if so; and when it was last asked."""
        verdict = await gate
        asked_at, behind = verdict.asked_at, subject in verdict.behind
        if not behind and self._stale_answer(asked_at):
            asked_at, behind = time.monotonic(), await self._behind_now(subject)
        deadline = time.monotonic() + RECHECK_FOR_S
        while behind and time.monotonic() < deadline:
            asked_at, behind = time.monotonic(), await self._behind_now(subject)
        return behind, asked_at

    async def _caught_up_now(self, subject: Subject) -> bool:
        """Whether the view of the message's appointment is current, by an answer that
        came back at most FRESH_S after the question was put: an answer is as old as its
        question, and under load one takes hundreds of milliseconds (a change readable
        meanwhile is not in it). A slow answer is asked again, FRESH_TRIES times at most;
        then the message waits (held: better late than untrue)."""
        for _ in range(FRESH_TRIES):
            asked_at = time.monotonic()
            if await self._behind_now(subject):
                return False
            if not self._stale_answer(asked_at):
                return True
        return False

    async def _behind_now(self, subject: Subject) -> bool:
        """The schedule lag asked again (with every message asking meanwhile)."""
        return self._recheck is not None and await self._recheck.behind(subject)

    async def _acknowledged(self, planned: PlannedMessage) -> bool:
        """An escalation whose alert someone owned meanwhile is no longer true."""
        if planned.kind != MessageKind.CLINICAL_ALERT_ESCALATION or self._alerts is None:
            return False
        return await self._alerts.acknowledged(planned.clinic_id, planned.cause_event_id)

    async def _measure_stale(self, planned: PlannedMessage) -> str | None:
        if planned.kind != MessageKind.MEASURE_REQUEST or self._measures is None:
            return None
        return await self._measures.staleness(planned, self._clock.now())

    async def _fact(self, planned: PlannedMessage) -> AppointmentFact | None:
        if planned.appointment_id is None:
            return None
        return await self._plans.appointment(planned.clinic_id, planned.appointment_id)

    async def _stale(self, planned: PlannedMessage, clinic: Clinic) -> str | None:
        return staleness(planned, await self._fact(planned), self._clock.now(), clinic.zone)

    def _prepare(
        self, clinic: Clinic, planned: PlannedMessage, contacts: ContactsRead
    ) -> tuple[PlannedMessage, Outgoing]:
        client_name = None
        if planned.recipient in STAFF_RECIPIENTS:
            # An escalation goes to the on-call contact, or to staff if the clinic has none.
            address = clinic.on_call_email if planned.recipient == "on_call" else None
            address = address or clinic.staff_email
            if not address:
                raise PermanentSendError("the clinic has no staff email address")
            message, to = planned, address
        else:
            known = contacts[(planned.clinic_id, planned.client_id)]
            if known is None or known.contact is None:
                raise UnknownClient("unknown client: no contact details received")
            readdressed = readdress(planned, known.prefs)
            if readdressed is None:
                raise PermanentSendError("no usable channel: opted out, or no SMS consent")
            message, client_name = readdressed, known.contact.name
            if message.kind == MessageKind.MEASURE_REQUEST:
                if self._measures is None:
                    raise PermanentSendError("measure links are not configured")
                message = self._measures.linked(message, self._clock.now(), clinic.zone)
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


def subject_of(message: PlannedMessage) -> Subject:
    return (message.client_id, message.appointment_id)


async def _nothing() -> None:
    return None
