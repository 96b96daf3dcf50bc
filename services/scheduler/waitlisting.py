"""The waitlist's part of a schedule change: join it, leave it, offer a freed slot.

Used inside a write step by every door (reactions, requests, the offer timers):
the waitlist is read after its key is watched through the step's Booking, and
its writes (the list, the offer and its expiry timer) are queued on the same
MULTI as the schedule and the ledger (ledger.Booking.also). Rules are in
domain.waitlist.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from services.scheduler.changes import BOOKING_ATTEMPTS, CONSULTATION_HORIZON_DAYS, ScheduleChanges
from services.scheduler.domain import facts
from services.scheduler.domain import waitlist as rules
from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.planner import find_consultation_slot
from services.scheduler.domain.schedule import ClientSchedule
from services.scheduler.ledger import Booking, claims_for
from services.scheduler.waitlist_store import new_token
from shared import events as ev

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8002"
JOIN_STEP = timedelta(milliseconds=1)


class WaitlistSteps(ScheduleChanges):
    # Where clients reach the offer route (main sets it from the settings).
    public_url: str = DEFAULT_PUBLIC_URL

    async def earliest_consultation(
        self, calendar: ClinicCalendar, schedule: ClientSchedule, now: datetime
    ) -> datetime | None:
        """The earliest consultation in the client's times, searched well past the horizon."""
        days = calendar.policy.earliest_search_days
        bookings = await self.store.bookings(calendar, schedule.client_id, now, days)
        slot = rules.earliest_consultation(calendar, bookings, schedule.preferred_times, now)
        return slot.starts_at if slot else None

    async def book_consultation(
        self,
        booking: Booking,
        calendar: ClinicCalendar,
        schedule: ClientSchedule,
        appointment_id: UUID,
        not_before: datetime,
    ) -> ev.Appointment | None:
        """The earliest consultation within the horizon, held in the ledger; None: none fits."""
        for _ in range(BOOKING_ATTEMPTS):
            bookings = await self.store.bookings(
                calendar,
                schedule.client_id,
                not_before,
                CONSULTATION_HORIZON_DAYS,
                [appointment_id],
            )
            slot = find_consultation_slot(
                calendar, bookings, schedule.preferred_times, not_before, CONSULTATION_HORIZON_DAYS
            )
            if slot is None:
                return None
            appointment = ev.Appointment(
                appointment_id=appointment_id,
                kind=ev.AppointmentKind.CONSULTATION,
                starts_at=slot.starts_at,
                ends_at=slot.ends_at,
                therapist_id=slot.therapist_id,
            )
            if await self.reserved(booking, claims_for(schedule.client_id, [appointment])):
                return appointment
        raise RuntimeError("consultation slot kept being taken; will retry")

    async def join_waitlist(
        self,
        booking: Booking,
        schedule: ClientSchedule,
        now: datetime,
        earliest: datetime | None,
    ) -> ev.ConsultationWaitlisted:
        """The client on the clinic's waitlist (their place kept if already on it)."""
        waitlist = await self._waiting(booking)
        clients = [client for client, _ in waitlist]
        # Joined after everyone on it: two clients joining in the same instant keep
        # the order they joined in (a sorted set would order them by id).
        last = waitlist[-1][1] if waitlist else now
        joined_at = dict(waitlist).get(schedule.client_id, max(now, last + JOIN_STEP))
        clinic_id, client_id = schedule.clinic_id, schedule.client_id
        booking.also.append(lambda p: self.store.waitlist.join(p, clinic_id, client_id, joined_at))
        return ev.ConsultationWaitlisted(
            **facts.base(schedule, now),
            position=rules.position(clients, client_id),
            joined_at=joined_at,
            earliest_available_at=earliest,
        )

    def leave_waitlist(self, booking: Booking, client_id: UUID) -> None:
        clinic_id = booking.clinic_id
        booking.also.append(lambda p: self.store.waitlist.leave(p, clinic_id, client_id))

    async def offer_to_next(
        self,
        booking: Booking,
        calendar: ClinicCalendar,
        slot: ev.Appointment,
        now: datetime,
        offered_to: Sequence[UUID] = (),
    ) -> list[ev.Event]:
        """Offer a freed slot to the first waiting client it was not offered to yet."""
        clients = [client for client, _ in await self._waiting(booking)]
        token, digest = new_token(booking.clinic_id)
        offer = rules.offer_slot(
            booking.clinic_id, slot, clients, offered_to, calendar.policy, now, uuid4(), digest
        )
        if offer is None:
            return []
        booking.also.append(lambda p: self.store.waitlist.save_offer(p, offer, now))
        return [
            ev.ConsultationSlotOffered(
                clinic_id=offer.clinic_id,
                client_id=offer.client_id,
                occurred_at=now,
                offer_id=offer.offer_id,
                appointment=offer.appointment,
                expires_at=offer.expires_at,
                accept_url=f"{self.public_url.rstrip('/')}/v1/offers/{token}/accept",
            )
        ]

    async def _waiting(self, booking: Booking) -> list[tuple[UUID, datetime]]:
        await booking.tx.watch(self.store.waitlist.waitlist_key(booking.clinic_id))
        return await self.store.waitlist.waiting(booking.clinic_id)


def minimum_notice(calendar: ClinicCalendar, now: datetime) -> datetime:
    return now + timedelta(hours=calendar.policy.min_notice_hours)
