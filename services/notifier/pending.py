"""Collapsing rapid changes to one appointment into one notice (rule 13's grace period).

Intended use by planning (planning.resolve) and the sending loop:
- keep at most one PendingNotice per appointment id (the notice's `slot`);
- when `messages_for` plans a change notice (it is due `grace` after the
  change), store `supersede(stored, notice, changed_at=event.occurred_at)`,
  or delete the stored one when that returns None;
- when `due_at` has passed, send the notice only if the stored version is still
  the one read (compare-and-delete), so a change arriving mid-send wins.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.notifier.model import (
    CHANGE_NOTICE_KINDS,
    MessageKind,
    PlannedMessage,
    notification_id,
)


class PendingNotice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    message: PlannedMessage
    changed_at: AwareDatetime = Field(description="When the latest change happened")
    version: int = Field(default=1, ge=1, description="Bumped by every superseding change")

    @property
    def due_at(self) -> datetime:
        return self.message.send_at


def supersede(
    pending: PendingNotice | None, notice: PlannedMessage, *, changed_at: datetime
) -> PendingNotice | None:
    """The one notice left to send after `notice`; None when nothing is left to say.

    The latest change wins and restarts the grace period. A change older than
    the pending one (a replay out of order) leaves it as it is. A session booked
    and then moved before the client heard of it is announced once, as booked
    at its new time; booked and then cancelled, it is not announced at all.
    Moved twice before the client heard of the first move, it is announced as
    moved from the time they were last told (the first move's previous time),
    and not at all when it is back at that time.
    """
    if notice.kind not in CHANGE_NOTICE_KINDS or notice.appointment_id is None:
        raise ValueError(f"{notice.kind} is not a change notice about an appointment")
    if pending is None:
        return PendingNotice(message=notice, changed_at=changed_at)
    if pending.message.appointment_id != notice.appointment_id:
        raise ValueError("a pending notice is superseded only by one about the same appointment")
    if changed_at < pending.changed_at:
        return pending
    if pending.message.kind == MessageKind.SESSION_BOOKED:
        if notice.kind == MessageKind.SESSION_CANCELLED:
            return None
        if notice.kind == MessageKind.SESSION_RESCHEDULED:
            notice = _as_booking(notice)
    elif (
        pending.message.kind == MessageKind.SESSION_RESCHEDULED
        and notice.kind == MessageKind.SESSION_RESCHEDULED
    ):
        told = pending.message.context.get("previous_starts_at")
        if told == notice.context.get("starts_at"):
            return None
        notice = notice.model_copy(
            update={"context": {**notice.context, "previous_starts_at": told}}
        )
    return PendingNotice(message=notice, changed_at=changed_at, version=pending.version + 1)


def _as_booking(notice: PlannedMessage) -> PlannedMessage:
    kind = MessageKind.SESSION_BOOKED
    return notice.model_copy(
        update={
            "kind": kind,
            "notification_id": notification_id(
                notice.cause_event_id, kind, notice.channel, notice.recipient, notice.appointment_id
            ),
        }
    )
