"""What a scheduling event says about appointments, for the notifier's checks at send time.

`appointment_facts`: the appointments an event books, moves, cancels, misses or
completes, as the facts (staleness.AppointmentFact) a time-bound message is
checked against when it falls due. `superseded_appointments`: the appointments
whose pending messages an event replaces (a move, a cancellation).
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from services.notifier.staleness import AppointmentFact
from shared import events as ev


def appointment_facts(event: ev.Event) -> tuple[AppointmentFact, ...]:
    """What `event` says about appointments: the notifier's projection of the schedule.

    Time-bound messages are checked against it when they are sent.
    """
    booked, status = ev.AppointmentStatus.BOOKED, ev.AppointmentStatus

    def fact(
        appointment_id: UUID, state: ev.AppointmentStatus, starts_at: datetime | None = None
    ) -> AppointmentFact:
        return AppointmentFact(
            appointment_id=appointment_id,
            status=state,
            starts_at=starts_at,
            as_of=event.occurred_at,
        )

    match event:
        case ev.ConsultationBooked() | ev.SessionScheduled() | ev.SessionRescheduled():
            appt = event.appointment
            return (fact(appt.appointment_id, booked, appt.starts_at),)
        case ev.CourseBooked() | ev.BoosterSessionBooked():
            return tuple(fact(a.appointment_id, booked, a.starts_at) for a in event.appointments)
        case ev.SessionCancelled() | ev.ConsultationCancelled():
            return (fact(event.appointment_id, status.CANCELLED),)
        case ev.SessionMissed():
            return (fact(event.appointment_id, status.NOSHOW),)
        case ev.SessionCompleted():
            return (fact(event.appointment_id, status.FULFILLED),)
    return ()


def superseded_appointments(event: ev.Event) -> tuple[UUID, ...]:
    """Appointments whose pending messages `event` makes wrong: drop them before storing its plan.

    A moved session's old reminders would otherwise still fire at the old
    times (a new plan may skip a reminder that is now too late), and a
    cancelled session must not be reminded of.
    """
    match event:
        case ev.SessionRescheduled():
            return (event.appointment.appointment_id,)
        case ev.SessionCancelled() | ev.ConsultationCancelled():
            return (event.appointment_id,)
    return ()
