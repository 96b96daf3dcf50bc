"""The notifier's vocabulary: message kinds, planned messages and clinic settings.

Pure values. A `PlannedMessage` carries no contact details (rule 14): the
sender looks up the client's address or phone, or the clinic's staff address,
only when it sends (how it may reach them: prefs.py). Whether a message is
still true when sent is staleness.py's.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal
from uuid import UUID
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, field_validator

from services.notifier.reminders import DEFAULT_SEND_WINDOW, GRACE, SendWindow
from shared.envelope import EVENT_ID_NAMESPACE
from shared.events import AppointmentKind, Channel, ClinicId, TimeZoneName

Recipient = Literal["client", "staff", "on_call"]
STAFF_RECIPIENTS: frozenset[Recipient] = frozenset({"staff", "on_call"})  # the clinic's

NOTIFICATION_NAMESPACE = uuid.uuid5(EVENT_ID_NAMESPACE, "kap/notifier/notification")

# Rule 14: never in an SMS or an email subject. Whole words, any case; "medicine"
# and "dose" are here because they reveal a drug treatment to whoever sees the screen.
PHI_TERMS = (
    "ketamine", "esketamine", "spravato", "ketalar", "psychedelic", "medicine", "medication",
    "dose", "dosing", "depression", "depressive", "psychosis", "psychotic", "mania", "manic",
    "bipolar", "ptsd", "anxiety", "phq", "gad", "suicide", "suicidal", "self-harm",
)  # fmt: skip
_PHI_PATTERN = re.compile(r"\b(?:" + "|".join(map(re.escape, PHI_TERMS)) + r")\b", re.IGNORECASE)


def phi_terms_in(text: str) -> list[str]:
    """The rule-14 terms found in `text`, lower-cased; empty when it may be shown."""
    return [match.lower() for match in _PHI_PATTERN.findall(text)]


class MessageKind(StrEnum):
    CONSULTATION_REQUEST_RECEIVED = "consultation_request_received"
    CONSULTATION_SLOT_UNAVAILABLE = "consultation_slot_unavailable"
    CONSULTATION_BOOKED = "consultation_booked"
    CONSULTATION_WAITLISTED = "consultation_waitlisted"
    CONSULTATION_SLOT_OFFERED = "consultation_slot_offered"
    CONSULTATION_CANCELLED = "consultation_cancelled"
    SCREENING_OUTCOME = "screening_outcome"
    COURSE_BOOKED = "course_booked"
    SESSION_BOOKED = "session_booked"
    SESSION_INSTRUCTIONS = "session_instructions"
    REMINDER_24H = "reminder_24h"
    REMINDER_2H = "reminder_2h"
    SESSION_RESCHEDULED = "session_rescheduled"
    SESSION_CANCELLED = "session_cancelled"
    SESSION_MISSED = "session_missed"
    INTEGRATION_FOLLOW_UP = "integration_follow_up"
    COURSE_COMPLETED = "course_completed"
    BOOSTER_DUE = "booster_due"
    BOOSTER_SESSION_BOOKED = "booster_session_booked"
    CLINICAL_ALERT = "clinical_alert"
    CLINICAL_ALERT_ESCALATION = "clinical_alert_escalation"
    COURSE_PAUSED = "course_paused"
    COURSE_RESUMED = "course_resumed"
    COURSE_ENDED = "course_ended"
    CHECK_IN_REFUSED = "check_in_refused"
    MEASURE_REQUEST = "measure_request"


STAFF_KINDS = frozenset({MessageKind.CLINICAL_ALERT, MessageKind.CLINICAL_ALERT_ESCALATION})
REMINDER_KINDS = frozenset({MessageKind.REMINDER_24H, MessageKind.REMINDER_2H})
# Notices about a change to one appointment: held for the grace period, and a
# later change to the same appointment replaces them (pending.py).
CHANGE_NOTICE_KINDS = frozenset(
    {MessageKind.SESSION_BOOKED, MessageKind.SESSION_RESCHEDULED, MessageKind.SESSION_CANCELLED}
)
# Messages about when an appointment takes place: untrue once it moves, is cancelled
# or has started, so checked against the latest known state when sent (staleness.py).
TIME_BOUND_KINDS = REMINDER_KINDS | {MessageKind.SESSION_INSTRUCTIONS}
# Boosters are medicine sessions too: the same instructions and follow-up apply.
DOSING_KINDS = frozenset({AppointmentKind.MEDICINE, AppointmentKind.BOOSTER})


def notification_id(
    cause_event_id: str,
    kind: MessageKind,
    channel: Channel,
    recipient: Recipient,
    appointment_id: UUID | None = None,
) -> UUID:
    """Stable across replays of the cause, so a redelivered event plans the same messages."""
    key = f"{cause_event_id}/{kind}/{channel}/{recipient}/{appointment_id or '-'}"
    return uuid.uuid5(NOTIFICATION_NAMESPACE, key)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PlannedMessage(_Frozen):
    """One message to send at `send_at`; JSON-safe so a store can keep it as it is."""

    notification_id: UUID
    cause_event_id: str
    clinic_id: str
    client_id: UUID
    kind: MessageKind
    channel: Channel
    recipient: Recipient
    send_at: AwareDatetime = Field(description="UTC; the planning instant for immediate messages")
    appointment_id: UUID | None = Field(
        default=None, description="Set on messages about one appointment, so they can be replaced"
    )
    refers_to: AwareDatetime | None = Field(
        default=None,
        description="The appointment start the message announces, as planned (UTC); what a "
        "time-bound message is checked against when sent",
    )
    context: dict[str, JsonValue] = Field(
        description="Template variables, times already in clinic time; no contact data"
    )

    @field_validator("send_at", "refers_to")
    @classmethod
    def _in_utc(cls, instant: datetime | None) -> datetime | None:
        return instant.astimezone(UTC) if instant is not None else None

    @property
    def slot(self) -> str | None:
        """Store key for replaceable messages: one per appointment and kind, one change notice.

        A newer plan for the same slot replaces the pending one. None for
        messages that are not about one appointment.
        """
        if self.appointment_id is None:
            return None
        name = "notice" if self.kind in CHANGE_NOTICE_KINDS else str(self.kind)
        return f"{self.appointment_id}/{name}"


class ClinicSettings(_Frozen):
    """One clinic's notification policy (rule defaults apply where it says nothing)."""

    clinic_id: ClinicId
    name: str = Field(
        min_length=1, description="Shown in SMS and subjects, so it must name no drug or diagnosis"
    )
    timezone: TimeZoneName
    send_window: SendWindow = DEFAULT_SEND_WINDOW
    reminder_leads: dict[MessageKind, timedelta] = Field(
        default_factory=lambda: {
            MessageKind.REMINDER_24H: timedelta(hours=24),
            MessageKind.REMINDER_2H: timedelta(hours=2),
        },
        description="Leave a kind out to switch that reminder off",
    )
    instructions_lead: timedelta = timedelta(hours=48)
    grace: timedelta = GRACE
    alert_escalation_after: timedelta = Field(
        default=timedelta(minutes=15),
        gt=timedelta(0),
        description="An urgent alert unacknowledged this long goes to the on-call contact",
    )
    intake_record_path: str = Field(
        default="/clinics/{clinic_id}/clients/{client_id}/intake",
        description="Where staff open a client's record; {clinic_id} and {client_id} are filled in",
    )

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def escalation_minutes(self) -> int:
        return int(self.alert_escalation_after.total_seconds() // 60)

    @field_validator("name")
    @classmethod
    def _name_reveals_no_treatment(cls, name: str) -> str:
        if found := phi_terms_in(name):
            raise ValueError(f"clinic name is shown in SMS and subjects; it must not say {found}")
        return name

    @field_validator("send_window")
    @classmethod
    def _window_opens_before_it_closes(cls, window: SendWindow) -> SendWindow:
        if window.start >= window.end:
            raise ValueError("the send window must open before it closes")
        return window

    @field_validator("reminder_leads")
    @classmethod
    def _leads_are_reminders(
        cls, leads: dict[MessageKind, timedelta]
    ) -> dict[MessageKind, timedelta]:
        if wrong := set(leads) - REMINDER_KINDS:
            raise ValueError(f"not reminder kinds: {sorted(wrong)}")
        if any(lead <= timedelta(0) for lead in leads.values()):
            raise ValueError("reminder leads must be positive")
        return leads
