"""The consultation waitlist: earliest dates, offers of freed slots, no-show rebooking.

Pure rules (rule 20). A client no consultation fits for joins the clinic's
waitlist, in order of joining; a freed slot is offered to the first in line not
offered it yet, for a policy time; an offer that expires goes to the next; one
accepted books the slot if it is still free. A consultation no-show is rebooked
a policy number of times (default once), then the client is waitlisted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID, uuid5

from pydantic import AwareDatetime, BaseModel, ConfigDict

from services.scheduler.domain.clinic import ClinicCalendar, CoursePolicy
from services.scheduler.domain.planner import find_consultation_slot
from services.scheduler.domain.plans import Bookings, Slot
from services.scheduler.domain.schedule import ClientSchedule, Refused
from shared import events as ev

OfferStatus = Literal["open", "accepted", "expired", "slot_taken"]
# A slot that starts sooner than this is not offered: nobody could plan to come.
LEAD = timedelta(hours=1)


class Offer(BaseModel):
    """A freed slot offered to one client; the token is kept only as its digest."""

    model_config = ConfigDict(frozen=True)

    offer_id: UUID
    clinic_id: str
    client_id: UUID
    appointment: ev.Appointment
    expires_at: AwareDatetime
    token_digest: str
    status: OfferStatus = "open"
    offered_to: tuple[UUID, ...] = ()  # everyone this slot went to, this client last


class OfferGone(LookupError):
    """The offer can no longer be accepted (HTTP 410), saying why."""


def earliest_consultation(
    calendar: ClinicCalendar,
    bookings: Bookings,
    preferred: Sequence[ev.PreferredTime],
    now: datetime,
) -> Slot | None:
    """The earliest consultation in the client's times, searched the policy's days ahead."""
    days = calendar.policy.earliest_search_days
    return find_consultation_slot(calendar, bookings, preferred, now, days)


def position(waitlist: Sequence[UUID], client_id: UUID) -> int:
    """The client's place (1: first) once joined: kept if already waiting, else last."""
    if client_id in waitlist:
        return waitlist.index(client_id) + 1
    return len(waitlist) + 1


def next_in_line(waitlist: Sequence[UUID], offered_to: Sequence[UUID]) -> UUID | None:
    """The first waiting client, in order of joining, this slot was not offered to yet."""
    return next((c for c in waitlist if c not in offered_to), None)


def offer_slot(
    clinic_id: str,
    slot: ev.Appointment,
    waitlist: Sequence[UUID],
    offered_to: Sequence[UUID],
    policy: CoursePolicy,
    now: datetime,
    offer_id: UUID,
    token_digest: str,
) -> Offer | None:
    """The offer of a freed slot to the next in line; None when nobody is left to offer it
    to or it starts too soon to come (the slot stays free for anyone)."""
    client_id = next_in_line(waitlist, offered_to)
    if client_id is None or slot.starts_at - now < LEAD:
        return None
    expires_at = min(now + timedelta(hours=policy.offer_expiry_hours), slot.starts_at - LEAD)
    appointment = slot.model_copy(
        update={
            "appointment_id": uuid5(offer_id, "consultation"),
            "kind": ev.AppointmentKind.CONSULTATION,
        }
    )
    return Offer(
        offer_id=offer_id,
        clinic_id=clinic_id,
        client_id=client_id,
        appointment=appointment,
        expires_at=expires_at,
        token_digest=token_digest,
        offered_to=(*offered_to, client_id),
    )


def expire(offer: Offer, now: datetime) -> Offer | None:
    """The offer lapsed at `now` (None: still open, or settled before)."""
    if offer.status != "open" or now < offer.expires_at:
        return None
    return offer.model_copy(update={"status": "expired"})


def hand_on(
    expired: Offer,
    waitlist: Sequence[UUID],
    policy: CoursePolicy,
    now: datetime,
    offer_id: UUID,
    token_digest: str,
) -> Offer | None:
    """The lapsed offer's slot to the next in line (None: nobody left, or too late)."""
    return offer_slot(
        expired.clinic_id,
        expired.appointment,
        waitlist,
        expired.offered_to,
        policy,
        now,
        offer_id,
        token_digest,
    )


def check_acceptable(offer: Offer, schedule: ClientSchedule, now: datetime) -> None:
    """Raise unless the client may take the offer now (the slot itself is checked in the
    ledger by the caller)."""
    if offer.status == "accepted":
        raise OfferGone("the offer was accepted already")
    if offer.status == "slot_taken":
        raise OfferGone("the slot was taken before the offer was accepted")
    if offer.status == "expired" or now >= offer.expires_at:
        raise OfferGone("the offer expired")
    if has_consultation(schedule, now):
        raise Refused("the client has a consultation booked already")


def has_consultation(schedule: ClientSchedule, now: datetime) -> bool:
    return (
        schedule.consultation is not None
        and schedule.consultation_status == ev.AppointmentStatus.BOOKED
        and schedule.consultation.ends_at > now
    )


def accepted(schedule: ClientSchedule, offer: Offer) -> tuple[ClientSchedule, Offer]:
    booked = schedule.model_copy(
        update={
            "consultation": offer.appointment,
            "consultation_status": ev.AppointmentStatus.BOOKED,
        }
    )
    return booked, offer.model_copy(update={"status": "accepted"})


def rebook_after_no_show(schedule: ClientSchedule, policy: CoursePolicy) -> bool:
    """Whether a consultation no-show is rebooked (else the client is waitlisted)."""
    return schedule.consultation_rebooks < policy.consultation_no_show_rebooks
