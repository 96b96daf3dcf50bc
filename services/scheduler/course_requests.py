"""The clinic's requests about a whole course: pause, resume, withdraw, discharge.

Each is decided in domain.pausing or domain.endings on the schedule as read
inside the write step (requests.Requests._for_client); sessions a pause or an
ending lets go free their slots through the step's Booking, and a resumed
course's new sessions are held there, all in the one MULTI with the schedule
and its events.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from services.scheduler.changes import BOOKING_ATTEMPTS, COURSE_HORIZON_DAYS
from services.scheduler.domain import endings, lifecycle, pausing
from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.facts import course_of
from services.scheduler.domain.plans import DropSession, PlanFailure
from services.scheduler.domain.schedule import ClientSchedule, Course, Missing, Refused
from services.scheduler.ledger import Booking, claims_for
from services.scheduler.requests import Change, Requests
from shared import events as ev


class CourseRequests(Requests):
    async def pause(self, clinic_id: str, client_id: UUID) -> ClientSchedule:
        calendar = await self.calendar(clinic_id)

        def change(schedule: ClientSchedule, now: datetime, booking: Booking) -> Change:
            _course(schedule)
            updated, events, released = pausing.pause(schedule, calendar, now)
            booking.release(claims_for(schedule.client_id, released))
            return updated, events

        return await self._for_client(clinic_id, client_id, "course-paused", change)

    async def end(self, clinic_id: str, client_id: UUID, code: ev.CourseEndCode) -> ClientSchedule:
        def change(schedule: ClientSchedule, now: datetime, booking: Booking) -> Change:
            _course(schedule)
            updated, events, released = endings.end_course(schedule, code, now)
            booking.release(claims_for(schedule.client_id, released))
            return updated, events

        return await self._for_client(clinic_id, client_id, f"course-{code.value}", change)

    async def resume(self, clinic_id: str, client_id: UUID) -> ClientSchedule:
        """A paused course re-planned from now; a review hold lifted, the missed dose rebooked
        (and the course closed as incomplete if its window cannot hold it)."""
        calendar = await self.calendar(clinic_id)

        async def change(schedule: ClientSchedule, now: datetime, booking: Booking) -> Change:
            course = _course(schedule)
            if course.standing == "paused":
                return await self._replanned(calendar, schedule, now, booking)
            if course.standing == "ended":
                raise Refused("the course has ended: nothing is resumed")
            if course.standing != "on_review":
                raise Refused("the course is not paused or on review")
            if course.review_for is None:
                return pausing.resumed(schedule, course.plan, (), now)
            missed = DropSession(appointment_id=course.review_for)
            replan = await self._replan(calendar, schedule, missed, now, booking)
            if isinstance(replan, PlanFailure):  # the missed dose no longer fits its window
                return self._closed_incomplete(schedule, replan, now, booking, [])
            updated, events = lifecycle.replanned(schedule, replan, now)
            updated, more = pausing.resumed(updated, replan.plan, replan.added, now, told=True)
            return updated, events + more

        return await self._for_client(clinic_id, client_id, "course-resumed", change)

    async def _replanned(
        self, calendar: ClinicCalendar, schedule: ClientSchedule, now: datetime, booking: Booking
    ) -> Change:
        course = course_of(schedule)
        tag = f"resume-v{schedule.version}"
        for _ in range(BOOKING_ATTEMPTS):
            own = [a.appointment_id for a in course.plan.appointments]
            bookings = await self.store.bookings(
                calendar, schedule.client_id, now, COURSE_HORIZON_DAYS + 42, own
            )
            planned = pausing.resume_plan(calendar, bookings, course, now, tag)
            if isinstance(planned, PlanFailure):
                raise Refused(planned.reason)
            plan, added = planned
            if await self.reserved(booking, claims_for(schedule.client_id, added)):
                return pausing.resumed(schedule, plan, added, now)
        raise Refused("the calendar keeps changing; retry")


def _course(schedule: ClientSchedule) -> Course:
    """The client's course; a client who never had one has no course to act on (404)."""
    if schedule.course is None:
        raise Missing("the client has no course")
    return schedule.course
