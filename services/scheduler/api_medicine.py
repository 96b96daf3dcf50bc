"""The scheduler's HTTP routes for a medicine session's check-in and record (rules 16, 17).

Thin, as api.py: the bodies are checked here (422 naming the field), the rules
are domain.checkin's. A refused check-in is recorded, so it answers 200 with
the session's `check_in` outcome, and `measure_overdue` when the session's
pre-dose measure opened and is still unanswered; a record the clinic's rules
refuse (monitoring too short) is a 422 naming `discharged_at`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal
from uuid import UUID

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from chassis.http import CONFLICT, AuthorisedClinic, SaneInstant, roles
from chassis.staff_tokens import CLINICAL
from services.scheduler.domain.schedule import ClientSchedule, Course
from services.scheduler.scheduler import Scheduler
from shared import events as ev


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VitalsIn(_Input):
    systolic: int = Field(ge=50, le=300, description="mmHg")
    diastolic: int = Field(ge=20, le=200, description="mmHg")
    heart_rate: int = Field(ge=20, le=250, description="Beats per minute (recorded, not judged)")


class CheckInIn(_Input):
    ride_home_confirmed: bool = Field(description="A driver takes the client home (rule 8)")
    fasting_confirmed: bool = Field(description="No food for 2 h, no liquids for 30 min")
    vitals: VitalsIn = Field(description="Pre-dose blood pressure and heart rate")
    phq9_item9: int = Field(ge=0, le=3, description="Pre-dose PHQ-9 item 9; above 0 alerts staff")


class AdverseEventIn(_Input):
    kind: ev.AdverseEventKind
    severity: ev.Severity = Field(description="A severe one alerts staff at once")


class SessionRecordIn(_Input):
    medicine: Literal["ketamine", "esketamine"] = "ketamine"
    route: ev.MedicineRoute
    dose_mg: float = Field(gt=0, le=1000)
    administered_by: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", description="Staff id (not a name)"
    )
    dosed_at: SaneInstant
    discharged_at: SaneInstant = Field(description="At least the policy's monitoring after dosing")
    vitals_at_dosing: VitalsIn
    vitals_at_40_min: VitalsIn
    vitals_at_discharge: VitalsIn
    adverse_events: tuple[AdverseEventIn, ...] = Field(default=(), max_length=20)


def session_safety_view(course: Course, appointment: ev.Appointment) -> dict[str, Any]:
    """A session's check-in outcome and whether it is recorded: codes only, no measurements."""
    if appointment.kind not in (ev.AppointmentKind.MEDICINE, ev.AppointmentKind.BOOSTER):
        return {}
    checkin = course.checkin_for(appointment)
    return {
        "check_in": None
        if checkin is None
        else {
            "outcome": "passed" if checkin.passed else "refused",
            "refused_for": list(checkin.refused_for),
            "proposed_for_rescheduling": not checkin.passed,
        },
        "recorded": str(appointment.appointment_id) in course.records,
    }


Guarded = Callable[[Awaitable[ClientSchedule]], Awaitable[ClientSchedule]]
View = Callable[[ClientSchedule], dict[str, Any]]


def add_medicine_routes(
    router: APIRouter, scheduler: Scheduler, guarded: Guarded, view: View
) -> None:
    @router.post(
        "/appointments/{appointment_id}/check-in",
        summary="Check the client in before a medicine session (passed or refused)",
        responses=CONFLICT,
        dependencies=[roles(*CLINICAL)],
    )
    async def check_in(
        clinic: AuthorisedClinic, appointment_id: UUID, body: CheckInIn
    ) -> dict[str, Any]:
        answers = ev.CheckInAnswers.model_validate(body.model_dump())
        schedule = await guarded(scheduler.check_in(clinic.id, appointment_id, answers))
        overdue = await scheduler.measure_overdue(schedule, appointment_id)
        return {**view(schedule), "measure_overdue": overdue}

    @router.post(
        "/appointments/{appointment_id}/record",
        summary="A medicine session's record: dose, monitoring, vital signs, adverse events",
        responses=CONFLICT,
        dependencies=[roles(*CLINICAL)],
    )
    async def record(
        clinic: AuthorisedClinic, appointment_id: UUID, body: SessionRecordIn
    ) -> dict[str, Any]:
        session_record = ev.SessionRecord.model_validate(body.model_dump())
        return view(await guarded(scheduler.record(clinic.id, appointment_id, session_record)))
