"""The scheduler's HTTP routes of the waitlist: cancel a consultation (its slot is offered
to the waitlist) and, for the client, accept an offer by its link.

The accept route takes no API key: the link's single-use token is the credential
(an unknown token is 404, a used, expired or lost offer 410, each saying why).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException

from chassis.http import CLINIC_RESPONSES, CONFLICT, AuthorisedClinic, staff_actor
from chassis.unit_of_work import WriteConflict
from services.scheduler.api import schedule_view
from services.scheduler.changes import CalendarMissing
from services.scheduler.domain.schedule import Refused
from services.scheduler.domain.waitlist import OfferGone
from services.scheduler.scheduler import Scheduler

GONE: dict[int | str, dict[str, Any]] = {
    404: {"description": "No offer has this link"},
    409: {"description": "Not bookable now: the slot was taken, or a consultation is booked"},
    410: {"description": "The offer was used, expired or lost; the detail says which"},
}


def routes(scheduler: Scheduler) -> list[APIRouter]:
    clinic = APIRouter(
        prefix="/v1/clinics/{clinic_id}",
        tags=["scheduler"],
        responses=CLINIC_RESPONSES,
        dependencies=[Depends(staff_actor)],
    )

    @clinic.post(
        "/consultations/{appointment_id}/cancellation",
        summary="Cancel a consultation; its slot is offered to the waitlist",
        responses=CONFLICT,
    )
    async def cancel_consultation(
        clinic_id: AuthorisedClinic, appointment_id: UUID
    ) -> dict[str, Any]:
        try:
            schedule = await scheduler.cancel_consultation(clinic_id.id, appointment_id)
        except (Refused, CalendarMissing) as refused:
            raise HTTPException(409, str(refused)) from refused
        except LookupError as missing:
            raise HTTPException(404, "not found") from missing
        except WriteConflict as busy:
            raise HTTPException(409, "the client is being changed; retry") from busy
        return schedule_view(schedule)

    client = APIRouter(prefix="/v1/offers", tags=["waitlist"])

    @client.post("/{token}/accept", summary="Accept an offered consultation slot", responses=GONE)
    async def accept_offer(token: str) -> dict[str, Any]:
        try:
            outcome, schedule = await scheduler.accept_offer(token)
        except OfferGone as gone:
            raise HTTPException(410, str(gone)) from gone
        except (Refused, CalendarMissing) as refused:
            raise HTTPException(409, str(refused)) from refused
        except LookupError as missing:
            raise HTTPException(404, "no offer has this link") from missing
        except WriteConflict as busy:
            raise HTTPException(409, "being changed; retry") from busy
        if outcome == "slot_taken":
            raise HTTPException(
                409, "the slot was taken before you accepted; you keep your waitlist place"
            )
        consultation = schedule.consultation
        return {
            "booked": True,
            "consultation": consultation.model_dump(mode="json") if consultation else None,
        }

    return [clinic, client]
