"""The scheduler's HTTP routes for a whole course: pause, resume, withdraw, discharge.

Included by api.routes under its clinic prefix; `guarded` maps a refusal to 409 (an
ended course), a client without a course to 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from chassis.http import CONFLICT, AuthorisedClinic, roles
from chassis.staff_tokens import CLINICAL
from services.scheduler.domain.schedule import ClientSchedule
from services.scheduler.scheduler import Scheduler
from shared import events as ev

Guarded = Callable[[Any], Awaitable[Any]]
View = Callable[[ClientSchedule], dict[str, Any]]


class NoFields(BaseModel):
    """These requests carry no fields: one sent anyway (a reason, a date) is refused with
    a 422 naming it rather than silently dropped, so nobody believes it was recorded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Body = NoFields | None


def course_routes(scheduler: Scheduler, guarded: Guarded, view: View) -> APIRouter:
    # Pausing, resuming, withdrawing and discharging are clinical decisions.
    router = APIRouter(dependencies=[roles(*CLINICAL)])

    @router.post(
        "/clients/{client_id}/course/pause",
        summary="Pause the course: future sessions released, its window frozen",
        responses=CONFLICT,
    )
    async def pause_course(
        clinic: AuthorisedClinic, client_id: UUID, body: Body = None
    ) -> dict[str, Any]:
        return view(await guarded(scheduler.pause(clinic.id, client_id)))

    @router.post(
        "/clients/{client_id}/course/resume",
        summary="Resume a paused course (re-planned from now) or lift a review hold",
        responses=CONFLICT,
    )
    async def resume_course(
        clinic: AuthorisedClinic, client_id: UUID, body: Body = None
    ) -> dict[str, Any]:
        return view(await guarded(scheduler.resume(clinic.id, client_id)))

    @router.post(
        "/clients/{client_id}/course/withdrawal",
        summary="The client withdraws: future sessions and boosters released, course ended",
        responses=CONFLICT,
    )
    async def withdraw(
        clinic: AuthorisedClinic, client_id: UUID, body: Body = None
    ) -> dict[str, Any]:
        code = ev.CourseEndCode.WITHDRAWN
        return view(await guarded(scheduler.end(clinic.id, client_id, code)))

    @router.post(
        "/clients/{client_id}/course/discharge",
        summary="Discharge the client: future sessions and boosters released, course ended",
        responses=CONFLICT,
    )
    async def discharge(
        clinic: AuthorisedClinic, client_id: UUID, body: Body = None
    ) -> dict[str, Any]:
        code = ev.CourseEndCode.DISCHARGED
        return view(await guarded(scheduler.end(clinic.id, client_id, code)))

    return router
