"""Intake's HTTP API: every route is one clinic's, behind that clinic's API key.

Routes parse and authenticate, call `IntakeService`, and translate its replies and
errors into HTTP. A step answers 202 once its state and events are recorded, also
while the broker is away (its events are published once it is back); if Redis
cannot be reached it answers 503 (the chassis' handlers) and records nothing. An
`Idempotency-Key` makes a retried step return the first answer. The client search
(`GET /clients?q=`) answers names and contacts to the clinic's own key: neither its
query nor its answer is logged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, time
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator

from chassis.http import (
    CLINIC_RESPONSES,
    CONFLICT,
    TOO_MANY,
    AuthorisedClinic,
    SaneInstant,
    roles,
    staff_actor,
)
from chassis.staff_tokens import CLINICAL
from chassis.unit_of_work import WriteConflict
from services.intake import directory, domain, measures
from services.intake.limits import Limit, RateLimited, RateLimiter
from services.intake.service import (
    AlreadyAnswered,
    ClientFile,
    IntakeService,
    KeyReused,
    NotFound,
    Reply,
    Retry,
)
from shared import events as ev

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


class MeasureIn(Input):
    phq9: list[Answer] = Field(min_length=9, max_length=9, description="PHQ-9 answers, 0-3")
    gad7: list[Answer] = Field(min_length=7, max_length=7, description="GAD-7 answers, 0-3")
    entered_by: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="Staff id")
    point: ev.MeasurePoint | None = Field(default=None, description="Where in the schedule")
    measure_id: UUID | None = Field(
        default=None, description="The scheduled measure answered (its link is then used up)"
    )


class ContactPreferenceIn(Input):
    channel: Literal["email", "sms"]
    opted_out: bool


class ClientMatch(BaseModel):
    """A client found by the clinic's search (PHI: the clinic's own, never logged)."""

    client_id: UUID
    name: str
    email: str
    phone: str | None
    status: domain.IntakeStatus
    updated_at: datetime

    @classmethod
    def of(cls, record: domain.ClientRecord) -> ClientMatch:
        contact = record.contact
        return cls(
            client_id=record.client_id,
            name=contact.name,
            email=contact.email,
            phone=contact.phone,
            status=record.status,
            updated_at=record.updated_at,
        )


SearchText = Annotated[
    str,
    Query(
        min_length=2,
        max_length=100,
        description="The start of any word of the name, or leading digits of the phone "
        "(E.164 or national); case and accents ignored",
    ),
]
SearchLimit = Annotated[int, Query(ge=1, le=100, description="At most this many clients")]


def _retry(request: Request, body: BaseModel, key: str | None) -> Retry:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True)
    fingerprint = hashlib.sha256(f"{request.url.path}\n{canonical}".encode()).hexdigest()
    return Retry(key, fingerprint)


def _client_view(file: ClientFile) -> dict[str, Any]:
    record = file.record
    totals = record.enrolment_totals
    return {
        "client_id": str(record.client_id),
        "status": record.status.value,
        "contact": record.contact.model_dump(mode="json"),
        "requested_at": record.requested_at.isoformat(),
        "eligible": not record.contraindications if record.screened else None,
        "contraindications": [c.value for c in record.contraindications],
        "phq9_total": totals.phq9_total if totals else None,
        "phq9_band": totals.phq9_band.value if totals else None,
        "gad7_total": totals.gad7_total if totals else None,
        # When the client consented to their (latest) course; None: not yet.
        "consent_recorded_at": (
            record.consent_recorded_at.isoformat() if record.consent_recorded_at else None
        ),
        "history": file.history,
    }


# Templates of the two "busy" answers (a new person, or a known client's step), when
# other writes kept changing what the step read: each refusal raises a copy, never
# the shared instance.
STEP_BUSY = HTTPException(409, "the client is being changed; retry", {"Retry-After": "1"})
PERSON_BUSY = HTTPException(409, "a request for this person is in progress; retry")


async def _answer(reply: Awaitable[Reply], busy: HTTPException = STEP_BUSY) -> JSONResponse:
    try:
        answer = await reply
    except NotFound as missing:
        raise HTTPException(404, "not found") from missing
    except KeyReused as reused:
        raise HTTPException(422, str(reused)) from reused
    except domain.StepRefused as refused:
        raise HTTPException(409, str(refused)) from refused
    except AlreadyAnswered as answered:
        raise HTTPException(409, "this measure was answered already") from answered
    except WriteConflict as taken:
        raise HTTPException(busy.status_code, busy.detail, busy.headers) from taken
    return JSONResponse(answer.body, status_code=answer.status_code)


async def within(limiter: RateLimiter, clinic_id: str, *limits: Limit) -> None:
    """Count a request against `limits`; over one, a 429 with Retry-After."""
    try:
        await limiter.hit(clinic_id, *limits)
    except RateLimited as limited:
        headers = {"Retry-After": str(limited.retry_after_s)}
        raise HTTPException(429, str(limited), headers) from limited


def per_address(limiter: RateLimiter, what: str, allowed: int) -> Callable[..., Awaitable[None]]:
    """A route dependency: the calling address's requests to one clinic, counted."""

    async def counted(clinic: AuthorisedClinic, request: Request) -> None:
        address = request.client.host if request.client else "unknown"
        await within(limiter, clinic.id, Limit(what, address, allowed))

    return counted


def routes(
    intake: IntakeService,
    limiter: RateLimiter,
    consultations_per_address: int,
    consultations_per_client: int = 0,
) -> APIRouter:
    router = APIRouter(
        prefix="/v1/clinics/{clinic_id}",
        tags=["intake"],
        responses=CLINIC_RESPONSES,
        dependencies=[Depends(staff_actor)],
    )
    limit_requests = per_address(limiter, "consultation:address", consultations_per_address)

    @router.post(
        "/consultation-requests",
        status_code=202,
        summary="Request a free consultation",
        responses={**CONFLICT, **TOO_MANY},
        dependencies=[Depends(limit_requests)],
    )
    async def request_consultation(
        clinic: AuthorisedClinic,
        body: ConsultationRequestIn,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        contact = ev.Contact(
            name=body.name,
            email=str(body.email),
            phone=body.phone,
            preferred_channel=body.preferred_channel,
            sms_consent=body.sms_consent,
        )
        person = Limit("consultation:client", contact.email.lower(), consultations_per_client)
        await within(limiter, clinic.id, person)
        windows = tuple(ev.PreferredTime(**w.model_dump()) for w in body.preferred_times)
        retry = _retry(request, body, idempotency_key)
        reply = intake.request_consultation(clinic, contact, windows, body.timezone, retry)
        return await _answer(reply, PERSON_BUSY)

    @router.post(
        "/clients/{client_id}/consultation-outcome",
        status_code=202,
        responses=CONFLICT,
        dependencies=[roles(*CLINICAL)],
    )
    async def record_consultation(
        clinic: AuthorisedClinic,
        client_id: UUID,
        body: ConsultationOutcomeIn,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        retry = _retry(request, body, idempotency_key)
        return await _answer(intake.record_consultation(clinic.id, client_id, body.outcome, retry))

    @router.post(
        "/clients/{client_id}/screening",
        status_code=202,
        responses=CONFLICT,
        dependencies=[roles(*CLINICAL)],
    )
    async def record_screening(
        clinic: AuthorisedClinic,
        client_id: UUID,
        body: ScreeningIn,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        screening = domain.Screening(**body.model_dump())
        retry = _retry(request, body, idempotency_key)
        return await _answer(intake.record_screening(clinic.id, client_id, screening, retry))

    @router.post(
        "/clients/{client_id}/enrolment",
        status_code=202,
        responses=CONFLICT,
        dependencies=[roles(*CLINICAL)],
    )
    async def enrol(
        clinic: AuthorisedClinic,
        client_id: UUID,
        body: EnrolmentIn,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        scores = domain.Scores(phq9=tuple(body.phq9), gad7=tuple(body.gad7))
        retry = _retry(request, body, idempotency_key)
        consent_at = body.consent_recorded_at
        return await _answer(intake.enrol(clinic.id, client_id, scores, consent_at, retry))

    @router.post(
        "/clients/{client_id}/measures",
        status_code=202,
        summary="Enter a client's PHQ-9 and GAD-7 answers (staff)",
        responses=CONFLICT,
        dependencies=[roles(*CLINICAL)],
    )
    async def enter_measure(
        clinic: AuthorisedClinic,
        client_id: UUID,
        body: MeasureIn,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        scores = domain.Scores(phq9=tuple(body.phq9), gad7=tuple(body.gad7))
        how = measures.Answered("staff", body.measure_id, body.point, body.entered_by)
        retry = _retry(request, body, idempotency_key)
        return await _answer(intake.record_measure(clinic.id, client_id, scores, how, retry))

    @router.post("/clients/{client_id}/contact-preferences", status_code=202, responses=CONFLICT)
    async def change_contact_preferences(
        clinic: AuthorisedClinic,
        client_id: UUID,
        body: ContactPreferenceIn,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        retry = _retry(request, body, idempotency_key)
        reply = intake.change_contact_preferences(
            clinic.id, client_id, body.channel, body.opted_out, retry
        )
        return await _answer(reply)

    @router.get(
        "/clients",
        summary="Find the clinic's clients by name or phone",
        response_model=list[ClientMatch],
    )
    async def find_clients(
        clinic: AuthorisedClinic, q: SearchText, limit: SearchLimit = 20
    ) -> list[ClientMatch]:
        wanted = directory.query(q)
        if wanted is None:
            problem = {
                "loc": ["query", "q"],
                "msg": f"needs at least {directory.MIN_QUERY} letters or digits",
                "type": "value_error",
            }
            raise HTTPException(422, [problem])
        return [ClientMatch.of(r) for r in await intake.find_clients(clinic.id, wanted, limit)]

    @router.get("/clients/{client_id}", summary="A client's intake status and history")
    async def read_client(clinic: AuthorisedClinic, client_id: UUID) -> dict[str, Any]:
        try:
            file = await intake.client(clinic.id, client_id)
        except NotFound as missing:
            raise HTTPException(404, "not found") from missing
        return _client_view(file)

    return router
