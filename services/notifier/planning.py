"""What an event's plan changes among the messages already planned (pure: no Redis).

plans.PlanStore reads what the plan touches, asks `resolve` which messages to
write and which pending ones they cancel, then writes that in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from services.notifier.model import CHANGE_NOTICE_KINDS, TIME_BOUND_KINDS, PlannedMessage
from services.notifier.pending import PendingNotice, supersede
from services.notifier.staleness import AppointmentFact
from shared.envelope import Envelope

# Messages about when an appointment takes place: wrong once it moves or is cancelled.
AHEAD_KINDS = TIME_BOUND_KINDS


@dataclass(frozen=True)
class Plan:
    """What one event makes the notifier send, and what it makes wrong."""

    cause: Envelope
    messages: Sequence[PlannedMessage]
    superseded_appointments: Sequence[UUID] = ()
    changed_at: datetime | None = None
    # What the event says about appointments (appointment_facts.appointment_facts).
    appointments: Sequence[AppointmentFact] = ()
    # Set by an event that tidies the client's records (tidy.py): when it happened.
    tidy_at: datetime | None = None
    # Whether a later tidy may take the event's handled mark (tidy.lists_input).
    listed: bool = False


@dataclass(frozen=True)
class Stored:
    """A message as planned earlier, read back to be replaced or cancelled."""

    notification_id: str
    state: str
    message: PlannedMessage
    changed_at: str | None
    version: str | None
    attempts: int = 0

    @property
    def pending(self) -> PendingNotice | None:
        if self.state != "planned" or self.changed_at is None:
            return None
        return PendingNotice(
            message=self.message,
            changed_at=datetime.fromisoformat(self.changed_at),
            version=int(self.version or 1),
        )


@dataclass
class Changes:
    writes: list[tuple[PlannedMessage, PendingNotice | None]] = field(default_factory=list)
    cancels: set[str] = field(default_factory=set)
    cleared_slots: list[str] = field(default_factory=list)


def resolve(
    plan: Plan, occupants: dict[str, Stored], superseded: list[Stored], exists: set[str]
) -> Changes:
    """Which messages to write and which pending ones they replace."""
    changes = Changes()
    for stored in superseded:
        if stored.state == "planned" and stored.message.kind in AHEAD_KINDS:
            changes.cancels.add(stored.notification_id)
    for message in plan.messages:
        if str(message.notification_id) in exists:
            continue  # planned when this event was handled before
        occupant = occupants.get(message.slot) if message.slot else None
        if message.slot is not None and message.kind in CHANGE_NOTICE_KINDS:
            pending = occupant.pending if occupant else None
            notice = supersede(pending, message, changed_at=plan.changed_at or message.send_at)
            if notice is None and occupant is not None:
                changes.cancels.add(occupant.notification_id)
                changes.cleared_slots.append(message.slot)
            elif notice is not None and notice is not pending:
                if occupant is not None and pending is not None:
                    changes.cancels.add(occupant.notification_id)
                changes.writes.append((notice.message, notice))
            continue
        if occupant is not None and occupant.state == "planned":
            changes.cancels.add(occupant.notification_id)
        changes.writes.append((message, None))
    return changes
