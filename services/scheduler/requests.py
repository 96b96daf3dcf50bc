"""The clinic's requests: complete, miss or cancel a session, move it, set boosters.

Each is decided on the schedule as read inside the write step and recorded
before anything is published (the relay publishes what a broker outage left,
so an accepted change is answered once it is recorded). Its events are named
by the version it was decided on and the action (domain.ids): a retry of a
request that recorded nothing repeats its ids, the same action later is a new
fact. A refused request records nothing but may publish what stands of it (an
alert), named apart from the request's own outputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from chassis.unit_of_work import Replayed
from services.scheduler.changes import (
    BOOKING_ATTEMPTS,
    COURSE_HORIZON_DAYS,
    Changed,
    ScheduleChanges,
)
from services.scheduler.domain import booster_lifecycle, endings, lifecycle, medicine
from services.scheduler.domain import ids as domain_ids
from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.facts import course_of
from services.scheduler.domain.planner import is_late_cancellation
from services.scheduler.domain.plans import (
    ClientAvailability,
    DropSession,
    MoveSession,
    PlanFailure,
    Replan,
)
from services.scheduler.domain.replan import replan_after_reschedule
from services.scheduler.domain.schedule import ClientSchedule, Refused
from services.scheduler.ledger import Booking, claims_for
from shared import events as ev

Change = tuple[ClientSchedule, list[ev.Event]]
AnyChange = Callable[[ClientSchedule, datetime, Booking], Change | Awaitable[Change]]


@dataclass(frozen=True)
class _Refusal:
    """A refused request: nothing saved; raised again once its standing events are out."""

    error: Refused


class Requests(ScheduleChanges):
    async def complete(
        self,
        clinic_id: str,
        appointment_id: UUID,
        *,
        ride_home_confirmed: bool,
        phq9_total: int | None,
        phq9_item9: int | None,
    ) -> ClientSchedule:
        calendar = await self.calendar(clinic_id)

        def change(schedule: ClientSchedule, now: datetime, _: Booking) -> Change:
            return lifecycle.complete_session(
                schedule,
                appointment_id,
                ride_home_confirmed=ride_home_confirmed,
                phq9_total=phq9_total,
                phq9_item9=phq9_item9,
                calendar=calendar,
                now=now,
            )

        # The answers are part of the action: the same form sent again is a retry,
        # different answers are another fact (and another alert, if any).
        answers = f"ride-{ride_home_confirmed}/phq9-{phq9_total}-{phq9_item9}"
        return await self._request(clinic_id, appointment_id, f"completed/{answers}", change)

    async def check_in(
        self, clinic_id: str, appointment_id: UUID, answers: ev.CheckInAnswers
    ) -> ClientSchedule:
        """Check the client in before a medicine session; a refusal is recorded (the
        session is proposed for rescheduling), so it answers with the schedule too."""
        calendar = await self.calendar(clinic_id)

        def change(schedule: ClientSchedule, now: datetime, _: Booking) -> Change:
            return medicine.check_in(schedule, appointment_id, answers, calendar, now)

        action = f"checked-in/{answers.model_dump_json()}"
        return await self._request(clinic_id, appointment_id, action, change)

    async def record(
        self, clinic_id: str, appointment_id: UUID, record: ev.SessionRecord
    ) -> ClientSchedule:
        calendar = await self.calendar(clinic_id)

        def change(schedule: ClientSchedule, now: datetime, _: Booking) -> Change:
            return medicine.record_session(schedule, appointment_id, record, calendar, now)

        digest = hashlib.sha256(record.model_dump_json().encode()).hexdigest()[:16]
        return await self._request(clinic_id, appointment_id, f"recorded/{digest}", change)

    async def drop(
        self,
        clinic_id: str,
        appointment_id: UUID,
        *,
        missed: bool,
        allow_short_notice: bool = False,
    ) -> tuple[ClientSchedule, str | None]:
        """A no-show or cancellation; the course is re-planned inside its window if it can be,
        with the minimum notice unless staff allow short notice."""
        calendar = await self.calendar(clinic_id)
        note: list[str] = []

        async def change(schedule: ClientSchedule, now: datetime, booking: Booking) -> Change:
            note.clear()  # the step may run again after a conflict
            course = schedule.course
            if course is None:
                raise Refused("the client has no course")
            start = course.appointment(appointment_id).starts_at
            late = not missed and is_late_cancellation(start, now, calendar.policy)
            updated, events = lifecycle.session_dropped(
                schedule, appointment_id, missed=missed, late=late, now=now
            )
            dropped = course.appointment(appointment_id)
            booking.release(claims_for(schedule.client_id, [dropped]))
            if course.standing != "active" or course.booster_with(appointment_id):
                # Paused, on review or ended, or a booster's session: nothing rebooked.
                return updated, events
            is_medicine = dropped.kind is ev.AppointmentKind.MEDICINE
            no_shows = endings.consecutive_no_shows(course_of(updated))
            if missed and is_medicine and no_shows >= calendar.policy.review_after_no_shows:
                note.append(f"{no_shows} medicine sessions missed in a row: held for review")
                updated, more = endings.hold_for_review(updated, appointment_id, now)
                return updated, events + more
            drop = DropSession(appointment_id=appointment_id)
            replan = await self._replan(calendar, updated, drop, now, booking, allow_short_notice)
            if isinstance(replan, PlanFailure):
                note.append(replan.reason)
                if is_medicine:  # the window cannot hold the doses left: closed as incomplete
                    return self._closed_incomplete(updated, replan, now, booking, events)
                return updated, events
            updated, more = lifecycle.replanned(updated, replan, now)
            return updated, events + more

        action = ("missed" if missed else "cancelled") + _short_notice(allow_short_notice)
        schedule = await self._request(clinic_id, appointment_id, action, change)
        return schedule, note[0] if note else None

    async def reschedule(
        self,
        clinic_id: str,
        appointment_id: UUID,
        new_starts_at: datetime,
        *,
        allow_short_notice: bool = False,
    ) -> ClientSchedule:
        calendar = await self.calendar(clinic_id)

        async def change(schedule: ClientSchedule, now: datetime, booking: Booking) -> Change:
            if schedule.course is not None and schedule.course.standing in ("paused", "ended"):
                raise Refused(f"the course is {schedule.course.standing}: nothing is moved")
            move = MoveSession(appointment_id=appointment_id, new_starts_at=new_starts_at)
            replan = await self._replan(calendar, schedule, move, now, booking, allow_short_notice)
            if isinstance(replan, PlanFailure):
                raise Refused(replan.reason)
            return lifecycle.replanned(schedule, replan, now)

        action = f"moved-{new_starts_at.isoformat()}{_short_notice(allow_short_notice)}"
        return await self._request(clinic_id, appointment_id, action, change)

    def _closed_incomplete(
        self,
        schedule: ClientSchedule,
        failure: PlanFailure,
        now: datetime,
        booking: Booking,
        events: list[ev.Event],
    ) -> Change:
        code = ev.CourseEndCode.CLOSED_INCOMPLETE
        ended, more, released = endings.end_course(schedule, code, now, failure.reason)
        booking.release(claims_for(schedule.client_id, released))
        return ended, events + more

    async def _replan(
        self,
        calendar: ClinicCalendar,
        schedule: ClientSchedule,
        change: MoveSession | DropSession,
        now: datetime,
        booking: Booking,
        short_notice_allowed: bool = False,
    ) -> Replan | PlanFailure:
        """The course after `change`, its new slots held in place of the old ones."""
        course = schedule.course
        if course is None:
            raise Refused("the client has no course")
        for _ in range(BOOKING_ATTEMPTS):
            own = [a.appointment_id for a in course.plan.appointments]
            bookings = await self.store.bookings(
                calendar, schedule.client_id, now, COURSE_HORIZON_DAYS, own
            )
            replan = replan_after_reschedule(
                calendar,
                bookings,
                course.plan,
                change,
                now,
                short_notice_allowed=short_notice_allowed,
                availability=schedule.course_availability(
                    calendar.policy.course_in_consultation_times
                ),
            )
            if isinstance(replan, PlanFailure):
                return replan
            before = {a.appointment_id: a for a in course.plan.appointments}
            changed = claims_for(schedule.client_id, [*replan.rescheduled, *replan.added])
            old = claims_for(
                schedule.client_id, [before[a.appointment_id] for a in replan.rescheduled]
            )
            if await self.reserved(booking, changed, old):
                return replan
        raise Refused("the calendar keeps changing; retry")

    async def set_boosters(
        self, clinic_id: str, client_id: UUID, plan: ev.BoosterPlan | None
    ) -> ClientSchedule:
        calendar = await self.calendar(clinic_id)

        def change(schedule: ClientSchedule, now: datetime, _: Booking) -> Change:
            if plan is None:
                return booster_lifecycle.stop_boosters(schedule, "stopped_by_care_team", now)
            return booster_lifecycle.set_booster_plan(schedule, plan, calendar, now)

        action = f"boosters-{plan.model_dump_json() if plan else 'stopped'}"
        return await self._for_client(clinic_id, client_id, action, change)

    async def set_availability(
        self, clinic_id: str, client_id: UUID, availability: ClientAvailability
    ) -> ClientSchedule:
        """Where the client's course sessions may lie from now on (booked ones stay)."""

        def change(schedule: ClientSchedule, now: datetime, _: Booking) -> Change:
            return schedule.model_copy(update={"availability": availability}), []

        action = f"availability-{availability.model_dump_json()}"
        return await self._for_client(clinic_id, client_id, action, change)

    async def _request(
        self, clinic_id: str, appointment_id: UUID, action: str, change: AnyChange
    ) -> ClientSchedule:
        client_id = await self.store.client_of(clinic_id, appointment_id)
        if client_id is None:
            raise LookupError("not found")
        return await self._for_client(clinic_id, client_id, f"{appointment_id}/{action}", change)

    async def _for_client(
        self, clinic_id: str, client_id: UUID, action: str, change: AnyChange
    ) -> ClientSchedule:
        async def decide(
            schedule: ClientSchedule | None, _: Sequence[str], now: datetime, booking: Booking
        ) -> Changed[ClientSchedule | _Refusal]:
            if schedule is None:
                raise LookupError("not found")
            try:
                result = change(schedule, now, booking)
                updated, events = result if isinstance(result, tuple) else await result
            except Refused as refused:
                # Nothing is saved; what stands of it (an alert) is published on its own.
                cause = domain_ids.change_cause(schedule, f"{action}/refused")
                standing = self.derived(schedule, refused.events, cause)
                return Changed(None, standing, _Refusal(refused))
            cause = domain_ids.change_cause(schedule, action)
            saved = domain_ids.saved(updated, schedule)
            return Changed(updated, self.derived(saved, events, cause), saved)

        outcome = await self.change(clinic_id, client_id, [], decide, leave_to_relay=True)
        if isinstance(outcome, _Refusal):
            raise outcome.error
        if outcome is None or isinstance(outcome, Replayed):  # a request carries no mark
            raise RuntimeError("a request's write step answered nothing")
        return outcome


def _short_notice(allowed: bool) -> str:
    # Part of the action: the same request with staff's override is another fact.
    return "/short-notice" if allowed else ""
