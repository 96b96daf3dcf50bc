"""What the planner reads (bookings, changes) and what it answers (slots, plans, failures)."""

from __future__ import annotations

from datetime import date
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.scheduler.domain.clinic import Interval
from shared.events import Appointment, PreferredTime


class Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Bookings(Value):
    """Time already taken, as the store loaded it. The planner only reads it.

    It may include the appointments of the course being re-planned: those are recognised
    and ignored, so the store need not filter them out.
    """

    therapists: dict[str, tuple[Interval, ...]] = Field(default_factory=dict)
    rooms: dict[str, tuple[Interval, ...]] = Field(default_factory=dict)
    client: tuple[Interval, ...] = Field(default=(), description="The client's own bookings")


class Slot(Value):
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    therapist_id: str
    room_id: str | None = None


class CoursePlan(Value):
    course_id: UUID
    therapist_id: str = Field(description="The course's therapist (of the first dose if mixed)")
    window_ends_on: date = Field(description="Last clinic-local day of the course window")
    appointments: tuple[Appointment, ...] = Field(description="In time order")


class PlanFailure(Value):
    reason: str = Field(description="Human-readable, without PHI")
    earliest_fit_on: date | None = Field(
        default=None, description="Earliest clinic-local day a full plan would start"
    )


class MoveSession(Value):
    """The client or clinic moved one session of the course to a new start."""

    appointment_id: UUID
    new_starts_at: AwareDatetime


class DropSession(Value):
    """A session was missed or cancelled: the course still needs it, at a new time."""

    appointment_id: UUID


class Replan(Value):
    plan: CoursePlan
    rescheduled: tuple[Appointment, ...] = Field(description="Same id, new time or resources")
    added: tuple[Appointment, ...] = Field(description="Replacements for dropped sessions")
    dropped: tuple[UUID, ...] = ()


class ClientAvailability(Value):
    """When the client can come for course sessions: clinic-local weekly windows (none: any
    opening hour) and local dates they cannot come at all. Every session lies inside one."""

    weekly: tuple[PreferredTime, ...] = ()
    blocked_dates: frozenset[date] = frozenset()

    @property
    def limits(self) -> bool:
        return bool(self.weekly or self.blocked_dates)
