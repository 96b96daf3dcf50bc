"""Whether a time-bound message is still true when it is sent.

A reminder or session instructions announce when an appointment takes place;
by the time they go out the appointment may have moved, been cancelled or
held, or started. The notifier keeps its own projection of each appointment
from the scheduler's events (`AppointmentFact`), and the sender asks
`staleness` just before handing a message over (handover.py). Pure: no I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.notifier.model import TIME_BOUND_KINDS, PlannedMessage
from shared.events import AppointmentStatus


class AppointmentFact(BaseModel):
    """The notifier's own projection of one appointment, from the scheduler's events.

    `as_of` is the occurred_at of the event it comes from: topics are not
    ordered with each other, so an older fact never replaces a newer one.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

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
