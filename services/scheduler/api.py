"""The scheduler's HTTP API: a clinic's calendar, availability, and its clients' sessions."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chassis.http import (
    CLINIC_RESPONSES,
    CONFLICT,
    AuthorisedClinic,
    SaneDate,
    SaneInstant,
    unprocessable,
)
from chassis.unit_of_work import WriteConflict
from services.scheduler.api_medicine import add_medicine_routes, session_safety_view
from services.scheduler.changes import COURSE_HORIZON_DAYS, CalendarMissing
from services.scheduler.course_api import course_routes
from services.scheduler.domain.clinic import (
    ClinicCalendar,
    CoursePolicy,
    Interval,
    OpeningHours,
    ResourceId,
    Room,
    Therapist,
)
from services.scheduler.domain.feasibility import why_no_course_fits
from services.scheduler.domain.planner import find_consultation_slot, plan_course
from services.scheduler.domain.plans import PlanFailure
from services.scheduler.domain.schedule import ClientSchedule, Invalid, Refused
from services.scheduler.scheduler import Scheduler
from shared import events as ev


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IntervalIn(Input):
    starts_at: SaneInstant
    ends_at: SaneInstant


class TherapistIn(Input):
    """A therapist as the API takes one: the domain's, with its instants bounded."""

    id: ResourceId
    display_name: str = Field(min_length=1, max_length=200)
    availability: OpeningHours
    time_off: tuple[IntervalIn, ...] = Field(default=(), max_length=500)


def _unique(items: tuple[Any, ...], what: str) -> tuple[Any, ...]:
    ids = [item.id for item in items]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"{what} ids must be unique; repeated: {', '.join(repeated)}")
    return items


class CalendarIn(Input):
    opening_hours: OpeningHours
    therapists: tuple[TherapistIn, ...] = Field(default=(), max_length=200)
    rooms: tuple[Room, ...] = Field(default=(), max_length=200)
    closures: frozenset[SaneDate] = Field(default=frozenset(), max_length=1000)
    policy: CoursePolicy = CoursePolicy()

    # Here, not only in ClinicCalendar: found after the body was accepted, a
    # repeat was a 500; found here it is a 422 naming the field.
    @field_validator("therapists")
    @classmethod
    def _unique_therapists(cls, therapists: tuple[TherapistIn, ...]) -> tuple[TherapistIn, ...]:
        return _unique(therapists, "therapist")

    @field_validator("rooms")
    @classmethod
    def _unique_rooms(cls, rooms: tuple[Room, ...]) -> tuple[Room, ...]:
        return _unique(rooms, "room")

    def calendar(self, clinic_id: str, timezone: str) -> ClinicCalendar:
        therapists = tuple(
            Therapist(
                id=t.id,
                display_name=t.display_name,
                availability=t.availability,
                time_off=tuple(
                    Interval(starts_at=i.starts_at, ends_at=i.ends_at) for i in t.time_off
                ),
            )
            for t in self.therapists
        )
        return ClinicCalendar(
            clinic_id=clinic_id,
            timezone=timezone,
            opening_hours=self.opening_hours,
            therapists=therapists,
            rooms=self.rooms,
            closures=self.closures,
            policy=self.policy,
        )


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
        }
    return view


def routes(scheduler: Scheduler) -> APIRouter:
    router = APIRouter(
        prefix="/v1/clinics/{clinic_id}", tags=["scheduler"], responses=CLINIC_RESPONSES
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
            raise HTTPException(404, "not found") from missing
        except WriteConflict as busy:
            raise HTTPException(409, "the client is being changed; retry") from busy

    @router.get(
        "/calendar",
        summary="Opening hours, therapists, rooms and course policy",
        responses=CONFLICT,
    )
    async def read_calendar(clinic: AuthorisedClinic) -> dict[str, Any]:
        calendar: ClinicCalendar = await guarded(scheduler.calendar(clinic.id))
        return calendar.model_dump(mode="json")

    @router.put("/calendar", summary="Change therapists, rooms, hours or policy")
    async def change_calendar(clinic: AuthorisedClinic, body: CalendarIn) -> Any:
        try:
            calendar = body.calendar(clinic.id, clinic.timezone)
        except ValidationError as refused:
            return unprocessable(refused)
        today = scheduler.clock.now().astimezone(calendar.tz).date()
        impossible = why_no_course_fits(calendar, today)
        if impossible is not None:
            why = f"no full course can ever be planned: {impossible}"
            problem = {"loc": ["body", "policy"], "msg": why, "type": "course_infeasible"}
            return JSONResponse({"detail": [problem]}, status_code=422)
        await scheduler.store.save_calendar(calendar)
        return calendar.model_dump(mode="json")

    @router.get(
        "/availability", summary="The earliest consultation and course start", responses=CONFLICT
    )
    async def availability(
        clinic: AuthorisedClinic,
        since: Annotated[SaneInstant | None, Query(alias="from")] = None,
    ) -> dict[str, Any]:
        calendar: ClinicCalendar = await guarded(scheduler.calendar(clinic.id))
        start = since or scheduler.clock.now()
        nobody = UUID(int=0)
        bookings = await scheduler.store.bookings(calendar, nobody, start, COURSE_HORIZON_DAYS)
        slot = find_consultation_slot(calendar, bookings, (), start)
        plan = plan_course(calendar, bookings, nobody, start)
        return {
            "earliest_consultation": slot.model_dump(mode="json") if slot else None,
            "earliest_course": None
            if isinstance(plan, PlanFailure)
            else {
                "first_session_at": plan.appointments[0].starts_at.isoformat(),
                "therapist_id": plan.therapist_id,
                "window_ends_on": plan.window_ends_on.isoformat(),
            },
        }

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
    )
    async def set_boosters(
        clinic: AuthorisedClinic, client_id: UUID, body: BoosterPlanIn
    ) -> dict[str, Any]:
        plan = ev.BoosterPlan(**body.model_dump())
        return schedule_view(await guarded(scheduler.set_boosters(clinic.id, client_id, plan)))

    @router.delete("/clients/{client_id}/booster-plan", summary="Stop boosters", responses=CONFLICT)
    async def stop_boosters(clinic: AuthorisedClinic, client_id: UUID) -> dict[str, Any]:
        return schedule_view(await guarded(scheduler.set_boosters(clinic.id, client_id, None)))

    router.include_router(course_routes(scheduler, guarded, schedule_view))
    return router
