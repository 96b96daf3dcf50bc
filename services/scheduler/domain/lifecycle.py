"""A client's course and how it moves: booked, sessions held, missed, cancelled or
re-planned, and completed (which starts its boosters: domain.booster_lifecycle).

Pure: every function takes the time it needs and returns the new schedule with
the events it causes; the handlers and the API persist and publish them.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from services.scheduler.domain.booster_lifecycle import set_booster_plan
from services.scheduler.domain.checkin import DOSING, completion_refusal
from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.facts import base, course_of, stage, status_changed
from services.scheduler.domain.plans import CoursePlan, Replan
from services.scheduler.domain.schedule import ClientSchedule, Course, Refused
from shared import events as ev
from shared.events import AppointmentStatus as Status


def course_booked(
    schedule: ClientSchedule, plan: CoursePlan, now: datetime
) -> tuple[ClientSchedule, list[ev.Event]]:
    updated = schedule.model_copy(update={"course": Course(plan=plan)})
    booked = ev.CourseBooked(
        **base(schedule, now),
        course_id=plan.course_id,
        therapist_id=plan.therapist_id,
        window_ends_on=plan.window_ends_on,
        appointments=plan.appointments,
    )
    events: list[ev.Event] = [booked, stage(schedule, ev.ClientStage.COURSE_BOOKED, now)]
    events += [status_changed(schedule, a, Status.BOOKED, now) for a in plan.appointments]
    return updated, events


def _with_status(schedule: ClientSchedule, appointment_id: UUID, status: Status) -> ClientSchedule:
    course = course_of(schedule)
    statuses = {**course.statuses, str(appointment_id): status}
    return schedule.model_copy(update={"course": course.model_copy(update={"statuses": statuses})})


def _require_booked(course: Course, appointment: ev.Appointment) -> None:
    status = course.status_of(appointment.appointment_id)
    if status != Status.BOOKED:
        raise Refused(f"the session is already {status.value}")


def complete_session(
    schedule: ClientSchedule,
    appointment_id: UUID,
    *,
    ride_home_confirmed: bool,
    phq9_total: int | None,
    phq9_item9: int | None,
    calendar: ClinicCalendar,
    now: datetime,
) -> tuple[ClientSchedule, list[ev.Event]]:
    course = course_of(schedule)
    appointment = course.appointment(appointment_id)
    _require_booked(course, appointment)
    # Protocol rule 3: a non-zero item 9 alerts staff at once, whatever becomes of
    # the session, so the alert goes out with a refusal too.
    events: list[ev.Event] = []
    if phq9_item9:
        events.append(
            ev.ClinicalAlertRaised(
                **base(schedule, now),
                reason="phq9_item9_positive",
                phq9_item9=phq9_item9,
                raised_during="session",
            )
        )
    if now < appointment.starts_at:
        raise Refused("a session cannot be completed before it starts", events)
    no_checkin = completion_refusal(
        appointment, course.checkin_for(appointment), calendar.policy.checkin
    )
    if no_checkin:
        raise Refused(no_checkin, events)
    if appointment.kind in DOSING and not ride_home_confirmed:
        # Protocol rule 8: no confirmed ride, no session; it is proposed for rescheduling.
        raise Refused("no confirmed ride home: the session cannot be held; reschedule it", events)
    updated = _with_status(schedule, appointment_id, Status.FULFILLED)
    events += [
        ev.SessionCompleted(
            **base(schedule, now),
            course_id=course.plan.course_id,
            appointment_id=appointment_id,
            kind=appointment.kind,
            dose_number=appointment.dose_number,
            ride_home_confirmed=ride_home_confirmed,
            phq9_total=phq9_total,
        ),
        status_changed(schedule, appointment, Status.FULFILLED, now),
    ]
    done = course_of(updated)
    complete = done.doses_held() >= calendar.policy.medicine_sessions
    if done.completed_at is None and done.standing != "ended" and complete:
        updated, more = _complete_course(updated, calendar, now)
        events += more
    return updated, events


def _complete_course(
    schedule: ClientSchedule, calendar: ClinicCalendar, now: datetime
) -> tuple[ClientSchedule, list[ev.Event]]:
    course = course_of(schedule).model_copy(update={"completed_at": now})
    schedule = schedule.model_copy(update={"course": course})
    completed = ev.CourseCompleted(
        **base(schedule, now),
        course_id=course.plan.course_id,
        medicine_sessions_completed=course.doses_held(),
    )
    plan_set: list[ev.Event] = []
    # The care team stopped boosters during the course: the clinic's default plan
    # must not start them again behind its back (setting a plan later still can).
    if not course.boosters_stopped:
        schedule, plan_set = set_booster_plan(schedule, calendar.policy.booster, calendar, now)
    return schedule, [
        completed,
        stage(schedule, ev.ClientStage.COURSE_COMPLETED, now),
        *plan_set,
    ]


def session_dropped(
    schedule: ClientSchedule,
    appointment_id: UUID,
    *,
    missed: bool,
    late: bool,
    now: datetime,
) -> tuple[ClientSchedule, list[ev.Event]]:
    """A no-show or a cancellation: the session is over; the course may need it again."""
    course = course_of(schedule)
    appointment = course.appointment(appointment_id)
    _require_booked(course, appointment)
    if missed and now < appointment.starts_at:
        raise Refused("a session cannot be missed before it starts")
    status = Status.NOSHOW if missed else Status.CANCELLED
    updated = _with_status(schedule, appointment_id, status)
    ids = {"course_id": course.plan.course_id, "appointment_id": appointment_id}
    fact: ev.Event = (
        ev.SessionMissed(**base(schedule, now), **ids, kind=appointment.kind)
        if missed
        else ev.SessionCancelled(**base(schedule, now), **ids, kind=appointment.kind, late=late)
    )
    return updated, [fact, status_changed(schedule, appointment, status, now)]


def replanned(
    schedule: ClientSchedule, replan: Replan, now: datetime
) -> tuple[ClientSchedule, list[ev.Event]]:
    """The course after a reschedule: moved sessions and replacements for dropped ones."""
    course = course_of(schedule)
    previous = {a.appointment_id: a for a in course.plan.appointments}
    off_plan = (*course.off_plan, *(previous[i] for i in replan.dropped if i in previous))
    updated = schedule.model_copy(
        update={"course": course.model_copy(update={"plan": replan.plan, "off_plan": off_plan})}
    )
    events: list[ev.Event] = []
    for moved in replan.rescheduled:
        events += [
            ev.SessionRescheduled(
                **base(schedule, now),
                course_id=course.plan.course_id,
                appointment=moved,
                previous_starts_at=previous[moved.appointment_id].starts_at,
            ),
            status_changed(schedule, moved, Status.BOOKED, now),
        ]
    for added in replan.added:
        events += [
            ev.SessionScheduled(
                **base(schedule, now),
                course_id=course.plan.course_id,
                appointment=added,
            ),
            status_changed(schedule, added, Status.BOOKED, now),
        ]
    return updated, events
