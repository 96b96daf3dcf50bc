"""The notifier's subscribers: each event updates the contact projection and plans messages.

Nothing is sent here. A handler stores what its event makes the notifier send,
when, and which pending messages that replaces, together with the record that
the event was handled (one step of the unit of work, chassis.unit_of_work: read
under WATCH, decide, one MULTI); the delivery loop sends.

All topics share one subscriber, i.e. one Kafka consumer, each event type still
with its own typed handler. One consumer per topic (chassis.kafka.subscribe)
means fifteen members joining one group one after another, each join a
rebalance of all the others: measured 23 s (47 s with the default heartbeat)
before a replica consumes at all, against a twentieth of a second for one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from faststream.kafka import KafkaBroker
from pydantic import ValidationError
from redis.asyncio.client import Pipeline

from chassis.batches import Handler, Together
from chassis.clinics import ClinicDirectory, PerVersion
from chassis.clock import Clock
from chassis.config import ServiceSettings
from chassis.dead_letters import Rejected, describe, one_clinic
from chassis.kafka import GroupMembership, subscribe
from chassis.metrics import ServiceMetrics
from chassis.unit_of_work import Decision, Transaction, UnitOfWork
from services.notifier import domain, tidy
from services.notifier.alerts import Alerts
from services.notifier.appointment_facts import appointment_facts, superseded_appointments
from services.notifier.config import clinic_settings
from services.notifier.contacts import ContactChange, KnownContact
from services.notifier.measures import MeasureRequests
from services.notifier.model import ClinicSettings, MessageKind, PlannedMessage
from services.notifier.planning import Plan
from services.notifier.plans import PlanStore
from shared import events as ev
from shared import topics
from shared.envelope import Envelope
from shared.topics import Service, Topic

SERVICE: Service = "notifier"


@dataclass(frozen=True)
class Deps:
    plans: PlanStore
    unit_of_work: UnitOfWork
    clinics: ClinicDirectory
    clock: Clock
    # Told the earliest send time of every plan, so delivery looks by then (it sleeps
    # until the next due message it knew of, and this one may be due sooner).
    due_now: Callable[[str, datetime], None] = lambda clinic_id, due_at: None
    alerts: Alerts | None = None  # urgent alerts' records, for their acknowledgement
    measures: MeasureRequests | None = None  # which measures were answered


# An event to plan, with the contact change it brings (None: none).
ToPlan = tuple[ev.Event, Envelope, "ContactChange | None"]


class Planner:
    """What every handler does: once per event, plan its messages under the clinic's policy."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def plan(
        self, event: ev.Event, envelope: Envelope, contact_change: ContactChange | None = None
    ) -> None:
        await self.plan_together([(event, envelope, contact_change)])

    async def plan_together(self, items: Sequence[ToPlan]) -> None:
        """Plan several clients' events of one clinic in one write step: each client's
        share reads what its own would, the shares' reads sent together
        (chassis.unit_of_work.Transaction.gather), and one MULTI records every plan and
        handled mark. At most one event per client (a later one plans on what an
        earlier one wrote: it goes in a step after it)."""
        deps = self._deps
        clinic_ids = {one_clinic(event, envelope) for event, envelope, _ in items}
        if len(clinic_ids) != 1:
            raise ValueError(f"one clinic's events planned together, not {sorted(clinic_ids)}")
        clients = {envelope.id: str(event.client_id) for event, envelope, _ in items}
        if len(set(clients.values())) != len(items):
            raise ValueError("at most one event per client planned together")

        async def step(tx: Transaction) -> Decision[datetime]:
            parts = [functools.partial(self._decide, *item) for item in items]
            decisions = await tx.gather(parts)
            fresh = set(tx.fresh)  # an event handled before: what its share decided is dropped
            kept = [
                d
                for (_, envelope, _), d in zip(items, decisions, strict=True)
                if envelope.id in fresh
            ]

            def write(p: Pipeline) -> None:
                for decision in kept:
                    decision.write(p)

            earliest = min((d.result for d in kept if d.result is not None), default=None)
            return Decision(write, result=earliest)

        (clinic_id,) = clinic_ids
        owners: str | dict[str, str] = clients if len(items) > 1 else next(iter(clients.values()))
        earliest = await deps.unit_of_work.run(clinic_id, list(clients), step, marks_of=owners)
        if isinstance(earliest, datetime):
            deps.due_now(clinic_id, earliest)

    async def _decide(
        self,
        event: ev.Event,
        envelope: Envelope,
        contact_change: ContactChange | None,
        tx: Transaction,
    ) -> Decision[datetime]:
        """One event's plan, decided from what it reads under WATCH."""
        deps = self._deps
        settings = self._settings(event, envelope)
        # The prefs the messages follow, the contact written with them and when the
        # client was last tidied: one read.
        known, tidied = await deps.plans.client_view(tx, event.clinic_id, event.client_id)
        changed = contact_change(known) if contact_change is not None else None
        prefs = (changed or known or KnownContact()).prefs
        now = deps.clock.now()
        messages = domain.messages_for(event, prefs, settings, now, cause_event_id=envelope.id)
        plan = Plan(
            cause=envelope,
            messages=messages,
            superseded_appointments=superseded_appointments(event),
            changed_at=event.occurred_at,
            appointments=appointment_facts(event),
            tidy_at=event.occurred_at if tidy.tidies(event) else None,
            listed=tidy.lists_input(event),
        )
        write = await deps.plans.writes(
            tx, plan, client_id=event.client_id, contact=changed, now=now, tidied=tidied
        )
        if isinstance(event, ev.ClinicalAlertRaised) and deps.alerts is not None:
            write = _with_alert(write, deps.alerts, event, envelope.id, messages)
        # A contact arriving makes the messages that awaited it due now.
        arrived = (
            changed is not None and changed.contact is not None and not (known and known.contact)
        )
        sends = [m.send_at for m in messages] + ([now] if arrived else [])
        return Decision(write, result=min(sends, default=None))

    def _settings(self, event: ev.Event, envelope: Envelope) -> ClinicSettings:
        clinic = self._deps.clinics.get(event.clinic_id)
        if clinic is None:
            raise Rejected(f"unknown clinic {event.clinic_id}")
        try:
            return _clinic_settings(clinic)
        except ValidationError as error:
            raise Rejected(f"clinic {clinic.id} notifier settings: {describe(error)}") from error


# Validated once per clinic version, not per event (issue 19).
_clinic_settings = PerVersion(clinic_settings)


def _with_alert(
    write: Callable[[Pipeline], None],
    alerts: Alerts,
    alert: ev.ClinicalAlertRaised,
    alert_id: str,
    messages: Sequence[PlannedMessage],
) -> Callable[[Pipeline], None]:
    """The plan's writes and the alert's record (with its escalation's id), in one MULTI."""
    escalation = next(
        (m for m in messages if m.kind == MessageKind.CLINICAL_ALERT_ESCALATION), None
    )

    def both(p: Pipeline) -> None:
        write(p)
        if escalation is not None:
            alerts.record(p, alert, alert_id, str(escalation.notification_id))

    return both


def requested(event: ev.ConsultationRequested) -> ContactChange:
    """A (repeated) request brings the latest contact; earlier opt-outs still hold."""

    def change(known: KnownContact | None) -> KnownContact:
        opted_out = known.opted_out if known else frozenset()
        return KnownContact(contact=event.contact, opted_out=opted_out)

    return change


def preferences(event: ev.ContactPreferencesChanged) -> ContactChange:
    """An opt-out (or back in), kept even before any contact is known: topics are not ordered."""

    def change(known: KnownContact | None) -> KnownContact:
        known = known or KnownContact()
        opted_out = known.prefs.updated(event).opted_out
        return known.model_copy(update={"opted_out": opted_out})

    return change


def register(
    broker: KafkaBroker,
    deps: Deps,
    settings: ServiceSettings,
    metrics: ServiceMetrics | None = None,
) -> GroupMembership:
    return subscribe(
        broker,
        SERVICE,
        reactions(deps),
        "notifier reacts: plans the messages each lifecycle event causes",
        settings,
        metrics,
        together=planned_together(deps),
    )


def planned_together(deps: Deps) -> Together:
    """The planning topics' events of one clinic, planned in one step (issue 19): every
    topic `reactions` hands to the planner, each event with the contact change its own
    handler brings."""
    planner = Planner(deps)

    async def plan(items: Sequence[tuple[Any, Envelope]]) -> None:
        await planner.plan_together([(e, envelope, contact_change(e)) for e, envelope in items])

    planned = frozenset(t.name for t, _ in reactions(deps) if t is not topics.MEASURE_ANSWERED)
    return Together(planned, plan)


def contact_change(event: ev.Event) -> ContactChange | None:
    """The change to the client's contact an event brings, as its handler gives it."""
    if isinstance(event, ev.ConsultationRequested):
        return requested(event)
    if isinstance(event, ev.ContactPreferencesChanged):
        return preferences(event)
    return None


def reactions(deps: Deps) -> list[tuple[Topic, Handler]]:
    """Each consumed topic's handler: subscribed by `register`, called directly by a
    rebuild (services.notifier.rebuild), which replays the topics through them."""
    planner = Planner(deps)

    async def on_consultation_requested(
        event: ev.ConsultationRequested, envelope: Envelope
    ) -> None:
        await planner.plan(event, envelope, contact_change(event))

    async def on_contact_preferences_changed(
        event: ev.ContactPreferencesChanged, envelope: Envelope
    ) -> None:
        await planner.plan(event, envelope, contact_change(event))

    async def on_consultation_booking_failed(
        event: ev.ConsultationBookingFailed, envelope: Envelope
    ) -> None:
        await planner.plan(event, envelope)

    async def on_consultation_booked(event: ev.ConsultationBooked, envelope: Envelope) -> None:
        await planner.plan(event, envelope)

    async def on_consultation_waitlisted(
        event: ev.ConsultationWaitlisted, envelope: Envelope
    ) -> None:
        await planner.plan(event, envelope)

    async def on_consultation_slot_offered(
        event: ev.ConsultationSlotOffered, envelope: Envelope
    ) -> None:
        await planner.plan(event, envelope)

    async def on_consultation_cancelled(
        event: ev.ConsultationCancelled, envelope: Envelope
    ) -> None:
        await planner.plan(event, envelope)

    async def on_consultation_held(event: ev.ConsultationHeld, envelope: Envelope) -> None:
        await planner.plan(event, envelope)

    async def on_screening_completed(event: ev.ScreeningCompleted, envelope: Envelope) -> None:
        await planner.plan(event, envelope)

    async def on_clinical_alert_raised(event: ev.ClinicalAlertRaised, envelope: Envelope) -> None:
        await planner.plan(event, envelope)

    async def on_course_booked(event: ev.CourseBooked, envelope: Envelope) -> None:
        await planner.plan(event, envelope)

    async def on_session_scheduled(event: ev.SessionScheduled, envelope: Envelope) -> None:
        await planner.plan(event, envelope)

    async def on_session_rescheduled(event: ev.SessionRescheduled, envelope: Envelope) -> None:
        await planner.plan(event, envelope)

    async def on_session_cancelled(event: ev.SessionCancelled, envelope: Envelope) -> None:
        await planner.plan(event, envelope)

    async def on_session_missed(event: ev.SessionMissed, envelope: Envelope) -> None:
        await planner.plan(event, envelope)

    async def on_session_completed(event: ev.SessionCompleted, envelope: Envelope) -> None:
        await planner.plan(event, envelope)

    async def on_course_completed(event: ev.CourseCompleted, envelope: Envelope) -> None:
        await planner.plan(event, envelope)

    async def on_booster_due(event: ev.BoosterDue, envelope: Envelope) -> None:
        await planner.plan(event, envelope)

    async def on_booster_session_booked(event: ev.BoosterSessionBooked, envelope: Envelope) -> None:
        await planner.plan(event, envelope)

    async def on_course_paused(event: ev.CoursePaused, envelope: Envelope) -> None:
        await planner.plan(event, envelope)

    async def on_course_resumed(event: ev.CourseResumed, envelope: Envelope) -> None:
        await planner.plan(event, envelope)

    async def on_course_ended(event: ev.CourseEnded, envelope: Envelope) -> None:
        await planner.plan(event, envelope)

    async def on_session_checked_in(event: ev.SessionCheckedIn, envelope: Envelope) -> None:
        await planner.plan(event, envelope)  # a refusal is told; the answers are never kept

    async def on_measure_due(event: ev.MeasureDue, envelope: Envelope) -> None:
        await planner.plan(event, envelope)

    async def on_measure_answered(event: ev.MeasureAnswered, envelope: Envelope) -> None:
        if deps.measures is not None:  # that it was answered, never the answers
            await deps.measures.on_answered(event, envelope, deps.unit_of_work)

    handlers: list[tuple[Topic, Handler]] = [
        (topics.CONSULTATION_REQUESTED, on_consultation_requested),
        (topics.CONTACT_PREFERENCES_CHANGED, on_contact_preferences_changed),
        (topics.CONSULTATION_BOOKING_FAILED, on_consultation_booking_failed),
        (topics.CONSULTATION_BOOKED, on_consultation_booked),
        (topics.CONSULTATION_WAITLISTED, on_consultation_waitlisted),
        (topics.CONSULTATION_SLOT_OFFERED, on_consultation_slot_offered),
        (topics.CONSULTATION_CANCELLED, on_consultation_cancelled),
        (topics.CONSULTATION_HELD, on_consultation_held),
        (topics.SCREENING_COMPLETED, on_screening_completed),
        (topics.CLINICAL_ALERT_RAISED, on_clinical_alert_raised),
        (topics.COURSE_BOOKED, on_course_booked),
        (topics.SESSION_SCHEDULED, on_session_scheduled),
        (topics.SESSION_RESCHEDULED, on_session_rescheduled),
        (topics.SESSION_CANCELLED, on_session_cancelled),
        (topics.SESSION_MISSED, on_session_missed),
        (topics.SESSION_COMPLETED, on_session_completed),
        (topics.COURSE_COMPLETED, on_course_completed),
        (topics.BOOSTER_DUE, on_booster_due),
        (topics.BOOSTER_SESSION_BOOKED, on_booster_session_booked),
        (topics.COURSE_PAUSED, on_course_paused),
        (topics.COURSE_RESUMED, on_course_resumed),
        (topics.COURSE_ENDED, on_course_ended),
        (topics.SESSION_CHECKED_IN, on_session_checked_in),
        (topics.MEASURE_DUE, on_measure_due),
        (topics.MEASURE_ANSWERED, on_measure_answered),
    ]
    return handlers
