"""A medicine session's check-in and record, as they move a client's schedule.

Pure, like domain.lifecycle: each function returns the new schedule and the
events it causes. Alerts for staff stand even when the request is refused
(they ride on the Refused, see schedule.Refused).
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from services.scheduler.domain import checkin as rules
from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.schedule import ClientSchedule, Course, Invalid, Refused
from shared import events as ev
from shared.events import AppointmentStatus as Status


def _medicine_session(
    schedule: ClientSchedule, appointment_id: UUID
) -> tuple[Course, ev.Appointment]:
    course = schedule.course
    if course is None:
        raise Refused("the client has no course")
    appointment = course.appointment(appointment_id)
    if appointment.kind not in rules.DOSING:
        raise Refused("check-in and the session record are for medicine sessions")
    return course, appointment


def check_in(
    schedule: ClientSchedule,
    appointment_id: UUID,
    answers: ev.CheckInAnswers,
    calendar: ClinicCalendar,
    now: datetime,
) -> tuple[ClientSchedule, list[ev.Event]]:
    """Record the check-in; a refused one leaves the session booked but proposed for
    rescheduling (nothing is re-planned: staff move or cancel it)."""
    policy = calendar.policy.checkin
    course, appointment = _medicine_session(schedule, appointment_id)
    alerts: list[ev.Event] = list(
        rules.checkin_alerts(
            answers,
            policy,
            clinic_id=schedule.clinic_id,
            client_id=schedule.client_id,
            appointment_id=appointment_id,
            now=now,
        )
    )
    status = course.status_of(appointment_id)
    if status != Status.BOOKED:
        raise Refused(f"the session is already {status.value}", alerts)
    early_or_late = rules.checkin_window_refusal(appointment, policy, now)
    if early_or_late:
        raise Refused(early_or_late, alerts)
    earlier = course.checkin_for(appointment)
    if earlier is not None and earlier.answers == answers:
        return schedule, []  # the same check-in sent again (a retry): recorded already
    if earlier is not None:
        verdict = "passed" if earlier.passed else "refused"
        raise Refused(f"the session was already checked in ({verdict})", alerts)
    refused_for = rules.refusals(answers, policy)
    record = rules.CheckIn(
        answers=answers,
        checked_in_at=now,
        for_starts_at=appointment.starts_at,
        refused_for=refused_for,
    )
    checkins = {**course.checkins, str(appointment_id): record}
    updated = schedule.model_copy(
        update={"course": course.model_copy(update={"checkins": checkins})}
    )
    base = {"clinic_id": schedule.clinic_id, "client_id": schedule.client_id, "occurred_at": now}
    facts: list[ev.Event] = [
        ev.SessionCheckedIn(
            **base,
            course_id=course.plan.course_id,
            appointment_id=appointment_id,
            starts_at=appointment.starts_at,
            passed=record.passed,
            refused_for=refused_for,
            answers=answers,
        ),
        ev.AppointmentCheckedIn(
            **base,
            appointment_id=appointment_id,
            kind=appointment.kind,
            starts_at=appointment.starts_at,
            outcome="passed" if record.passed else "refused",
            refused_for=refused_for,
        ),
    ]
    return updated, facts + alerts


def record_session(
    schedule: ClientSchedule,
    appointment_id: UUID,
    record: ev.SessionRecord,
    calendar: ClinicCalendar,
    now: datetime,
) -> tuple[ClientSchedule, list[ev.Event]]:
    """Keep the session's record (one per session); a severe adverse event alerts staff
    at once, even if the record itself is refused."""
    policy = calendar.policy.checkin
    course, appointment = _medicine_session(schedule, appointment_id)
    alerts: list[ev.Event] = list(
        rules.record_alerts(
            record,
            clinic_id=schedule.clinic_id,
            client_id=schedule.client_id,
            appointment_id=appointment_id,
            now=now,
        )
    )
    earlier = course.records.get(str(appointment_id))
    if earlier == record:
        return schedule, []  # the same record sent again (a retry): kept already
    if earlier is not None:
        raise Refused("the session already has its record", alerts)
    status = course.status_of(appointment_id)
    if status not in (Status.BOOKED, Status.FULFILLED):
        raise Refused(f"the session is {status.value}: there is nothing to record", alerts)
    checkin = course.checkin_for(appointment)
    missing = rules.completion_refusal(appointment, checkin, policy)
    if missing:
        raise Refused(missing, alerts)
    problem = rules.record_problem(record, checkin, policy, now)
    if problem:
        raise Invalid(*problem, alerts)
    records = {**course.records, str(appointment_id): record}
    updated = schedule.model_copy(update={"course": course.model_copy(update={"records": records})})
    recorded = ev.SessionRecorded(
        clinic_id=schedule.clinic_id,
        client_id=schedule.client_id,
        occurred_at=now,
        course_id=course.plan.course_id,
        appointment_id=appointment_id,
        dose_number=appointment.dose_number,
        record=record,
    )
    return updated, [recorded, *alerts]
