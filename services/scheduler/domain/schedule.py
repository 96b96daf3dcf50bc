"""A client's schedule as the scheduler records it: the consultation, the course, boosters.

The state every decision reads and every write step saves (ids and times only:
no contact data); how it moves is domain.lifecycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.scheduler.domain.booster_sessions import BoosterSessions, BoosterToBook
from services.scheduler.domain.checkin import CheckIn
from services.scheduler.domain.measure_state import ScheduledMeasure
from services.scheduler.domain.plans import ClientAvailability, CoursePlan
from shared import events as ev
from shared.events import AppointmentKind as Kind
from shared.events import AppointmentStatus as Status


class Refused(Exception):
    """The request makes no sense for this client's schedule (HTTP 409).

    `events` are facts the request brought that stand although it was refused
    (an urgent clinical alert): published, while the schedule stays as it was.
    """

    def __init__(self, reason: str, events: Sequence[ev.Event] = ()) -> None:
        super().__init__(reason)
        self.events = tuple(events)


class Missing(LookupError):
    """What the request names does not exist (HTTP 404, saying what is missing)."""


class Invalid(Refused):
    """A request whose `field` the clinic's rules refuse (HTTP 422 naming it)."""

    def __init__(self, field: str, reason: str, events: Sequence[ev.Event] = ()) -> None:
        super().__init__(reason, events)
        self.field = field


# active: booked and re-planned as usual; paused: nothing booked, the window frozen;
# on_review: held for a clinician after no-shows, keeping what is booked; ended: nothing
# is booked again (domain.endings).
Standing = Literal["active", "paused", "on_review", "ended"]


class Course(BaseModel):
    model_config = ConfigDict(frozen=True)

    plan: CoursePlan
    statuses: dict[str, Status] = Field(default_factory=dict)
    completed_at: AwareDatetime | None = None
    booster_plan: ev.BoosterPlan | None = None
    next_booster: int | None = Field(default=None, description="Number of the pending booster")
    next_booster_due_at: AwareDatetime | None = None
    boosters_stopped: bool = False
    boosters_announced: int = Field(
        default=0, ge=0, description="Number of the last booster announced (0: none yet)"
    )
    # Medicine sessions' check-ins and records, by appointment id (clinical data:
    # kept here, published on internal topics only).
    checkins: dict[str, CheckIn] = Field(default_factory=dict)
    records: dict[str, ev.SessionRecord] = Field(default_factory=dict)

    def checkin_for(self, appointment: ev.Appointment) -> CheckIn | None:
        """The check-in made for the session as it now stands (none once it moved)."""
        checkin = self.checkins.get(str(appointment.appointment_id))
        if checkin is None or checkin.for_starts_at != appointment.starts_at:
            return None
        return checkin

    # Added with endings (issue 16); schedules saved before read as an active course.
    standing: Standing = "active"
    off_plan: tuple[ev.Appointment, ...] = Field(
        default=(),
        description="Sessions taken out of the plan, kept on record: missed or cancelled "
        "and replaced, or released by a pause or an ending",
    )
    paused_days_left: int | None = Field(default=None, ge=0)
    review_for: UUID | None = Field(default=None, description="The no-show that held it")
    ended_at: AwareDatetime | None = None
    end_code: ev.CourseEndCode | None = None
    # Added with booked boosters (issue 16): each booster booked when it fell due.
    booster_sessions: tuple[BoosterSessions, ...] = ()
    # Added with announcing apart from booking (issue 19): announced, booking owed.
    boosters_to_book: tuple[BoosterToBook, ...] = ()
    # Added with measures (issue 17): the course's schedule of measures (domain.measures).
    measures: tuple[ScheduledMeasure, ...] = ()

    def booster_with(self, appointment_id: UUID) -> BoosterSessions | None:
        """The booked booster one of whose sessions this is, if any."""
        for booster in self.booster_sessions:
            if any(a.appointment_id == appointment_id for a in booster.appointments):
                return booster
        return None

    def status_of(self, appointment_id: UUID) -> Status:
        return self.statuses.get(str(appointment_id), Status.BOOKED)

    def appointment(self, appointment_id: UUID) -> ev.Appointment:
        boosters = (a for b in self.booster_sessions for a in b.appointments)
        for appointment in (*self.plan.appointments, *self.off_plan, *boosters):
            if appointment.appointment_id == appointment_id:
                return appointment
        raise Refused("the session is not part of this course")

    def last_booster_announced(self) -> int:
        # Schedules saved before `boosters_announced` existed still know it from
        # the pending booster's number.
        return max(self.boosters_announced, (self.next_booster or 1) - 1)

    def doses_held(self) -> int:
        return sum(
            1
            for a in self.plan.appointments
            if a.kind == Kind.MEDICINE and self.status_of(a.appointment_id) == Status.FULFILLED
        )


class ClientSchedule(BaseModel):
    """The scheduler's record of one client (ids and times only: no contact data)."""

    model_config = ConfigDict(frozen=True)

    clinic_id: str
    client_id: UUID
    correlation_id: str
    preferred_times: tuple[ev.PreferredTime, ...] = ()
    consultation: ev.Appointment | None = None
    consultation_status: Status | None = None
    course: Course | None = None
    # Set by the clinic (PUT .../availability): where course sessions may lie.
    availability: ClientAvailability | None = None
    consultation_rebooks: int = Field(
        default=0, ge=0, description="Consultations rebooked after a no-show (domain.waitlist)"
    )
    previous_courses: tuple[UUID, ...] = Field(
        default=(), description="Courses completed or ended before this one, oldest first"
    )
    # Added with outcomes (issue 17): those courses themselves, so their cohort keeps them.
    finished_courses: tuple[Course, ...] = ()
    # Goes up by one with every saved change: what the ids of a change derive from
    # (domain.ids). Schedules saved before it existed read as version 0.
    version: int = Field(default=0, ge=0)

    def course_availability(self, consultation_times_too: bool) -> ClientAvailability | None:
        """Where the client's course sessions may lie: their own availability, else (if the
        clinic says so) the windows they gave for the consultation; None: anywhere."""
        if self.availability is not None:
            return self.availability
        if consultation_times_too and self.preferred_times:
            return ClientAvailability(weekly=self.preferred_times)
        return None
