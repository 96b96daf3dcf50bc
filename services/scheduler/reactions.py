"""The scheduler's reactions to events: book a consultation, close it, book a course (and
record the enrolment's measures).

Batch-shaped: `react` takes one client's events in order and folds each
decision over the schedule the previous one left, inside one write step; the
handlers hand it one event at a time today. Each output is named by its cause
and its role (chassis.events), so a replay publishes the same ids.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from uuid import UUID, uuid5

from chassis.dead_letters import Rejected
from chassis.outbox import Output
from services.scheduler import measure_log
from services.scheduler.changes import (
    BOOKING_ATTEMPTS,
    CONSULTATION_HORIZON_DAYS,
    COURSE_HORIZON_DAYS,
    Changed,
)
from services.scheduler.domain import facts, lifecycle, returning, waitlist
from services.scheduler.domain import ids as domain_ids
from services.scheduler.domain.course import course_steps
from services.scheduler.domain.planner import find_consultation_slot, plan_course
from services.scheduler.domain.plans import PlanFailure
from services.scheduler.domain.schedule import ClientSchedule
from services.scheduler.ledger import Booking, claims_for
from services.scheduler.waitlisting import WaitlistSteps, minimum_notice
from shared import events as ev
from shared.envelope import EVENT_ID_NAMESPACE, Envelope

Reaction = tuple[ClientSchedule, list[ev.Event]]
# One event's decision: the schedule as it stands, the moment, the ledger side.
React = Callable[[ClientSchedule, datetime, Booking], Awaitable[Reaction]]


class Reactions(WaitlistSteps):
    async def react(
        self, clinic_id: str, client_id: UUID, inputs: Sequence[tuple[Envelope, React]]
    ) -> None:
        """Handle one client's events once each, in order, in one write step."""
        by_id = {cause.id: (cause, decide) for cause, decide in inputs}
        first = inputs[0][0]

        async def decide_all(
            before: ClientSchedule | None, fresh: Sequence[str], now: datetime, booking: Booking
        ) -> Changed[None]:
            schedule = before or ClientSchedule(
                clinic_id=clinic_id, client_id=client_id, correlation_id=first.correlation_id
            )
            outputs: list[Output] = []
            for cause_id in fresh:
                cause, decide = by_id[cause_id]
                schedule, events = await decide(schedule, now, booking)
                outputs += [
                    Output(
                        e, self.publisher.envelope_for(e, cause=cause, role=domain_ids.role(e, i))
                    )
                    for i, e in enumerate(events)
                ]
            return Changed(schedule, outputs)

        await self.change(clinic_id, client_id, list(by_id), decide_all)

    async def on_consultation_requested(
        self, event: ev.ConsultationRequested, cause: Envelope
    ) -> None:
        async def decide(schedule: ClientSchedule, now: datetime, booking: Booking) -> Reaction:
            gone = (ev.AppointmentStatus.CANCELLED, ev.AppointmentStatus.NOSHOW)
            if schedule.consultation is not None and schedule.consultation_status not in gone:
                return schedule, []  # the same person asking again: booked, or held already
            # A cancelled consultation (or a no-show past its rebooks) is booked anew:
            # the client asked for another time.
            calendar = await self.calendar(event.clinic_id, booking.tx)
            schedule = schedule.model_copy(update={"preferred_times": event.preferred_times})
            requested = facts.stage(schedule, ev.ClientStage.CONSULTATION_REQUESTED, now)
            appointment_id = uuid5(EVENT_ID_NAMESPACE, f"{cause.id}/consultation")
            for _ in range(BOOKING_ATTEMPTS):
                bookings = await self.store.bookings(
                    calendar, event.client_id, now, CONSULTATION_HORIZON_DAYS, [appointment_id]
                )
                slot = find_consultation_slot(
                    calendar, bookings, event.preferred_times, now, CONSULTATION_HORIZON_DAYS
                )
                if slot is None:  # the earliest date further on, and a waitlist place
                    earliest = await self.earliest_consultation(calendar, schedule, now)
                    failed = ev.ConsultationBookingFailed(
                        clinic_id=event.clinic_id,
                        client_id=event.client_id,
                        occurred_at=now,
                        reason="no therapist is free in the preferred times in the next 4 weeks",
                        earliest_available_at=earliest,
                    )
                    waitlisted = await self.join_waitlist(booking, schedule, now, earliest)
                    return schedule, [requested, failed, waitlisted]
                appointment = ev.Appointment(
                    appointment_id=appointment_id,
                    kind=ev.AppointmentKind.CONSULTATION,
                    starts_at=slot.starts_at,
                    ends_at=slot.ends_at,
                    therapist_id=slot.therapist_id,
                )
                if await self.reserved(booking, claims_for(event.client_id, [appointment])):
                    self.leave_waitlist(booking, event.client_id)
                    booked = schedule.model_copy(
                        update={
                            "consultation": appointment,
                            "consultation_status": ev.AppointmentStatus.BOOKED,
                        }
                    )
                    return booked, [
                        requested,
                        ev.ConsultationBooked(
                            clinic_id=event.clinic_id,
                            client_id=event.client_id,
                            occurred_at=now,
                            appointment=appointment,
                        ),
                        facts.stage(schedule, ev.ClientStage.CONSULTATION_BOOKED, now),
                        facts.status_changed(
                            schedule, appointment, ev.AppointmentStatus.BOOKED, now
                        ),
                    ]
            raise RuntimeError("consultation slot kept being taken; will retry")

        await self.react(event.clinic_id, event.client_id, [(cause, decide)])

    async def on_consultation_held(self, event: ev.ConsultationHeld, cause: Envelope) -> None:
        async def decide(schedule: ClientSchedule, now: datetime, booking: Booking) -> Reaction:
            appointment = schedule.consultation
            if appointment is None:
                raise Rejected("a consultation was held that was never booked here")
            if schedule.consultation_status != ev.AppointmentStatus.BOOKED:
                return schedule, []
            status = (
                ev.AppointmentStatus.NOSHOW
                if event.outcome == "no_show"
                else ev.AppointmentStatus.FULFILLED
            )
            updated = schedule.model_copy(update={"consultation_status": status})
            closed = facts.status_changed(schedule, appointment, status, now)
            if status is ev.AppointmentStatus.NOSHOW:
                return await self._after_no_show(updated, cause, now, booking, closed)
            return updated, [closed]

        await self.react(event.clinic_id, event.client_id, [(cause, decide)])

    async def _after_no_show(
        self,
        schedule: ClientSchedule,
        cause: Envelope,
        now: datetime,
        booking: Booking,
        closed: ev.Event,
    ) -> Reaction:
        """A consultation no-show is rebooked (once by default), then waitlisted."""
        calendar = await self.calendar(schedule.clinic_id, booking.tx)
        if waitlist.rebook_after_no_show(schedule, calendar.policy):
            appointment_id = uuid5(EVENT_ID_NAMESPACE, f"{cause.id}/rebooked")
            not_before = minimum_notice(calendar, now)
            appointment = await self.book_consultation(
                booking, calendar, schedule, appointment_id, not_before
            )
            if appointment is not None:
                rebooked = schedule.model_copy(
                    update={
                        "consultation": appointment,
                        "consultation_status": ev.AppointmentStatus.BOOKED,
                        "consultation_rebooks": schedule.consultation_rebooks + 1,
                    }
                )
                booked = ev.ConsultationBooked(**facts.base(schedule, now), appointment=appointment)
                status = facts.status_changed(
                    schedule, appointment, ev.AppointmentStatus.BOOKED, now
                )
                return rebooked, [closed, booked, status]
        earliest = await self.earliest_consultation(calendar, schedule, now)
        return schedule, [closed, await self.join_waitlist(booking, schedule, now, earliest)]

    async def on_client_enrolled(self, event: ev.ClientEnrolled, cause: Envelope) -> None:
        baseline, field = measure_log.enrolment_entry(event), measure_log.enrolment_field(cause.id)

        async def decide(schedule: ClientSchedule, now: datetime, booking: Booking) -> Reaction:
            # The enrolment's measures are the client's first (the outcomes' baseline).
            booking.also.append(
                lambda p: self.store.measure_log.record(
                    p, event.clinic_id, event.client_id, field, baseline
                )
            )
            enrolled = facts.stage(schedule, ev.ClientStage.ENROLLED, now)
            archived: list[ev.Event] = []
            if schedule.course is not None:
                # A returning client: a new course once the last one completed or ended.
                if not returning.finished(schedule.course):
                    return schedule, [
                        enrolled,
                        ev.CourseBookingFailed(
                            clinic_id=event.clinic_id,
                            client_id=event.client_id,
                            occurred_at=now,
                            reason="a course is still in progress: end it before a new one",
                        ),
                    ]
                schedule, archived = returning.archived(schedule, now)
            calendar = await self.calendar(event.clinic_id, booking.tx)
            course_id = uuid5(EVENT_ID_NAMESPACE, f"{cause.id}/course")
            preferred = schedule.consultation.therapist_id if schedule.consultation else None
            not_before = now + timedelta(hours=1)
            # Ids an earlier, interrupted attempt at this very course may hold already.
            own = [uuid5(course_id, step.name) for step in course_steps(calendar.policy)]
            for _ in range(BOOKING_ATTEMPTS):
                bookings = await self.store.bookings(
                    calendar, event.client_id, now, COURSE_HORIZON_DAYS + 42, own
                )
                availability = schedule.course_availability(
                    calendar.policy.course_in_consultation_times
                )
                plan = plan_course(
                    calendar,
                    bookings,
                    course_id,
                    not_before,
                    preferred,
                    availability=availability,
                )
                if isinstance(plan, PlanFailure):
                    return schedule, [
                        enrolled,
                        *archived,
                        ev.CourseBookingFailed(
                            clinic_id=event.clinic_id,
                            client_id=event.client_id,
                            occurred_at=now,
                            reason=plan.reason,
                            earliest_fit_on=plan.earliest_fit_on,
                        ),
                    ]
                if await self.reserved(booking, claims_for(event.client_id, plan.appointments)):
                    updated, events = lifecycle.course_booked(schedule, plan, now)
                    return updated, [enrolled, *archived, *events]
            raise RuntimeError("course slots kept being taken; will retry")

        await self.react(event.clinic_id, event.client_id, [(cause, decide)])
