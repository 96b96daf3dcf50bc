"""Freed consultation slots offered to the waitlist: cancel, accept, expire.

Three doors over the one write step (changes.ScheduleChanges.change, or the
unit of work for the timer), each with the waitlist and the offers read under
the step's WATCH and written in its MULTI (waitlisting.WaitlistSteps):
- the clinic cancels a consultation: its slot is released and offered to the
  first client on the waitlist;
- the client accepts through the link (the token is the credential): the slot
  is held in the ledger and booked, or, taken meanwhile, the offer lapses and the
  client keeps their place for the next freed slot;
- the offer timer (a lease queue, as the booster timers): an offer not accepted
  in time lapses and its slot goes to the next in line.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from redis.asyncio.client import Pipeline

from chassis.due_work import DueWork
from chassis.leases import Lease
from chassis.outbox import Output
from chassis.unit_of_work import Decision, Replayed, Transaction
from services.scheduler.changes import Changed
from services.scheduler.domain import facts
from services.scheduler.domain import ids as domain_ids
from services.scheduler.domain import waitlist as rules
from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.schedule import ClientSchedule, Refused
from services.scheduler.ledger import Booking, claims_for
from services.scheduler.timer_loop import timer_loop
from services.scheduler.waitlist_store import clinic_of, digest
from services.scheduler.waitlisting import WaitlistSteps
from shared import events as ev

log = logging.getLogger(__name__)

OFFER_BATCH = 50
LEASE_MS = 30_000

Accepted = Literal["accepted", "slot_taken"]


class Offers(WaitlistSteps):
    async def cancel_consultation(self, clinic_id: str, appointment_id: UUID) -> ClientSchedule:
        """The clinic cancels a booked consultation; its slot goes to the waitlist."""
        client_id = await self.store.client_of(clinic_id, appointment_id)
        if client_id is None:
            raise LookupError("not found")
        calendar = await self.calendar(clinic_id)

        async def decide(
            schedule: ClientSchedule | None, _: Sequence[str], now: datetime, booking: Booking
        ) -> Changed[ClientSchedule]:
            consultation = schedule.consultation if schedule else None
            if schedule is None or consultation is None:
                raise LookupError("not found")
            if consultation.appointment_id != appointment_id:
                raise Refused("not the client's current consultation")
            if schedule.consultation_status != ev.AppointmentStatus.BOOKED:
                raise Refused(f"the consultation is {schedule.consultation_status}")
            if consultation.starts_at <= now:
                raise Refused("the consultation has started")
            booking.release(claims_for(schedule.client_id, [consultation]))
            cancelled = ev.AppointmentStatus.CANCELLED
            updated = schedule.model_copy(update={"consultation_status": cancelled})
            events: list[ev.Event] = [
                ev.ConsultationCancelled(
                    **facts.base(schedule, now),
                    appointment_id=consultation.appointment_id,
                    starts_at=consultation.starts_at,
                ),
                facts.status_changed(schedule, consultation, cancelled, now),
            ]
            events += await self.offer_to_next(booking, calendar, consultation, now)
            saved = domain_ids.saved(updated, schedule)
            cause = domain_ids.change_cause(schedule, f"{appointment_id}/cancelled")
            return Changed(updated, self.derived(saved, events, cause), saved)

        outcome = await self.change(clinic_id, client_id, [], decide, leave_to_relay=True)
        if not isinstance(outcome, ClientSchedule):
            raise RuntimeError("a request's write step answered nothing")
        return outcome

    async def accept_offer(self, token: str) -> tuple[Accepted, ClientSchedule]:
        """Book the offered slot for the client the link was sent to.

        LookupError: no such offer; rules.OfferGone: used, expired or lost before."""
        clinic_id = clinic_of(token)
        if not clinic_id or self.clinics.get(clinic_id) is None:
            raise LookupError("no such offer")
        waitlist = self.store.waitlist
        offer_id = await waitlist.offer_id_for(clinic_id, digest(token))
        offer = await waitlist.offer(clinic_id, offer_id) if offer_id else None
        if offer_id is None or offer is None:
            raise LookupError("no such offer")

        async def decide(
            schedule: ClientSchedule | None, _: Sequence[str], now: datetime, booking: Booking
        ) -> Changed[tuple[Accepted, ClientSchedule]]:
            await booking.tx.watch(waitlist.offer_key(clinic_id, offer_id))
            current = await waitlist.offer(clinic_id, offer_id)
            if schedule is None or current is None:
                raise LookupError("no such offer")
            rules.check_acceptable(current, schedule, now)
            cause = domain_ids.change_cause(schedule, f"offer-{offer_id}")
            appointment = current.appointment
            if await self.reserved(booking, claims_for(schedule.client_id, [appointment])):
                booked, taken = rules.accepted(schedule, current)
                self.leave_waitlist(booking, schedule.client_id)
                booking.also.append(lambda p: waitlist.save_offer(p, taken, now))
                events: list[ev.Event] = [
                    ev.ConsultationBooked(**facts.base(schedule, now), appointment=appointment),
                    ev.ConsultationOfferAccepted(
                        **facts.base(schedule, now), offer_id=offer_id, appointment=appointment
                    ),
                    facts.stage(schedule, ev.ClientStage.CONSULTATION_BOOKED, now),
                    facts.status_changed(schedule, appointment, ev.AppointmentStatus.BOOKED, now),
                ]
                saved = domain_ids.saved(booked, schedule)
                outputs = self.derived(saved, events, cause)
                return Changed(booked, outputs, ("accepted", saved))
            # Taken meanwhile: the offer lapses; the client keeps their place for the next.
            lost = current.model_copy(update={"status": "slot_taken"})
            booking.also.append(lambda p: waitlist.save_offer(p, lost, now))
            lapsed = ev.ConsultationOfferLapsed(
                **facts.base(schedule, now), offer_id=offer_id, lapsed_as="slot_taken"
            )
            saved = domain_ids.saved(schedule, schedule)
            return Changed(schedule, self.derived(saved, [lapsed], cause), ("slot_taken", saved))

        outcome = await self.change(clinic_id, offer.client_id, [], decide, leave_to_relay=True)
        if outcome is None or isinstance(outcome, Replayed):
            raise RuntimeError("a request's write step answered nothing")
        return outcome

    async def fire_expired_offers(self, clinic_id: str) -> tuple[int, bool]:
        """Lapse the offers expired by now, each slot offered to the next in line;
        (how many lapsed, whether more may be due already)."""
        now = self.clock.now()
        calendar = await self.calendar(clinic_id)
        expiries = self.store.waitlist.expiries
        leases = await expiries.claim(clinic_id, now, LEASE_MS, OFFER_BATCH)
        lapsed = 0
        if leases:
            step = functools.partial(self._expire, calendar, now, leases)
            async with expiries.handed_back_on_failure(leases):
                outcome = await self.unit_of_work.run(clinic_id, [], step)
            lapsed = outcome if isinstance(outcome, int) else 0
        return lapsed, len(leases) == OFFER_BATCH

    async def _expire(
        self, calendar: ClinicCalendar, now: datetime, leases: list[Lease], tx: Transaction
    ) -> Decision[int]:
        waitlist, clinic_id = self.store.waitlist, tx.clinic_id
        fenced = await waitlist.expiries.fence_all(tx, leases)
        held = [lease for lease, ok in zip(leases, fenced, strict=True) if ok]
        booking = self.store.ledger.booking(tx, clinic_id)  # for its WATCH and `also` writes
        outputs: list[Output] = []
        lapsed_count = 0
        for lease in held:
            offer_id = UUID(lease.member)
            await tx.watch(waitlist.offer_key(clinic_id, offer_id))
            offer = await waitlist.offer(clinic_id, offer_id)
            expired = rules.expire(offer, now) if offer else None
            if expired is None:
                continue  # accepted or lost meanwhile: the timer is let go
            booking.also.append(functools.partial(waitlist.save_offer, offer=expired, now=now))
            lapsed = ev.ConsultationOfferLapsed(
                clinic_id=clinic_id,
                client_id=expired.client_id,
                occurred_at=now,
                offer_id=offer_id,
                lapsed_as="expired",
            )
            events: list[ev.Event] = [lapsed]
            events += await self.offer_to_next(
                booking, calendar, expired.appointment, now, expired.offered_to
            )
            outputs += self._outputs(f"offer-{offer_id}/expired", events)
            lapsed_count += 1

        def write(p: Pipeline) -> None:
            waitlist.expiries.done_all(p, held)
            for also in booking.also:
                also(p)

        return Decision(write, outputs, lapsed_count)

    def _outputs(self, cause: str, events: Sequence[ev.Event]) -> list[Output]:
        ids = domain_ids.event_ids(cause, events)
        return [
            Output(event, self.publisher.envelope_for(event, event_id=event_id))
            for event, event_id in zip(events, ids, strict=True)
        ]


def offer_timer(
    offers: Offers, work: DueWork, poll_s: float, stopping: asyncio.Event
) -> Callable[[], Coroutine[Any, Any, None]]:
    """The loop over the clinics `work` finds with offers expiring (timer_loop's, as the
    booster timers'); it ends after the round in progress once `stopping` is set."""
    return timer_loop("offer", offers, offers.fire_expired_offers, work, poll_s, stopping)
