"""Intake's use cases: what each step reads, decides, records and publishes.

The routes only parse, authenticate and translate; every write goes through the
unit of work (`chassis.unit_of_work`), once, here: the keys a decision depends on
are watched and read, the pure domain decides, and one MULTI records the state,
its history, the answer to a retried `Idempotency-Key` and the events it caused
(in the outbox). The events are published after, and the request is answered
once its write is recorded: with the broker away it is still accepted (202), and
the outbox relay publishes its events once the broker is back. A concurrent write
to a watched key makes the step rerun from its reads (no lock).
Errors are the domain's (`StepRefused`), this module's (`NotFound`, `KeyReused`,
`AlreadyAnswered`)
and the unit of work's (`WriteConflict`); the caller maps them to its protocol.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4, uuid5
from zoneinfo import ZoneInfo

from redis.asyncio.client import Pipeline

from chassis.clinics import Clinic
from chassis.clock import Clock
from chassis.events import EventPublisher
from chassis.outbox import Output
from chassis.unit_of_work import Decision, Transaction, UnitOfWork
from services.intake import directory, domain, measures
from services.intake.store import HistoryEntry, IntakeStore, MeasureMark, StoredResponse
from shared import events as ev
from shared.envelope import EVENT_ID_NAMESPACE, derived_event_id

ACCEPTED = 202

Change = Callable[
    [domain.ClientRecord, datetime], tuple[domain.ClientRecord, list[ev.Event], dict[str, Any]]
]


class NotFound(Exception):
    """No such client in this clinic."""


class KeyReused(Exception):
    """The Idempotency-Key was already used for a different request."""


class AlreadyAnswered(Exception):
    """The measure was answered before (its link is used up): nothing is recorded again."""


@dataclass(frozen=True)
class Retry:
    """What makes a retry the same request: the caller's key and a digest of what it asked."""

    key: str | None
    fingerprint: str


@dataclass(frozen=True)
class Reply:
    status_code: int
    body: dict[str, Any]


@dataclass(frozen=True)
class ClientFile:
    record: domain.ClientRecord
    history: list[dict[str, Any]]


@dataclass(frozen=True)
class Outcome:
    """What one step decided for one client: its new record, events and answer."""

    record: domain.ClientRecord
    events: list[ev.Event]
    step: str
    body: dict[str, Any]
    # The record as the step read it (None: a new client), whose search entries the
    # write replaces with the new record's.
    before: domain.ClientRecord | None
    # Writes of the step beside the record's (queued on the same MULTI).
    also: Callable[[Pipeline], None] | None = None
    # What names the events when no Idempotency-Key does (a measure: its id).
    event_seed: str | None = None


Decide = Callable[[Transaction, datetime], Awaitable[Outcome]]


def _root_event_id(clinic_id: str, key: str | None, role: str) -> str | None:
    """With an Idempotency-Key, a retried step reproduces the same event ids."""
    return derived_event_id(f"{clinic_id}/{key}", role) if key else None


# No handled mark (no input ids): a keyed request's stored answer is its mark, written
# in the same MULTI as its state and read under WATCH first, so of two attempts at
# once one writes and the other reruns and answers that. A unit-of-work mark beside
# it would add nothing but the unit's replay path, which republishes the outbox's
# copy while the first attempt may still be publishing it (a second copy on the
# topic per concurrent retry). Without a key each request is a new one; the keys
# its step read are watched, so two never decide on the same state (a new person
# twice: one write fails, its step reruns and finds the other's client).
NO_MARK: Sequence[str] = ()


def _nothing(_: Pipeline) -> None:
    """The step answered from a stored reply: nothing to write."""


class IntakeService:
    def __init__(
        self, store: IntakeStore, uow: UnitOfWork, publisher: EventPublisher, clock: Clock
    ) -> None:
        self._store = store
        self._uow = uow
        self._publisher = publisher
        self._clock = clock

    async def request_consultation(
        self,
        clinic: Clinic,
        contact: ev.Contact,
        preferred_times: tuple[ev.PreferredTime, ...],
        timezone: str | None,
        retry: Retry,
    ) -> Reply:
        """A new lead, or the same person again (found by email or phone)."""
        windows = preferred_times
        if timezone and timezone != clinic.timezone:
            windows = domain.preferred_times_in_clinic_zone(
                windows, ZoneInfo(timezone), clinic.zone, self._clock.now()
            )
        seed = f"{clinic.id}/{retry.key}" if retry.key else None

        async def decide(tx: Transaction, now: datetime) -> Outcome:
            store = self._store
            known = await store.find_by_contact(clinic.id, contact.email, contact.phone, tx)
            existing = await store.load(clinic.id, known, tx) if known else None
            record, event = domain.request_consultation(
                clinic_id=clinic.id,
                client_id=uuid5(EVENT_ID_NAMESPACE, f"{seed}/client") if seed else uuid4(),
                correlation_id=_root_event_id(clinic.id, retry.key, "journey") or str(uuid4()),
                contact=contact,
                preferred_times=windows,
                existing=existing,
                now=now,
            )
            body = {
                "client_id": str(record.client_id),
                "status": record.status.value,
                "repeat_request": existing is not None,
            }
            return Outcome(record, [event], "consultation_requested", body, before=existing)

        return await self._write(clinic.id, retry, decide)

    async def record_consultation(
        self, clinic_id: str, client_id: UUID, outcome: str, retry: Retry
    ) -> Reply:
        def change(record: domain.ClientRecord, now: datetime) -> Any:
            updated, event = domain.hold_consultation(record, outcome, now)
            return updated, [event], {"outcome": outcome}

        decide = self._on_client(clinic_id, client_id, "consultation_held", change)
        return await self._write(clinic_id, retry, decide)

    async def record_screening(
        self, clinic_id: str, client_id: UUID, screening: domain.Screening, retry: Retry
    ) -> Reply:
        def change(record: domain.ClientRecord, now: datetime) -> Any:
            updated, event = domain.screen(record, screening, now)
            reasons = [c.value for c in event.contraindications]
            return updated, [event], {"eligible": event.eligible, "contraindications": reasons}

        decide = self._on_client(clinic_id, client_id, "screened", change)
        return await self._write(clinic_id, retry, decide)

    async def enrol(
        self,
        clinic_id: str,
        client_id: UUID,
        scores: domain.Scores,
        consent_recorded_at: datetime | None,
        retry: Retry,
    ) -> Reply:
        # The alert is recorded, and published, before anything else is decided:
        # whatever happens to the enrolment, staff hear of a positive item 9 at once.
        await self._alert(clinic_id, client_id, scores, retry)

        def change(record: domain.ClientRecord, now: datetime) -> Any:
            updated, event = domain.enrol(record, scores, consent_recorded_at or now, now)
            body = {
                "phq9_total": scores.phq9_total,
                "phq9_band": scores.phq9_band.value,
                "gad7_total": scores.gad7_total,
                "clinical_alert": domain.clinical_alert(record, scores, now) is not None,
            }
            return updated, [event], body

        decide = self._on_client(clinic_id, client_id, "enrolled", change)
        return await self._write(clinic_id, retry, decide)

    async def change_contact_preferences(
        self, clinic_id: str, client_id: UUID, channel: ev.Channel, opted_out: bool, retry: Retry
    ) -> Reply:
        def change(record: domain.ClientRecord, now: datetime) -> Any:
            event = ev.ContactPreferencesChanged(
                clinic_id=record.clinic_id,
                client_id=record.client_id,
                occurred_at=now,
                channel=channel,
                opted_out=opted_out,
            )
            body = {"channel": channel, "opted_out": opted_out}
            return record.model_copy(update={"updated_at": now}), [event], body

        decide = self._on_client(clinic_id, client_id, "preferences", change)
        return await self._write(clinic_id, retry, decide)

    async def record_measure(
        self,
        clinic_id: str,
        client_id: UUID,
        scores: domain.Scores,
        how: measures.Answered,
        retry: Retry,
    ) -> Reply:
        """A measure answered, scored and published, with an alert if item 9 is above 0.

        A measure with an id is answered once: its mark is read under WATCH and written
        in the same MULTI as the answer, so of two submissions (a double click, the link
        and staff) one is recorded and the other gets `AlreadyAnswered`. The events are
        named by the measure, so nothing could publish a second answer to it unnoticed.
        """
        measure_id = how.measure_id

        async def decide(tx: Transaction, now: datetime) -> Outcome:
            if measure_id and await self._store.measure_answered(
                clinic_id, client_id, measure_id, tx
            ):
                raise AlreadyAnswered(measure_id)
            record = await self._store.load(clinic_id, client_id, tx)
            if record is None:
                raise NotFound(client_id)
            events = measures.answered(record, scores, how, now)
            mark = MeasureMark(now, how.source)
            body = {
                "client_id": str(client_id),
                "measure_id": str(measure_id) if measure_id else None,
                **measures.summary(scores),
            }

            def also(p: Pipeline) -> None:
                if measure_id:
                    self._store.mark_measure_answered(p, clinic_id, client_id, measure_id, mark)

            seed = f"measure/{measure_id}" if measure_id else None
            return Outcome(
                record, events, "measure_answered", body, before=record, also=also, event_seed=seed
            )

        return await self._write(clinic_id, retry, decide)

    async def measure_answered(self, clinic_id: str, client_id: UUID, measure_id: UUID) -> bool:
        found = await self._store.measure_answered(clinic_id, client_id, measure_id)
        return found is not None

    async def find_clients(
        self, clinic_id: str, wanted: directory.Query, limit: int
    ) -> list[domain.ClientRecord]:
        """The clinic's clients whose name or phone `wanted` finds, by name (PHI)."""
        return await self._store.search(clinic_id, wanted, limit)

    async def client(self, clinic_id: str, client_id: UUID) -> ClientFile:
        record = await self._store.load(clinic_id, client_id)
        if record is None:
            raise NotFound(client_id)
        return ClientFile(record, await self._store.history(clinic_id, client_id))

    # --- the one write path ----------------------------------------------------------

    def _on_client(self, clinic_id: str, client_id: UUID, step: str, change: Change) -> Decide:
        """A step on a known client: its record watched and read, then `change`d."""

        async def decide(tx: Transaction, now: datetime) -> Outcome:
            record = await self._store.load(clinic_id, client_id, tx)
            if record is None:
                raise NotFound(client_id)
            updated, events, body = change(record, now)
            body = {"client_id": str(client_id), "status": updated.status.value, **body}
            return Outcome(updated, events, step, body, before=record)

        return decide

    async def _write(self, clinic_id: str, retry: Retry, decide: Decide) -> Reply:
        async def step(tx: Transaction) -> Decision[Reply]:
            if stored := await self._stored(clinic_id, retry, tx):
                return Decision(_nothing, result=stored)
            now = self._clock.now()
            outcome = await decide(tx, now)
            reply = Reply(ACCEPTED, outcome.body)
            answer = StoredResponse(retry.fingerprint, reply.status_code, reply.body)
            entries = [HistoryEntry(now, outcome.step, outcome.record.status.value)]

            def write(tx: Pipeline) -> None:
                self._store.write(
                    tx, outcome.record, entries, retry.key, answer, previous=outcome.before
                )
                if outcome.also:
                    outcome.also(tx)

            seed = outcome.event_seed or retry.key
            outputs = [self._output(outcome.record, e, seed) for e in outcome.events]
            return Decision(write, outputs, reply)

        reply = await self._uow.run(clinic_id, NO_MARK, step, leave_to_relay=True)
        if not isinstance(reply, Reply):  # without marks the step always decides
            raise TypeError(f"the write step answered {reply!r}")
        return reply

    async def _alert(
        self, clinic_id: str, client_id: UUID, scores: domain.Scores, retry: Retry
    ) -> None:
        async def step(tx: Transaction) -> Decision[None]:
            if await self._stored(clinic_id, retry, tx):
                return Decision(_nothing)  # answered before: its alert went with it
            record = await self._store.load(clinic_id, client_id, tx)
            if record is None:
                raise NotFound(client_id)
            alert = domain.clinical_alert(record, scores, self._clock.now())
            return Decision(_nothing, [self._output(record, alert, retry.key)] if alert else [])

        await self._uow.run(clinic_id, NO_MARK, step, leave_to_relay=True)

    async def _stored(self, clinic_id: str, retry: Retry, tx: Transaction) -> Reply | None:
        """The answer already given to this key (watched), or None; `KeyReused` if it
        was given to another request."""
        stored = await self._store.replay(clinic_id, retry.key, tx)
        if stored is None:
            return None
        if stored.fingerprint != retry.fingerprint:
            raise KeyReused("Idempotency-Key was already used for a different request")
        return Reply(stored.status_code, stored.body)

    def _output(self, record: domain.ClientRecord, event: ev.Event, key: str | None) -> Output:
        envelope = self._publisher.envelope_for(
            event,
            event_id=_root_event_id(record.clinic_id, key, type(event).__name__),
            correlation_id=record.correlation_id,
        )
        return Output(event, envelope)
