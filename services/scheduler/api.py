"""The scheduler's HTTP API: a client's schedule, sessions and boosters.

`routes` builds the clinic's router and includes the other route modules under
its prefix, sharing `guarded` (refusal → 409) and `schedule_view`: calendar_api
(calendar, availability, a day's appointments), api_medicine (check-in, session record) and
course_api (pause, resume, endings) and booster_api (decline a booster).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from chassis.http import (
    CLINIC_RESPONSES,
    CONFLICT,
    AuthorisedClinic,
    SaneInstant,
    roles,
    staff_actor,
)
from chassis.staff_tokens import CLINICAL
from chassis.unit_of_work import WriteConflict
from services.scheduler.api_medicine import add_medicine_routes, session_safety_view
from services.scheduler.booster_api import booster_routes, booster_sessions_view
from services.scheduler.calendar_api import calendar_routes
from services.scheduler.changes import CalendarMissing
from services.scheduler.course_api import course_routes
from services.scheduler.domain.schedule import ClientSchedule, Invalid, Missing, Refused
from services.scheduler.scheduler import Scheduler
from shared import events as ev


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CompletionIn(Input):
    ride_home_confirmed: bool = Field(description="A driver takes the client home (rule 8)")
    phq9_total: int | None = Field(default=None, ge=0, le=27)
    phq9_item9: int | None = Field(default=None, ge=0, le=3)


SHORT_NOTICE = Field(
    default=False,
    description="Staff allow a re-planned session sooner than the policy's minimum notice",
)


class RescheduleIn(Input):
    new_starts_at: SaneInstant
    allow_short_notice: bool = SHORT_NOTICE


class DropIn(Input):
    allow_short_notice: bool = SHORT_NOTICE


class BoosterPlanIn(Input):
    interval_days: int = Field(default=14, ge=1, le=90)
    count: int = Field(default=4, ge=0, le=52)
    then_monthly: bool = True


def schedule_view(schedule: ClientSchedule) -> dict[str, Any]:
    course = schedule.course
    view: dict[str, Any] = {
        "client_id": str(schedule.client_id),
        "consultation": schedule.consultation.model_dump(mode="json")
        if schedule.consultation
        else None,
        "consultation_status": schedule.consultation_status,
        "course": None,
        "previous_courses": [str(c) for c in schedule.previous_courses],
    }
    if course is not None:
        view["course"] = {
            "course_id": str(course.plan.course_id),
            "therapist_id": course.plan.therapist_id,
            "window_ends_on": course.plan.window_ends_on.isoformat(),
            "appointments": [
                {
                    **a.model_dump(mode="json"),
                    "status": course.status_of(a.appointment_id),
                    **session_safety_view(course, a),
                }
                for a in course.plan.appointments
            ],
            "completed_at": course.completed_at.isoformat() if course.completed_at else None,
            "booster_plan": course.booster_plan.model_dump() if course.booster_plan else None,
            "next_booster": course.next_booster,
            "next_booster_due_at": course.next_booster_due_at.isoformat()
            if course.next_booster_due_at
            else None,
            "boosters_stopped": course.boosters_stopped,
            "standing": course.standing,
            "window_days_left": course.paused_days_left,
            "ended_at": course.ended_at.isoformat() if course.ended_at else None,
            "end_code": course.end_code,
            "off_plan": [a.model_dump(mode="json") for a in course.off_plan],
            "booster_sessions": booster_sessions_view(course),
        }
    return view


def routes(scheduler: Scheduler) -> APIRouter:
    router = APIRouter(
        prefix="/v1/clinics/{clinic_id}",
        tags=["scheduler"],
        responses=CLINIC_RESPONSES,
        dependencies=[Depends(staff_actor)],
    )

    async def guarded(call: Any) -> Any:
        try:
            return await call
        except Invalid as invalid:
            detail = [{"loc": ["body", invalid.field], "msg": str(invalid), "type": "value_error"}]
            raise HTTPException(422, detail) from invalid
        except (Refused, CalendarMissing) as refused:
            raise HTTPException(409, str(refused)) from refused
        except LookupError as missing:
            what = str(missing) if isinstance(missing, Missing) else "not found"
            raise HTTPException(404, what) from missing
        except WriteConflict as busy:
            raise HTTPException(409, "the client is being changed; retry") from busy

    router.include_router(calendar_routes(scheduler, guarded))

    @router.get("/clients/{client_id}/schedule", summary="A client's appointments and boosters")
    async def read_schedule(clinic: AuthorisedClinic, client_id: UUID) -> dict[str, Any]:
        schedule = await scheduler.store.load(clinic.id, client_id)
        if schedule is None:
            raise HTTPException(404, "not found")
        return schedule_view(schedule)

    @router.post(
        "/appointments/{appointment_id}/completion",
        summary="The session was held",
        responses=CONFLICT,
        dependencies=[roles(*CLINICAL)],
    )
    async def complete(
        clinic: AuthorisedClinic, appointment_id: UUID, body: CompletionIn
    ) -> dict[str, Any]:
        schedule = await guarded(
            scheduler.complete(
                clinic.id,
                appointment_id,
                ride_home_confirmed=body.ride_home_confirmed,
                phq9_total=body.phq9_total,
                phq9_item9=body.phq9_item9,
            )
        )
        return schedule_view(schedule)

    add_medicine_routes(router, scheduler, guarded, schedule_view)

    @router.post(
        "/appointments/{appointment_id}/missed",
        summary="The client did not attend",
        responses=CONFLICT,
    )
    async def missed(
        clinic: AuthorisedClinic, appointment_id: UUID, body: DropIn | None = None
    ) -> dict[str, Any]:
        short = body is not None and body.allow_short_notice
        schedule, problem = await guarded(
            scheduler.drop(clinic.id, appointment_id, missed=True, allow_short_notice=short)
        )
        return {**schedule_view(schedule), "replanned": problem is None, "problem": problem}

    @router.post(
        "/appointments/{appointment_id}/cancellation",
        summary="Cancel a session",
        responses=CONFLICT,
    )
    async def cancel(
        clinic: AuthorisedClinic, appointment_id: UUID, body: DropIn | None = None
    ) -> dict[str, Any]:
        short = body is not None and body.allow_short_notice
        schedule, problem = await guarded(
            scheduler.drop(clinic.id, appointment_id, missed=False, allow_short_notice=short)
        )
        return {**schedule_view(schedule), "replanned": problem is None, "problem": problem}

    @router.post(
        "/appointments/{appointment_id}/reschedule", summary="Move a session", responses=CONFLICT
    )
    async def reschedule(
        clinic: AuthorisedClinic, appointment_id: UUID, body: RescheduleIn
    ) -> dict[str, Any]:
        schedule = await guarded(
            scheduler.reschedule(
                clinic.id,
                appointment_id,
                body.new_starts_at,
                allow_short_notice=body.allow_short_notice,
            )
        )
        return schedule_view(schedule)

    @router.put(
        "/clients/{client_id}/booster-plan",
        summary="Set or change the booster plan",
        responses=CONFLICT,
        dependencies=[roles(*CLINICAL)],
    )
    async def set_boosters(
        clinic: AuthorisedClinic, client_id: UUID, body: BoosterPlanIn
    ) -> dict[str, Any]:
        plan = ev.BoosterPlan(**body.model_dump())
        return schedule_view(await guarded(scheduler.set_boosters(clinic.id, client_id, plan)))

    @router.delete(
        "/clients/{client_id}/booster-plan",
        summary="Stop boosters",
        responses=CONFLICT,
        dependencies=[roles(*CLINICAL)],
    )
    async def stop_boosters(clinic: AuthorisedClinic, client_id: UUID) -> dict[str, Any]:
        return schedule_view(await guarded(scheduler.set_boosters(clinic.id, client_id, None)))

    router.include_router(course_routes(scheduler, guarded, schedule_view))
    router.include_router(booster_routes(scheduler, guarded, schedule_view))
    return router
