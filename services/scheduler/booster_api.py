"""The scheduler's HTTP route for a booked booster: decline it.

Included by api.routes under its clinic prefix; `guarded` maps a refusal to 409.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal
from uuid import UUID

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from chassis.http import CONFLICT, AuthorisedClinic
from services.scheduler.domain.schedule import ClientSchedule, Course
from services.scheduler.scheduler import Scheduler

Guarded = Callable[[Any], Awaitable[Any]]
View = Callable[[ClientSchedule], dict[str, Any]]


class DeclineIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    declined_by: Literal["client", "staff"] = Field(
        default="client", description="Who declined the booster"
    )


def booster_sessions_view(course: Course) -> list[dict[str, Any]]:
    return [
        {
            "booster_number": booster.number,
            "due_at": booster.due_at.isoformat(),
            "declined": booster.declined,
            "appointments": [
                {**a.model_dump(mode="json"), "status": course.status_of(a.appointment_id)}
                for a in booster.appointments
            ],
        }
        for booster in course.booster_sessions
    ]


def booster_routes(scheduler: Scheduler, guarded: Guarded, view: View) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/appointments/{appointment_id}/decline",
        summary="Decline a booked booster: its sessions released, the next booster still comes",
        responses=CONFLICT,
    )
    async def decline(
        clinic: AuthorisedClinic, appointment_id: UUID, body: DeclineIn | None = None
    ) -> dict[str, Any]:
        by = body.declined_by if body is not None else "client"
        return view(await guarded(scheduler.decline_booster(clinic.id, appointment_id, by)))

    return router
