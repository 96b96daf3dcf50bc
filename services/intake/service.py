"""Intake's use cases: what each step decides, publishes and records, and in which order.

The routes only parse, authenticate and translate; the order that makes a step
safe lives here, once: events acknowledged by the broker before the state is
recorded (a broker outage fails the step and records nothing), both under the
client's lock, and a retried `Idempotency-Key` answered with the first reply.
Errors are the domain's (`StepRefused`), this module's (`NotFound`,
`KeyReused`) and the store's (`ClientBusy`); the caller maps them to its protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4, uuid5
from zoneinfo import ZoneInfo

from chassis.clinics import Clinic
from chassis.clock import Clock
from chassis.events import EventPublisher
from services.intake import domain
from services.intake.store import HistoryEntry, IntakeStore, StoredResponse
from shared import events as ev
from shared.envelope import EVENT_ID_NAMESPACE, derived_event_id

ACCEPTED = 202

Step = Callable[
    [domain.ClientRecord, datetime], tuple[domain.ClientRecord, list[ev.Event], dict[str, Any]]
]


class NotFound(Exception):
    """No such client in this clinic."""


class KeyReused(Exception):
    """The Idempotency-Key was already used for a different request."""


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


def _root_event_id(clinic_id: str, key: str | None, role: str) -> str | None:
    """With an Idempotency-Key, a retried step reproduces the same event ids."""
    return derived_event_id(f"{clinic_id}/{key}", role) if key else None


class IntakeService:
    def __init__(self, store: IntakeStore, publisher: EventPublisher, clock: Clock) -> None:
        self._store = store
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
        """A new lead, or the same person again; `ClientBusy` while another is recorded."""
        if replay := await self._replay(clinic.id, retry):
            return replay
        windows = preferred_times
        now = self._clock.now()
        if timezone and timezone != clinic.timezone:
            windows = domain.preferred_times_in_clinic_zone(
                windows, ZoneInfo(timezone), clinic.zone, now
            )
        async with self._store.locked(clinic.id, contact.email):
            if replay := await self._replay(clinic.id, retry):
                return replay
            known = await self._store.find_by_contact(clinic.id, contact.email, contact.phone)
            existing = await self._store.load(clinic.id, known) if known else None
            seed = f"{clinic.id}/{retry.key}" if retry.key else None
            client_id = uuid5(EVENT_ID_NAMESPACE, f"{seed}/client") if seed else uuid4()
            correlation_id = _root_event_id(clinic.id, retry.key, "journey") or str(uuid4())
            record, event = domain.request_consultation(
                clinic_id=clinic.id,
                client_id=client_id,
                correlation_id=correlation_id,
                contact=contact,
                preferred_times=windows,
                existing=existing,
                now=now,
            )
            await self._publish(record, [event], retry.key)
            body = {
                "client_id": str(record.client_id),
                "status": record.status.value,
                "repeat_request": existing is not None,
            }
            await self._store.commit(
                record,
                [HistoryEntry(now, "consultation_requested", record.status.value)],
                retry.key,
                StoredResponse(retry.fingerprint, ACCEPTED, body),
            )
        return Reply(ACCEPTED, body)

    async def record_consultation(
        self, clinic_id: str, client_id: UUID, outcome: str, retry: Retry
    ) -> Reply:
        def step(record: domain.ClientRecord, now: datetime) -> Any:
            updated, event = domain.hold_consultation(record, outcome, now)
            return updated, [event], {"outcome": outcome}

        return await self._run_step(clinic_id, client_id, retry, "consultation_held", step)

    async def record_screening(
        self, clinic_id: str, client_id: UUID, screening: domain.Screening, retry: Retry
    ) -> Reply:
        def step(record: domain.ClientRecord, now: datetime) -> Any:
            updated, event = domain.screen(record, screening, now)
            reasons = [c.value for c in event.contraindications]
            return updated, [event], {"eligible": event.eligible, "contraindications": reasons}

        return await self._run_step(clinic_id, client_id, retry, "screened", step)

    async def enrol(
        self,
        clinic_id: str,
        client_id: UUID,
        scores: domain.Scores,
        consent_recorded_at: datetime | None,
        retry: Retry,
    ) -> Reply:
        record = await self._store.load(clinic_id, client_id)
        if record is None:
            raise NotFound(client_id)
        # The alert goes out before anything else is decided: whatever happens
        # to the enrolment, staff hear of a positive item 9 at once.
        if alert := domain.clinical_alert(record, scores, self._clock.now()):
            await self._publish(record, [alert], retry.key)

        def step(record: domain.ClientRecord, now: datetime) -> Any:
            consent_at = consent_recorded_at or now
            updated, event = domain.enrol(record, scores, consent_at, now)
            return (
                updated,
                [event],
                {
                    "phq9_total": scores.phq9_total,
                    "phq9_band": scores.phq9_band.value,
                    "gad7_total": scores.gad7_total,
                    "clinical_alert": alert is not None,
                },
            )

        return await self._run_step(clinic_id, client_id, retry, "enrolled", step)

    async def change_contact_preferences(
        self, clinic_id: str, client_id: UUID, channel: ev.Channel, opted_out: bool, retry: Retry
    ) -> Reply:
        def step(record: domain.ClientRecord, now: datetime) -> Any:
            event = ev.ContactPreferencesChanged(
                clinic_id=record.clinic_id,
                client_id=record.client_id,
                occurred_at=now,
                channel=channel,
                opted_out=opted_out,
            )
            body = {"channel": channel, "opted_out": opted_out}
            return record.model_copy(update={"updated_at": now}), [event], body

        return await self._run_step(clinic_id, client_id, retry, "preferences", step)

    async def client(self, clinic_id: str, client_id: UUID) -> ClientFile:
        record = await self._store.load(clinic_id, client_id)
        if record is None:
            raise NotFound(client_id)
        return ClientFile(record, await self._store.history(clinic_id, client_id))

    async def _replay(self, clinic_id: str, retry: Retry) -> Reply | None:
        stored = await self._store.replay(clinic_id, retry.key)
        if stored is None:
            return None
        if stored.fingerprint != retry.fingerprint:
            raise KeyReused("Idempotency-Key was already used for a different request")
        return Reply(stored.status_code, stored.body)

    async def _publish(
        self, record: domain.ClientRecord, events: list[ev.Event], key: str | None
    ) -> None:
        # All of a step's events under one deadline: either all are acknowledged,
        # or the step fails (the caller's 503) and none of them is sent later.
        publisher = self._publisher
        await publisher.publish_all(
            [
                (
                    event,
                    publisher.envelope_for(
                        event,
                        event_id=_root_event_id(record.clinic_id, key, type(event).__name__),
                        correlation_id=record.correlation_id,
                    ),
                )
                for event in events
            ]
        )

    async def _run_step(
        self, clinic_id: str, client_id: UUID, retry: Retry, step_name: str, step: Step
    ) -> Reply:
        """One change to a known client; `ClientBusy` while another request changes it."""
        if replay := await self._replay(clinic_id, retry):
            return replay
        async with self._store.locked(clinic_id, str(client_id)):
            if replay := await self._replay(clinic_id, retry):
                return replay
            record = await self._store.load(clinic_id, client_id)
            if record is None:
                raise NotFound(client_id)
            now = self._clock.now()
            updated, events, body = step(record, now)
            await self._publish(updated, events, retry.key)
            body = {"client_id": str(client_id), "status": updated.status.value, **body}
            await self._store.commit(
                updated,
                [HistoryEntry(now, step_name, updated.status.value)],
                retry.key,
                StoredResponse(retry.fingerprint, ACCEPTED, body),
            )
        return Reply(ACCEPTED, body)
