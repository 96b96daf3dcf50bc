"""A client's schedule and how it moves: consultation, course, sessions, boosters.

Pure: every function takes the time it needs and returns the new schedule with
the events it causes; the handlers and the API persist and publish them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, TypedDict
from uuid import UUID

from services.scheduler.domain.boosters import BoosterDueAt, next_booster_due
from services.scheduler.domain.checkin import completion_refusal
from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.plans import CoursePlan, Replan
from services.scheduler.domain.schedule import ClientSchedule, Course, Refused
from shared import events as ev
from shared.events import AppointmentKind as Kind
from shared.events import AppointmentStatus as Status


class _Base(TypedDict):
    clinic_id: str
    client_id: UUID
    occurred_at: datetime


def _base(schedule: ClientSchedule, now: datetime) -> _Base:
    return {"clinic_id": schedule.clinic_id, "client_id": schedule.client_id, "occurred_at": now}


def stage(
    schedule: ClientSchedule, reached: ev.ClientStage, now: datetime
) -> ev.ClientStageReached:
    return ev.ClientStageReached(**_base(schedule, now), stage=reached)


def status_changed(
    schedule: ClientSchedule, appointment: ev.Appointment, status: Status, now: datetime
) -> ev.AppointmentStatusChanged:
    return ev.AppointmentStatusChanged(
        **_base(schedule, now),
        appointment_id=appointment.appointment_id,
        kind=appointment.kind,
        status=status,
        starts_at=appointment.starts_at,
        ends_at=appointment.ends_at,
    )


def course_booked(
    schedule: ClientSchedule, plan: CoursePlan, now: datetime
) -> tuple[ClientSchedule, list[ev.Event]]:
    updated = schedule.model_copy(update={"course": Course(plan=plan)})
    booked = ev.CourseBooked(
        **_base(schedule, now),
        course_id=plan.course_id,
        therapist_id=plan.therapist_id,
        window_ends_on=plan.window_ends_on,
        appointments=plan.appointments,
    )
    events: list[ev.Event] = [booked, stage(schedule, ev.ClientStage.COURSE_BOOKED, now)]
    events += [status_changed(schedule, a, Status.BOOKED, now) for a in plan.appointments]
    return updated, events


def _course(schedule: ClientSchedule) -> Course:
    if schedule.course is None:
        raise Refused("the client has no course")
    return schedule.course


def _with_status(schedule: ClientSchedule, appointment_id: UUID, status: Status) -> ClientSchedule:
    course = _course(schedule)
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
    course = _course(schedule)
    appointment = course.appointment(appointment_id)
    _require_booked(course, appointment)
    # Protocol rule 3: a non-zero item 9 alerts staff at once, whatever becomes of
    # the session, so the alert goes out with a refusal too.
    events: list[ev.Event] = []
    if phq9_item9:
        events.append(
            ev.ClinicalAlertRaised(
                **_base(schedule, now),
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
    if appointment.kind == Kind.MEDICINE and not ride_home_confirmed:
        # Protocol rule 8: no confirmed ride, no session; it is proposed for rescheduling.
        raise Refused("no confirmed ride home: the session cannot be held; reschedule it", events)
    updated = _with_status(schedule, appointment_id, Status.FULFILLED)
    events += [
        ev.SessionCompleted(
            **_base(schedule, now),
            course_id=course.plan.course_id,
            appointment_id=appointment_id,
            kind=appointment.kind,
            dose_number=appointment.dose_number,
            ride_home_confirmed=ride_home_confirmed,
            phq9_total=phq9_total,
        ),
        status_changed(schedule, appointment, Status.FULFILLED, now),
    ]
    done = _course(updated)
    complete = done.doses_held() >= calendar.policy.medicine_sessions
    if done.completed_at is None and done.standing != "ended" and complete:
        updated, more = _complete_course(updated, calendar, now)
        events += more
    return updated, events


def _complete_course(
    schedule: ClientSchedule, calendar: ClinicCalendar, now: datetime
) -> tuple[ClientSchedule, list[ev.Event]]:
    course = _course(schedule).model_copy(update={"completed_at": now})
    schedule = schedule.model_copy(update={"course": course})
    completed = ev.CourseCompleted(
        **_base(schedule, now),
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


def set_booster_plan(
    schedule: ClientSchedule, plan: ev.BoosterPlan, calendar: ClinicCalendar, now: datetime
) -> tuple[ClientSchedule, list[ev.Event]]:
    """Set or change the plan; its dates count from the course's completion.

    Boosters are numbered in the order they are announced, each number once per
    course: after booster 1, a changed plan's next booster is booster 2, on the
    new plan's first date still ahead.
    """
    course = _course(schedule)
    if course.completed_at is None or course.standing == "ended":
        raise Refused("boosters follow a completed course, not one that has ended")
    upcoming = next_booster_due(
        course.completed_at, plan, calendar.tz, now, calendar.policy.booster_due_local_time
    )
    course = course.model_copy(
        update={
            "booster_plan": plan,
            "boosters_stopped": False,
            "next_booster": course.last_booster_announced() + 1 if upcoming else None,
            "next_booster_due_at": upcoming.due_at if upcoming else None,
        }
    )
    event = ev.BoosterPlanSet(
        **_base(schedule, now),
        course_id=course.plan.course_id,
        plan=plan,
        first_due_at=upcoming.due_at if upcoming else None,
    )
    return schedule.model_copy(update={"course": course}), [event]


def stop_boosters(
    schedule: ClientSchedule,
    reason: Literal["stopped_by_care_team", "discharged"],
    now: datetime,
) -> tuple[ClientSchedule, list[ev.Event]]:
    course = _course(schedule)
    if course.boosters_stopped:
        return schedule, []
    course = course.model_copy(
        update={"boosters_stopped": True, "next_booster": None, "next_booster_due_at": None}
    )
    stopped = ev.BoostersStopped(
        **_base(schedule, now),
        course_id=course.plan.course_id,
        reason=reason,
    )
    return schedule.model_copy(update={"course": course}), [
        stopped,
        stage(schedule, ev.ClientStage.BOOSTERS_STOPPED, now),
    ]


def booster_fired(
    schedule: ClientSchedule, number: int, calendar: ClinicCalendar, now: datetime
) -> tuple[ClientSchedule, list[ev.Event]]:
    """Announce booster `number` once, not before it is due, and arm the next one.

    A timer may fire for a booster that is no longer the one pending, or whose
    due time moved later (the plan changed after it was set): nothing then.
    """
    course = _course(schedule)
    if (
        course.next_booster != number
        or course.next_booster_due_at is None
        or course.booster_plan is None
        or course.boosters_stopped
        or course.standing == "ended"  # nothing after an ending (domain.endings)
        or now < course.next_booster_due_at
    ):
        return schedule, []  # already announced, not yet due, or the plan changed meanwhile
    due_at = course.next_booster_due_at
    upcoming: BoosterDueAt | None = next_booster_due(
        course.completed_at or due_at,
        course.booster_plan,
        calendar.tz,
        due_at,
        calendar.policy.booster_due_local_time,
    )
    course = course.model_copy(
        update={
            "boosters_announced": number,
            "next_booster": number + 1 if upcoming else None,
            "next_booster_due_at": upcoming.due_at if upcoming else None,
        }
    )
    due = ev.BoosterDue(
        **_base(schedule, now),
        course_id=course.plan.course_id,
        booster_number=number,
        due_at=due_at,
    )
    return schedule.model_copy(update={"course": course}), [
        due,
        stage(schedule, ev.ClientStage.BOOSTER_DUE, now),
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
    course = _course(schedule)
    appointment = course.appointment(appointment_id)
    _require_booked(course, appointment)
    if missed and now < appointment.starts_at:
        raise Refused("a session cannot be missed before it starts")
    status = Status.NOSHOW if missed else Status.CANCELLED
    updated = _with_status(schedule, appointment_id, status)
    ids = {"course_id": course.plan.course_id, "appointment_id": appointment_id}
    fact: ev.Event = (
        ev.SessionMissed(**_base(schedule, now), **ids, kind=appointment.kind)
        if missed
        else ev.SessionCancelled(**_base(schedule, now), **ids, kind=appointment.kind, late=late)
    )
    return updated, [fact, status_changed(schedule, appointment, status, now)]


def replanned(
    schedule: ClientSchedule, replan: Replan, now: datetime
) -> tuple[ClientSchedule, list[ev.Event]]:
    """The course after a reschedule: moved sessions and replacements for dropped ones."""
    course = _course(schedule)
    previous = {a.appointment_id: a for a in course.plan.appointments}
    off_plan = (*course.off_plan, *(previous[i] for i in replan.dropped if i in previous))
    updated = schedule.model_copy(
        update={"course": course.model_copy(update={"plan": replan.plan, "off_plan": off_plan})}
    )
    events: list[ev.Event] = []
    for moved in replan.rescheduled:
        events += [
            ev.SessionRescheduled(
                **_base(schedule, now),
                course_id=course.plan.course_id,
                appointment=moved,
                previous_starts_at=previous[moved.appointment_id].starts_at,
            ),
            status_changed(schedule, moved, Status.BOOKED, now),
        ]
    for added in replan.added:
        events += [
            ev.SessionScheduled(
                **_base(schedule, now),
                course_id=course.plan.course_id,
                appointment=added,
            ),
            status_changed(schedule, added, Status.BOOKED, now),
        ]
    return updated, events
