"""Which messages a domain event causes, to whom, on which channel, and when.

Timing, by kind of message:
- the clinical alert goes to staff by email at once, whatever the hour (rule 3);
- replies to something the client or clinic just did (request received, booking
  confirmed, a consultation cancelled) go at once: delaying them helps nobody;
- change notices about one appointment (booked, rescheduled, cancelled) wait
  for the clinic's grace period, so rapid changes collapse (pending.py);
- reminders and session instructions go inside the send window before the
  session (reminders.reminder_send_at); everything else (a measure request
  from when its measure opens) goes at the next moment inside the window.

Intended use by the handler: look up the client's ContactPrefs (the default
ContactPrefs() when none are known), drop the pending messages of
`superseded_appointments(event)`, then store what `messages_for` returns,
keyed by `PlannedMessage.slot` when it has one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from pydantic import JsonValue

from services.notifier import context, course_notices
from services.notifier.model import (
    DOSING_KINDS,
    ClinicSettings,
    MessageKind,
    PlannedMessage,
    Recipient,
    notification_id,
)
from services.notifier.prefs import ContactPrefs, client_channel
from services.notifier.reminders import next_in_window, next_morning, reminder_send_at
from shared import events as ev

Variables = Mapping[str, JsonValue]

Kind = MessageKind


def messages_for(
    event: ev.Event,
    contact_prefs: ContactPrefs,
    clinic_settings: ClinicSettings,
    now: datetime,
    *,
    cause_event_id: str,
) -> list[PlannedMessage]:
    """Every message `event` causes; none for events that tell nobody anything.

    `cause_event_id` is the event's envelope id: the notification ids derive
    from it, so planning a redelivered event again yields the same ids.
    """
    if event.clinic_id != clinic_settings.clinic_id:
        raise ValueError(
            f"event of clinic {event.clinic_id} planned with {clinic_settings.clinic_id}"
        )
    plan = _Plan(event, contact_prefs, clinic_settings, now, cause_event_id)
    tz = clinic_settings.tz
    match event:
        case ev.ConsultationRequested():
            plan.client(
                Kind.CONSULTATION_REQUEST_RECEIVED, now, {"repeat_request": event.repeat_request}
            )
        case ev.ConsultationBookingFailed():
            earliest = event.earliest_available_at
            plan.client(
                Kind.CONSULTATION_SLOT_UNAVAILABLE,
                now,
                {"earliest_available": context.clinic_time(earliest, tz) if earliest else None},
            )
        case ev.ConsultationWaitlisted():
            earliest = event.earliest_available_at
            waiting: Variables = {
                "position": event.position,
                "earliest_available": context.clinic_time(earliest, tz) if earliest else None,
            }
            plan.client(Kind.CONSULTATION_WAITLISTED, now, waiting)
        case ev.ConsultationSlotOffered():
            offered = {
                **context.appointment(event.appointment, tz),
                "expires_at": context.clinic_time(event.expires_at, tz),
                "accept_url": event.accept_url,
            }
            plan.client(Kind.CONSULTATION_SLOT_OFFERED, now, offered)
        case ev.ConsultationBooked():
            plan.client(Kind.CONSULTATION_BOOKED, now, context.appointment(event.appointment, tz))
            plan.ahead_of(event.appointment)
        case ev.ConsultationCancelled():
            # At once, as its booking was confirmed: the client may be planning to come.
            cancelled = {
                "session_label": context.SESSION_LABELS[ev.AppointmentKind.CONSULTATION],
                "starts_at": context.clinic_time(event.starts_at, tz),
            }
            plan.client(Kind.CONSULTATION_CANCELLED, now, cancelled, event.appointment_id)
        case ev.ConsultationHeld() if event.outcome == "no_show":
            missed = {"session_label": context.SESSION_LABELS[ev.AppointmentKind.CONSULTATION]}
            plan.client(Kind.SESSION_MISSED, plan.in_window(now), missed)
        case ev.ScreeningCompleted():
            # Eligible or not, and nothing more: the reasons stay with the clinic (rule 14).
            plan.client(Kind.SCREENING_OUTCOME, plan.in_window(now), {"eligible": event.eligible})
        case ev.ClinicalAlertRaised():
            plan.clinical_alert(event)
        case ev.CourseBooked():
            course = context.course(event.appointments, event.window_ends_on, tz)
            plan.client(Kind.COURSE_BOOKED, now, course)
            for appt in event.appointments:
                plan.ahead_of(appt)
        case ev.BoosterSessionBooked():
            plan.client(Kind.BOOSTER_SESSION_BOOKED, now, context.booster(event, tz))
            for appt in event.appointments:
                plan.ahead_of(appt)
        case ev.SessionScheduled():
            booked = context.appointment(event.appointment, tz)
            plan.change_notice(
                Kind.SESSION_BOOKED,
                event.appointment.appointment_id,
                booked,
                event.appointment.starts_at,
            )
            plan.ahead_of(event.appointment)
        case ev.SessionRescheduled():
            moved = {
                **context.appointment(event.appointment, tz),
                "previous_starts_at": context.clinic_time(event.previous_starts_at, tz),
                "within_window": event.within_window,
            }
            plan.change_notice(
                Kind.SESSION_RESCHEDULED,
                event.appointment.appointment_id,
                moved,
                event.appointment.starts_at,
            )
            plan.ahead_of(event.appointment)
        case ev.SessionCancelled():
            cancelled = {"session_label": context.SESSION_LABELS[event.kind]}
            plan.change_notice(Kind.SESSION_CANCELLED, event.appointment_id, cancelled)
        case ev.SessionMissed():
            missed = {"session_label": context.SESSION_LABELS[event.kind]}
            plan.client(Kind.SESSION_MISSED, plan.in_window(now), missed, event.appointment_id)
        case ev.SessionCompleted() if event.kind in DOSING_KINDS:
            # The morning after, when the effects have long passed.
            send_at = max(now, plan.morning_after(event.occurred_at))
            follow_up = {"dose_number": event.dose_number}
            plan.client(Kind.INTEGRATION_FOLLOW_UP, send_at, follow_up, event.appointment_id)
        case ev.CourseCompleted():
            completed = {"medicine_sessions_completed": event.medicine_sessions_completed}
            plan.client(Kind.COURSE_COMPLETED, plan.in_window(now), completed)
        case ev.BoosterDue():
            due: Variables = {
                "booster_number": event.booster_number,
                "due_at": context.clinic_time(event.due_at, tz),
            }
            plan.client(Kind.BOOSTER_DUE, plan.in_window(max(now, event.due_at)), due)
        case ev.MeasureDue():
            send_at = plan.in_window(max(now, event.opens_at))
            measure = context.measure(event, tz)
            plan.client(Kind.MEASURE_REQUEST, send_at, measure, event.appointment_id)
        case ev.CoursePaused() | ev.CourseResumed() | ev.CourseEnded() | ev.SessionCheckedIn():
            if notice := course_notices.notice_for(event, clinic_settings):
                plan.client(notice.kind, plan.in_window(now), notice.context, notice.appointment_id)
    return plan.messages


@dataclass
class _Plan:
    event: ev.Event
    prefs: ContactPrefs
    clinic: ClinicSettings
    now: datetime
    cause_event_id: str
    messages: list[PlannedMessage] = field(default_factory=list)

    def client(
        self,
        kind: Kind,
        send_at: datetime,
        ctx: Variables,
        appointment_id: UUID | None = None,
        refers_to: datetime | None = None,
    ) -> None:
        channel = client_channel(self.prefs)
        if channel is not None:
            self._add(kind, channel, "client", send_at, ctx, appointment_id, refers_to)

    def change_notice(
        self,
        kind: Kind,
        appointment_id: UUID,
        ctx: Variables,
        refers_to: datetime | None = None,
    ) -> None:
        self.client(kind, self.now + self.clinic.grace, ctx, appointment_id, refers_to)

    def clinical_alert(self, alert: ev.ClinicalAlertRaised) -> None:
        # Staff learn only why (item 9 non-zero, blood pressure over the limit, a severe
        # adverse event) and when, never the scores or measurements (rule 14).
        record = self.clinic.intake_record_path.format(
            clinic_id=alert.clinic_id, client_id=alert.client_id
        )
        ctx: Variables = {
            "client_id": str(alert.client_id),
            "intake_record_path": record,
            "raised_during": alert.raised_during,
            "reason": alert.reason,
            "raised_at": context.clinic_time(alert.occurred_at, self.clinic.tz),
        }
        self._add(Kind.CLINICAL_ALERT, "email", "staff", self.now, ctx, None)
        # Someone must own it: unless acknowledged by then (alerts.Alerts), it goes to the
        # on-call contact, whatever the hour (staff kinds keep no send window).
        escalation: Variables = {
            **ctx,
            "alert_id": self.cause_event_id,
            "raised_at_utc": alert.occurred_at.isoformat(),
            "waited_minutes": self.clinic.escalation_minutes,
        }
        at = self.now + self.clinic.alert_escalation_after
        self._add(Kind.CLINICAL_ALERT_ESCALATION, "email", "on_call", at, escalation, None)

    def ahead_of(self, appt: ev.Appointment) -> None:
        """Reminders and, for dosing sessions, instructions before `appt`.

        Every caller also sends a confirmation with the time now, so a reminder
        that could only go out now (too late for its own time) is dropped.
        Instructions are never dropped while the session is ahead: rule 9 says
        the client is told, so late ones go at the next window moment, or at
        once if the window opens only after the session starts.
        """
        if appt.starts_at <= self.now:
            return
        tz, window = self.clinic.tz, self.clinic.send_window
        for kind, lead in self.clinic.reminder_leads.items():
            send_at = reminder_send_at(appt.starts_at, lead, tz, window, now=self.now)
            if send_at is not None and send_at > self.now:
                ctx = context.appointment(appt, tz)
                self.client(kind, send_at, ctx, appt.appointment_id, appt.starts_at)
        if appt.kind in DOSING_KINDS:
            lead = self.clinic.instructions_lead
            send_at = reminder_send_at(appt.starts_at, lead, tz, window, now=self.now)
            if send_at is None:
                next_moment = self.in_window(self.now)
                send_at = next_moment if next_moment < appt.starts_at else self.now
            instructions = context.instructions(appt, tz)
            self.client(
                Kind.SESSION_INSTRUCTIONS,
                send_at,
                instructions,
                appt.appointment_id,
                appt.starts_at,
            )

    def in_window(self, instant: datetime) -> datetime:
        return next_in_window(instant, self.clinic.tz, self.clinic.send_window)

    def morning_after(self, instant: datetime) -> datetime:
        return next_morning(instant, self.clinic.tz, self.clinic.send_window)

    def _add(
        self,
        kind: Kind,
        channel: ev.Channel,
        recipient: Recipient,
        send_at: datetime,
        ctx: Variables,
        appointment_id: UUID | None,
        refers_to: datetime | None = None,
    ) -> None:
        message_id = notification_id(self.cause_event_id, kind, channel, recipient, appointment_id)
        self.messages.append(
            PlannedMessage(
                notification_id=message_id,
                cause_event_id=self.cause_event_id,
                clinic_id=self.event.clinic_id,
                client_id=self.event.client_id,
                kind=kind,
                channel=channel,
                recipient=recipient,
                send_at=send_at,
                appointment_id=appointment_id,
                refers_to=refers_to,
                context={"clinic_name": self.clinic.name, **ctx},
            )
        )
