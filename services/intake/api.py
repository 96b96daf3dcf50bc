"""Intake's HTTP API: every route is one clinic's, behind that clinic's API key.

A step answers 202 only once its events are acknowledged by the broker and its
state is recorded; if the broker cannot be reached it answers 503 and records
nothing. An `Idempotency-Key` makes a retried step return the first answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time
from typing import Annotated, Any, Literal
from uuid import UUID, uuid4, uuid5
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator

from chassis.clock import Clock
from chassis.events import EventPublisher
from chassis.http import CLINIC_RESPONSES, CONFLICT, AuthorisedClinic, SaneInstant
from services.intake import domain
from services.intake.store import ClientBusy, HistoryEntry, IntakeStore, StoredResponse
from shared import events as ev
from shared.envelope import EVENT_ID_NAMESPACE, derived_event_id

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=200, description="Retry-safe request id"),
]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PreferredTimeIn(Input):
    weekday: int = Field(ge=0, le=6, description="0 = Monday")
    start: time
    end: time

    @model_validator(mode="after")
    def _ordered(self) -> PreferredTimeIn:
        # Wall-clock times: the zone is `timezone` (or the clinic's). A zoned time
        # is refused here, also because naive and aware times cannot be compared.
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("start and end are wall-clock times without a zone; use timezone")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class ConsultationRequestIn(Input):
    name: str = Field(min_length=1, max_length=200)
    email: EmailStr
    phone: str | None = Field(default=None, pattern=r"^\+[1-9][0-9]{6,14}$", description="E.164")
    preferred_channel: Literal["email", "sms"] = "email"
    sms_consent: bool = False
    preferred_times: list[PreferredTimeIn] = Field(default_factory=list, max_length=28)
    timezone: ev.TimeZoneName | None = Field(
        default=None,
        max_length=ev.MAX_ZONE_NAME,
        description="IANA zone of preferred_times (default: the clinic's)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ConsultationRequestIn:
        if self.preferred_channel == "sms" and not (self.phone and self.sms_consent):
            raise ValueError("preferred_channel sms needs a phone and sms_consent")
        return self


class ConsultationOutcomeIn(Input):
    outcome: Literal["proceed_to_screening", "not_proceeding", "no_show"]


class ScreeningIn(Input):
    systolic_bp: int = Field(ge=50, le=300, description="mmHg")
    diastolic_bp: int = Field(ge=20, le=200, description="mmHg")
    pregnant_or_breastfeeding: bool
    active_psychosis_or_mania: bool
    substance_use_disorder_last_3_months: bool
    aneurysmal_vascular_disease_or_avm: bool
    intracerebral_haemorrhage_history: bool
    notes: str | None = Field(default=None, max_length=4000)


Answer = Annotated[int, Field(ge=0, le=3)]


class EnrolmentIn(Input):
    consent_given: Literal[True] = Field(description="The client consented to treatment")
    consent_recorded_at: SaneInstant | None = None
    phq9: list[Answer] = Field(min_length=9, max_length=9, description="PHQ-9 answers, 0-3")
    gad7: list[Answer] = Field(min_length=7, max_length=7, description="GAD-7 answers, 0-3")


class ContactPreferenceIn(Input):
    channel: Literal["email", "sms"]
    opted_out: bool


@dataclass(frozen=True)
class Intake:
    """What the routes need; built once by the composition root."""

    store: IntakeStore
    publisher: EventPublisher
    clock: Clock


def _fingerprint(request: Request, body: BaseModel) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(f"{request.url.path}\n{canonical}".encode()).hexdigest()


def _replayed(stored: StoredResponse | None, fingerprint: str) -> JSONResponse | None:
    if stored is None:
        return None
    if stored.fingerprint != fingerprint:
        raise HTTPException(422, "Idempotency-Key was already used for a different request")
    return JSONResponse(stored.body, status_code=stored.status_code)


def _root_event_id(clinic_id: str, key: str | None, role: str) -> str | None:
    """With an Idempotency-Key, a retried step reproduces the same event ids."""
    return derived_event_id(f"{clinic_id}/{key}", role) if key else None


def _client_view(record: domain.ClientRecord, history: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "client_id": str(record.client_id),
        "status": record.status.value,
        "contact": record.contact.model_dump(mode="json"),
        "requested_at": record.requested_at.isoformat(),
        "eligible": None if record.screening is None else not record.contraindications,
        "contraindications": [c.value for c in record.contraindications],
        "phq9_total": record.scores.phq9_total if record.scores else None,
        "phq9_band": record.scores.phq9_band.value if record.scores else None,
        "gad7_total": record.scores.gad7_total if record.scores else None,
        "history": history,
    }


Step = Callable[
    [domain.ClientRecord, datetime], tuple[domain.ClientRecord, list[ev.Event], dict[str, Any]]
]


def routes(intake: Intake) -> APIRouter:
    router = APIRouter(
        prefix="/v1/clinics/{clinic_id}", tags=["intake"], responses=CLINIC_RESPONSES
    )
    store, publisher, clock = intake.store, intake.publisher, intake.clock

    async def publish(record: domain.ClientRecord, events: list[ev.Event], key: str | None) -> None:
        # All of a step's events under one deadline: either all are acknowledged,
        # or the request fails (503) and none of them is sent later.
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

    async def run_step(
        clinic_id: str,
        client_id: UUID,
        key: str | None,
        fingerprint: str,
        step_name: str,
        step: Step,
    ) -> JSONResponse:
        if replay := _replayed(await store.replay(clinic_id, key), fingerprint):
            return replay
        try:
            async with store.locked(clinic_id, str(client_id)):
                if replay := _replayed(await store.replay(clinic_id, key), fingerprint):
                    return replay
                record = await store.load(clinic_id, client_id)
                if record is None:
                    raise HTTPException(404, "not found")
                now = clock.now()
                try:
                    updated, events, body = step(record, now)
                except domain.StepRefused as refused:
                    raise HTTPException(409, str(refused)) from refused
                await publish(updated, events, key)
                body = {"client_id": str(client_id), "status": updated.status.value, **body}
                await store.commit(
                    updated,
                    [HistoryEntry(now, step_name, updated.status.value)],
                    key,
                    StoredResponse(fingerprint, 202, body),
                )
        except ClientBusy as busy:
            raise HTTPException(
                409, "the client is being changed; retry", {"Retry-After": "1"}
            ) from busy
        return JSONResponse(body, status_code=202)

    @router.post(
        "/consultation-requests",
        status_code=202,
        summary="Request a free consultation",
        responses=CONFLICT,
    )
    async def request_consultation(
        clinic: AuthorisedClinic,
        body: ConsultationRequestIn,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        fingerprint = _fingerprint(request, body)
        if replay := _replayed(await store.replay(clinic.id, idempotency_key), fingerprint):
            return replay
        contact = ev.Contact(
            name=body.name,
            email=str(body.email),
            phone=body.phone,
            preferred_channel=body.preferred_channel,
            sms_consent=body.sms_consent,
        )
        windows = tuple(ev.PreferredTime(**w.model_dump()) for w in body.preferred_times)
        now = clock.now()
        if body.timezone and body.timezone != clinic.timezone:
            windows = domain.preferred_times_in_clinic_zone(
                windows, ZoneInfo(body.timezone), clinic.zone, now
            )
        try:
            async with store.locked(clinic.id, contact.email):
                if replay := _replayed(await store.replay(clinic.id, idempotency_key), fingerprint):
                    return replay
                known = await store.find_by_contact(clinic.id, contact.email, contact.phone)
                existing = await store.load(clinic.id, known) if known else None
                seed = f"{clinic.id}/{idempotency_key}" if idempotency_key else None
                client_id = uuid5(EVENT_ID_NAMESPACE, f"{seed}/client") if seed else uuid4()
                correlation_id = _root_event_id(clinic.id, idempotency_key, "journey") or str(
                    uuid4()
                )
                record, event = domain.request_consultation(
                    clinic_id=clinic.id,
                    client_id=client_id,
                    correlation_id=correlation_id,
                    contact=contact,
                    preferred_times=windows,
                    existing=existing,
                    now=now,
                )
                await publish(record, [event], idempotency_key)
                response = {
                    "client_id": str(record.client_id),
                    "status": record.status.value,
                    "repeat_request": existing is not None,
                }
                await store.commit(
                    record,
                    [HistoryEntry(now, "consultation_requested", record.status.value)],
                    idempotency_key,
                    StoredResponse(fingerprint, 202, response),
                )
        except ClientBusy as busy:
            raise HTTPException(409, "a request for this person is in progress; retry") from busy
        return JSONResponse(response, status_code=202)

    @router.post("/clients/{client_id}/consultation-outcome", status_code=202, responses=CONFLICT)
    async def record_consultation(
        clinic: AuthorisedClinic,
        client_id: UUID,
        body: ConsultationOutcomeIn,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        def step(record: domain.ClientRecord, now: datetime) -> Any:
            updated, event = domain.hold_consultation(record, body.outcome, now)
            return updated, [event], {"outcome": body.outcome}

        return await run_step(
            clinic.id,
            client_id,
            idempotency_key,
            _fingerprint(request, body),
            "consultation_held",
            step,
        )

    @router.post("/clients/{client_id}/screening", status_code=202, responses=CONFLICT)
    async def record_screening(
        clinic: AuthorisedClinic,
        client_id: UUID,
        body: ScreeningIn,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        def step(record: domain.ClientRecord, now: datetime) -> Any:
            updated, event = domain.screen(record, domain.Screening(**body.model_dump()), now)
            reasons = [c.value for c in event.contraindications]
            return updated, [event], {"eligible": event.eligible, "contraindications": reasons}

        return await run_step(
            clinic.id, client_id, idempotency_key, _fingerprint(request, body), "screened", step
        )

    @router.post("/clients/{client_id}/enrolment", status_code=202, responses=CONFLICT)
    async def enrol(
        clinic: AuthorisedClinic,
        client_id: UUID,
        body: EnrolmentIn,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        scores = domain.Scores(phq9=tuple(body.phq9), gad7=tuple(body.gad7))
        fingerprint = _fingerprint(request, body)
        record = await store.load(clinic.id, client_id)
        if record is None:
            raise HTTPException(404, "not found")
        # The alert goes out before anything else is decided: whatever happens
        # to the enrolment, staff hear of a positive item 9 at once.
        if alert := domain.clinical_alert(record, scores, clock.now()):
            await publish(record, [alert], idempotency_key)

        def step(record: domain.ClientRecord, now: datetime) -> Any:
            consent_at = body.consent_recorded_at or now
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

        return await run_step(clinic.id, client_id, idempotency_key, fingerprint, "enrolled", step)

    @router.post("/clients/{client_id}/contact-preferences", status_code=202, responses=CONFLICT)
    async def change_contact_preferences(
        clinic: AuthorisedClinic,
        client_id: UUID,
        body: ContactPreferenceIn,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        def step(record: domain.ClientRecord, now: datetime) -> Any:
            event = ev.ContactPreferencesChanged(
                clinic_id=record.clinic_id,
                client_id=record.client_id,
                occurred_at=now,
                channel=body.channel,
                opted_out=body.opted_out,
            )
            return record.model_copy(update={"updated_at": now}), [event], body.model_dump()

        return await run_step(
            clinic.id, client_id, idempotency_key, _fingerprint(request, body), "preferences", step
        )

    @router.get("/clients/{client_id}", summary="A client's intake status and history")
    async def read_client(clinic: AuthorisedClinic, client_id: UUID) -> dict[str, Any]:
        record = await store.load(clinic.id, client_id)
        if record is None:
            raise HTTPException(404, "not found")
        return _client_view(record, await store.history(clinic.id, client_id))

    return router
