"""The notifier's vocabulary: message kinds, planned messages, and who may be reached how.

Pure values. A `PlannedMessage` carries no contact details (rule 14): the
sender looks up the client's address or phone, or the clinic's staff address,
only when it sends.
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
from shared.events import (
    AppointmentKind,
    AppointmentStatus,
    Channel,
    ClinicId,
    Contact,
    ContactPreferencesChanged,
    TimeZoneName,
)

Recipient = Literal["client", "staff"]

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
    CLINICAL_ALERT = "clinical_alert"


STAFF_KINDS = frozenset({MessageKind.CLINICAL_ALERT})
REMINDER_KINDS = frozenset({MessageKind.REMINDER_24H, MessageKind.REMINDER_2H})
# Notices about a change to one appointment: held for the grace period, and a
# later change to the same appointment replaces them (pending.py).
CHANGE_NOTICE_KINDS = frozenset(
    {MessageKind.SESSION_BOOKED, MessageKind.SESSION_RESCHEDULED, MessageKind.SESSION_CANCELLED}
)
# Messages about when an appointment takes place: untrue once it moves, is cancelled
# or has started, so checked against the latest known state when sent (delivery.py).
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


class AppointmentFact(_Frozen):
    """The notifier's own projection of one appointment, from the scheduler's events.

    `as_of` is the occurred_at of the event it comes from: topics are not
    ordered with each other, so an older fact never replaces a newer one.
    """

    appointment_id: UUID
    status: AppointmentStatus
    starts_at: AwareDatetime | None = Field(
        default=None, description="Unknown when only a cancellation or no-show was seen"
    )
    as_of: AwareDatetime

    def after(self, earlier: AppointmentFact | None) -> AppointmentFact:
        """This fact applied over `earlier`: the newer one wins, a known start is kept."""
        if earlier is None:
            return self
        if self.as_of < earlier.as_of:
            return earlier
        if self.starts_at is None and earlier.starts_at is not None:
            return self.model_copy(update={"starts_at": earlier.starts_at})
        return self


def staleness(
    message: PlannedMessage,
    fact: AppointmentFact | None,
    now: datetime,
    tz: ZoneInfo | None = None,
) -> str | None:
    """Why a time-bound message is no longer true at `now` (None: send it).

    Its session has started (a reminder "in 2 hours" read during the session),
    or the latest known state of its appointment says it was cancelled, missed,
    held, or moved to another time than the one the message announces, or it
    is too late to be useful: `now` is past halfway between the instant it was
    planned for and the start it announces (a "24 h" reminder more than 12 h
    late, a "2 h" one more than an hour late). The last also keeps the short
    gap between this check and the hand-over from ever reaching the start.
    Other messages are never stale here.
    """
    if message.kind not in TIME_BOUND_KINDS or message.appointment_id is None:
        return None
    # A plan stored before messages carried their start (the previous version's,
    # which wrote no projection either) falls back to the start its text announces.
    start = (
        message.refers_to
        or (announced_start(message, tz) if tz is not None else None)
        or (fact.starts_at if fact is not None else None)
    )
    if start is not None and now >= start:
        return "stale: the session had already started"
    if fact is not None:
        if fact.status != AppointmentStatus.BOOKED:
            return f"stale: the appointment is {fact.status.value}"
        if (
            message.refers_to is not None
            and fact.starts_at is not None
            and fact.starts_at != message.refers_to
        ):
            return "stale: the appointment moved"
    if start is not None and now >= halfway(message.send_at, start):
        return "stale: too late to be useful"
    return None


def announced_start(message: PlannedMessage, tz: ZoneInfo) -> datetime | None:
    """The start a message's text announces, `refers_to` or else read back from its context.

    The context holds it in clinic time as `context.clinic_time` writes it
    ("Tuesday 31 March 2026, 09:00 WEST"); the zone's abbreviation tells the two
    instants of a repeated hour apart. None when there is no such text.
    """
    if message.refers_to is not None:
        return message.refers_to
    text = message.context.get("starts_at")
    if not isinstance(text, str):
        return None
    wall, _, abbreviation = text.rpartition(" ")
    try:
        naive = datetime.strptime(wall, "%A %d %B %Y, %H:%M")  # the zone: below
    except ValueError:
        return None
    candidates = [naive.replace(tzinfo=tz, fold=fold) for fold in (0, 1)]
    for local in candidates:
        if local.tzname() == abbreviation:
            return local.astimezone(UTC)
    return candidates[0].astimezone(UTC)


def halfway(planned: datetime, start: datetime) -> datetime:
    """The last moment a message planned for `planned` about `start` is still worth sending."""
    return planned + (start - planned) / 2


class ContactPrefs(_Frozen):
    """What the notifier may use to reach a client; never the address or number itself."""

    preferred_channel: Channel = "email"
    sms_consent: bool = False
    has_phone: bool = False
    opted_out: frozenset[Channel] = frozenset()

    @classmethod
    def from_contact(
        cls, contact: Contact, opted_out: frozenset[Channel] = frozenset()
    ) -> ContactPrefs:
        """From a (repeated) consultation request; earlier opt-outs are kept."""
        return cls(
            preferred_channel=contact.preferred_channel,
            sms_consent=contact.sms_consent,
            has_phone=contact.phone is not None,
            opted_out=opted_out,
        )

    def updated(self, change: ContactPreferencesChanged) -> ContactPrefs:
        """Prefs after an opt-out (or opt back in); honoured from this moment."""
        opted_out = (
            self.opted_out | {change.channel}
            if change.opted_out
            else self.opted_out - {change.channel}
        )
        return self.model_copy(update={"opted_out": opted_out})

    def allows(self, channel: Channel) -> bool:
        if channel in self.opted_out:
            return False
        return channel == "email" or (self.sms_consent and self.has_phone)


def client_channel(prefs: ContactPrefs) -> Channel | None:
    """The preferred channel if allowed, else the other one if allowed, else None.

    SMS needs recorded consent and a phone (rule 14); an opted-out channel is
    never used. A client who opted out of email but consented to SMS gets SMS.
    """
    fallback: Channel = "sms" if prefs.preferred_channel == "email" else "email"
    for channel in (prefs.preferred_channel, fallback):
        if prefs.allows(channel):
            return channel
    return None


def readdress(message: PlannedMessage, prefs: ContactPrefs) -> PlannedMessage | None:
    """The message as it may be sent under today's prefs; call it just before sending.

    A client may opt out after a reminder was planned. The message keeps its
    channel while that is allowed, moves to the other channel (with that
    channel's notification id) when not, and is dropped (None) when neither is.
    Staff messages go unchanged.
    """
    if message.recipient == "staff" or prefs.allows(message.channel):
        return message
    channel = client_channel(prefs)
    if channel is None:
        return None
    return message.model_copy(
        update={
            "channel": channel,
            "notification_id": notification_id(
                message.cause_event_id, message.kind, channel, "client", message.appointment_id
            ),
        }
    )


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
    intake_record_path: str = Field(
        default="/clinics/{clinic_id}/clients/{client_id}/intake",
        description="Where staff open a client's record; {clinic_id} and {client_id} are filled in",
    )

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

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
