"""The scheduler's HTTP routes for a clinic's calendar: its opening hours, therapists,
rooms and course policy, the earliest consultation and course it can offer, and one
day's appointments by therapist and room (calendar_day.py).

Included by api.routes under its clinic prefix; `guarded` maps a refusal to 409.
A calendar on which no full course can ever be planned is a 422 naming `policy`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chassis.http import CONFLICT, AuthorisedClinic, SaneDate, SaneInstant, roles, unprocessable
from chassis.staff_tokens import Role
from services.scheduler.calendar_day import CalendarDay, calendar_day
from services.scheduler.changes import COURSE_HORIZON_DAYS
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
from services.scheduler.free_times import FreeTimes, free_times
from services.scheduler.scheduler import Scheduler

Guarded = Callable[[Any], Awaitable[Any]]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IntervalIn(_Input):
    starts_at: SaneInstant
    ends_at: SaneInstant


class TherapistIn(_Input):
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


class CalendarIn(_Input):
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


def calendar_routes(scheduler: Scheduler, guarded: Guarded) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/calendar",
        summary="Opening hours, therapists, rooms and course policy",
        responses=CONFLICT,
    )
    async def read_calendar(clinic: AuthorisedClinic) -> dict[str, Any]:
        calendar: ClinicCalendar = await guarded(scheduler.calendar(clinic.id))
        return calendar.model_dump(mode="json")

    @router.put(
        "/calendar",
        summary="Change therapists, rooms, hours or policy",
        dependencies=[roles(Role.CLINIC_ADMIN)],
    )
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
        "/calendar/day",
        summary="One clinic-local day's appointments, by therapist and room",
        responses=CONFLICT,
        response_model=CalendarDay,
    )
    async def read_day(
        clinic: AuthorisedClinic,
        day: Annotated[
            SaneDate,
            Query(alias="date", description="The clinic-local date (YYYY-MM-DD), 2000 to 2100"),
        ],
    ) -> CalendarDay:
        """Every appointment that starts on `date` in the clinic's time zone (a day of 23
        or 25 hours when the clocks change), with each one's client id (no names), kind,
        status, therapist, room, dose number and flags: `check_in_refused`,
        `ride_home_unconfirmed` (a booked dose with no check-in confirming a ride home)
        and `measure_overdue` (its pre-dose measure opened unanswered).

        Listed: what holds a therapist's or a room's slot, booked, fulfilled or (a
        consultation not rebooked yet) noshow. Cancelled appointments are not listed:
        a cancellation gives the slot up, and the day is read from the slots held; a
        course session missed or released by a pause or an ending is not listed either.
        """
        result: CalendarDay = await guarded(calendar_day(scheduler, clinic.id, day))
        return result

    @router.get(
        "/appointments/{appointment_id}/free-times",
        summary="The times a course session could move to on one clinic-local date",
        responses=CONFLICT,
        response_model=FreeTimes,
    )
    async def read_free_times(
        clinic: AuthorisedClinic,
        appointment_id: UUID,
        day: Annotated[
            SaneDate,
            Query(alias="date", description="The clinic-local date (YYYY-MM-DD), 2000 to 2100"),
        ],
        allow_short_notice: bool = False,
    ) -> FreeTimes:
        """Each start on the policy's slot grid of `date` that `POST .../reschedule` would
        accept now (therapist and room free, opening hours, the client's availability, the
        course's spacing and window, the minimum notice unless `allow_short_notice`), with
        how many other sessions of the course would move with it. A read, not a hold."""
        found: FreeTimes = await guarded(
            free_times(
                scheduler, clinic.id, appointment_id, day, allow_short_notice=allow_short_notice
            )
        )
        return found

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

    return router
