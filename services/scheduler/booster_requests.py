"""The clinic's requests about a booked booster: declined by the client or staff.

Decided in domain.booster_booking on the schedule as read inside the write step
(requests.Requests._for_client); the declined sessions free their slots through
the step's Booking, in the one MULTI with the schedule and its events. The plan's
next booster stays armed: a declined booster does not stop the next (rule 19).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from services.scheduler.domain import booster_booking
from services.scheduler.domain.schedule import ClientSchedule
from services.scheduler.ledger import Booking, claims_for
from services.scheduler.requests import Change, Requests


class BoosterRequests(Requests):
    async def decline_booster(
        self, clinic_id: str, appointment_id: UUID, declined_by: Literal["client", "staff"]
    ) -> ClientSchedule:
        def change(schedule: ClientSchedule, now: datetime, booking: Booking) -> Change:
            updated, events, released = booster_booking.decline_booster(
                schedule, appointment_id, declined_by, now
            )
            booking.release(claims_for(schedule.client_id, released))
            return updated, events

        return await self._request(clinic_id, appointment_id, f"declined-{declined_by}", change)
