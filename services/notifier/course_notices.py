"""What a client is told when their course pauses, resumes or ends, or a check-in is refused.

Neutral words (rule 14): no reason code, measurement or clinician's note reaches
the client; the clinic explains in person. The sessions a pause or an ending
releases, and those a resumption books, each get their own notice too
(SessionCancelled / SessionScheduled): these messages speak of the course.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from pydantic import JsonValue

from services.notifier import context
from services.notifier.model import ClinicSettings, MessageKind
from shared import events as ev


@dataclass(frozen=True)
class Notice:
    kind: MessageKind
    context: dict[str, JsonValue]
    appointment_id: UUID | None = None


def notice_for(event: ev.Event, clinic: ClinicSettings) -> Notice | None:
    """The one client message `event` causes, if any (sent at the next window moment)."""
    tz = clinic.tz
    match event:
        case ev.CoursePaused():
            return Notice(MessageKind.COURSE_PAUSED, {"sessions_released": event.sessions_released})
        case ev.CourseResumed():
            return Notice(
                MessageKind.COURSE_RESUMED,
                context.course(event.appointments, event.window_ends_on, tz),
            )
        case ev.CourseEnded():
            # Withdrawn, discharged or closed incomplete: the same neutral words to the client.
            ended: dict[str, JsonValue] = {
                "medicine_sessions_completed": event.medicine_sessions_completed
            }
            return Notice(MessageKind.COURSE_ENDED, ended)
        case ev.SessionCheckedIn() if not event.passed:
            refused: dict[str, JsonValue] = {
                "session_label": context.SESSION_LABELS[ev.AppointmentKind.MEDICINE],
                "starts_at": context.clinic_time(event.starts_at, tz),
            }
            return Notice(MessageKind.CHECK_IN_REFUSED, refused, event.appointment_id)
    return None
