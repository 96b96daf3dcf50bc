"""The scheduler's HTTP routes about the client as a person: when they can come."""

from __future__ import annotations

from datetime import time
from typing import Any, Self
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field, model_validator

from chassis.http import CLINIC_RESPONSES, CONFLICT, AuthorisedClinic, SaneDate, staff_actor
from chassis.unit_of_work import WriteConflict
from services.scheduler.api import schedule_view
from services.scheduler.domain.plans import ClientAvailability
from services.scheduler.scheduler import Scheduler
from shared import events as ev


class WindowIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    weekday: int = Field(ge=0, le=6, description="0 = Monday")
    start: time = Field(description="Clinic-local")
    end: time = Field(description="Clinic-local")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("wall-clock times carry no zone: the clinic's time zone applies")
        if self.start >= self.end:
            raise ValueError("start must be before end (a window cannot cross midnight)")
        return self


class AvailabilityIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    weekly: tuple[WindowIn, ...] = Field(
        default=(), max_length=28, description="When the client can come; none: any opening hour"
    )
    blocked_dates: frozenset[SaneDate] = Field(
        default=frozenset(), max_length=366, description="Clinic-local dates they cannot come"
    )


def routes(scheduler: Scheduler) -> APIRouter:
    router = APIRouter(
        prefix="/v1/clinics/{clinic_id}",
        tags=["scheduler"],
        responses=CLINIC_RESPONSES,
        dependencies=[Depends(staff_actor)],
    )

    @router.put(
        "/clients/{client_id}/availability",
        summary="When the client can come: course sessions are planned inside it",
        responses=CONFLICT,
    )
    async def set_availability(
        clinic: AuthorisedClinic, client_id: UUID, body: AvailabilityIn
    ) -> dict[str, Any]:
        availability = ClientAvailability(
            weekly=tuple(ev.PreferredTime(**w.model_dump()) for w in body.weekly),
            blocked_dates=body.blocked_dates,
        )
        try:
            schedule = await scheduler.set_availability(clinic.id, client_id, availability)
        except LookupError as missing:
            raise HTTPException(404, "not found") from missing
        except WriteConflict as busy:
            raise HTTPException(409, "the client is being changed; retry") from busy
        return {**schedule_view(schedule), "availability": availability.model_dump(mode="json")}

    return router
