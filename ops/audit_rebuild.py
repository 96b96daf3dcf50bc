"""Every appointment's history, rebuilt from the scheduler's events alone.

The auditor must not trust what the scheduler stores (its ledger refuses
overlaps by construction, so reading it back can never show one). Instead it
replays the facts on the topics, in the order they happened, and keeps each
appointment's successive states. A state change bumps the appointment's
*version*; a republished fact that changes nothing does not, so a message
planned from either belongs to the same version.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from shared import topics

if TYPE_CHECKING:
    from ops.audit import Record

BOOKED, FULFILLED, CANCELLED, NOSHOW = "booked", "fulfilled", "cancelled", "noshow"
LIVE = frozenset({BOOKED, FULFILLED})  # held or still to be held: they occupy their time

SCHEDULE_TOPICS = frozenset(
    {
        topics.CONSULTATION_BOOKED.name,
        topics.COURSE_BOOKED.name,
        topics.SESSION_SCHEDULED.name,
        topics.SESSION_RESCHEDULED.name,
        topics.SESSION_CANCELLED.name,
        topics.SESSION_MISSED.name,
        topics.SESSION_COMPLETED.name,
        topics.PUBLIC_APPOINTMENT_STATUS.name,
        topics.COURSE_PAUSED.name,
        topics.COURSE_RESUMED.name,
    }
)
_STATUS_OF = {
    topics.SESSION_CANCELLED.name: CANCELLED,
    topics.SESSION_MISSED.name: NOSHOW,
    topics.SESSION_COMPLETED.name: FULFILLED,
}


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def occurred(record: Record) -> datetime:
    """When the fact happened: the event's own time, not when Kafka received it."""
    return instant(record.value.get("occurred_at") or record.time)


@dataclass(frozen=True)
class State:
    starts_at: datetime
    ends_at: datetime
    status: str
    kind: str
    therapist: str | None
    room: str | None


@dataclass
class Appointment:
    appointment_id: str
    client: str
    clinic: str
    course_id: str | None = None
    # (when, version, state), in the order the facts happened
    history: list[tuple[datetime, int, State]] = field(default_factory=list)
    moved_outside_window: bool = False  # the last move said the course window could not hold it

    @property
    def final(self) -> State:
        return self.history[-1][2]

    @property
    def version(self) -> int:
        return self.history[-1][1] if self.history else 0

    def at(self, when: datetime) -> State | None:
        """The state as it stood at `when` (facts at that very instant included)."""
        current = None
        for at, _, state in self.history:
            if at > when:
                break
            current = state
        return current

    def version_at(self, when: datetime) -> int:
        """The version that stood at `when` (0 before the appointment was known)."""
        version = 0
        for at, number, _ in self.history:
            if at > when:
                break
            version = number
        return version

    def current_since(self) -> datetime:
        """When the appointment got its final start time (the last move or the booking)."""
        final = self.final
        since = self.history[-1][0]
        for at, _, state in reversed(self.history):
            if state.starts_at != final.starts_at:
                break
            since = at
        return since


@dataclass(frozen=True)
class Course:
    course_id: str
    client: str
    clinic: str
    window_ends_on: date  # the latest said: at booking, or at a resume after a pause
    # (paused at, resumed at): a pause freezes the window, a resume carries it on later
    pauses: tuple[tuple[datetime, datetime], ...] = ()
    paused_at: datetime | None = None
    paused_before_window: bool = False  # paused before its first dose: the window not open
    # A pause before the first dose restarts the window: it opens at the first dose
    # booked after the resume.
    window_from: datetime | None = None


@dataclass
class Rebuilt:
    appointments: dict[str, Appointment] = field(default_factory=dict)
    courses: dict[str, Course] = field(default_factory=dict)
    # (record index, appointment id) -> the appointment's version after that record
    version_after: dict[tuple[int, str], int] = field(default_factory=dict)
    # (record index, appointment id) -> the state that record left the appointment in
    state_after: dict[tuple[int, str], State] = field(default_factory=dict)


def rebuild(records: list[Record]) -> Rebuilt:
    """Replay the scheduling facts among `records` (indexes are positions in that list)."""
    rebuilt = Rebuilt()
    # At one instant the partner feed's copy goes last: the scheduler's own fact
    # carries the therapist and room, the public one only echoes the status.
    ordered = sorted(
        (occurred(r), r.topic == topics.PUBLIC_APPOINTMENT_STATUS.name, i)
        for i, r in enumerate(records)
        if r.topic in SCHEDULE_TOPICS
    )
    for when, _, index in ordered:
        _apply(rebuilt, index, records[index], when)
    return rebuilt


def _apply(rebuilt: Rebuilt, index: int, record: Record, when: datetime) -> None:
    value, topic = record.value, record.topic
    clinic = str(value.get("clinic_id", ""))
    course_id = value.get("course_id")
    if topic == topics.COURSE_BOOKED.name:
        rebuilt.courses[str(course_id)] = Course(
            str(course_id), record.key, clinic, date.fromisoformat(value["window_ends_on"])
        )
        for appointment in value["appointments"]:
            _set(rebuilt, index, record, when, appointment, BOOKED, course_id)
    elif topic == topics.COURSE_PAUSED.name and str(course_id) in rebuilt.courses:
        course = rebuilt.courses[str(course_id)]
        not_open = value.get("window_days_left") is None
        rebuilt.courses[str(course_id)] = replace(
            course, paused_at=when, paused_before_window=not_open
        )
    elif topic == topics.COURSE_RESUMED.name and str(course_id) in rebuilt.courses:
        course = rebuilt.courses[str(course_id)]
        pauses, window_from = course.pauses, course.window_from
        if course.paused_at and course.paused_before_window:
            window_from = when
        elif course.paused_at:
            pauses = (*course.pauses, (course.paused_at, when))
        rebuilt.courses[str(course_id)] = replace(
            course,
            window_ends_on=date.fromisoformat(value["window_ends_on"]),
            pauses=pauses,
            paused_at=None,
            paused_before_window=False,
            window_from=window_from,
        )
    elif topic in (topics.CONSULTATION_BOOKED.name, topics.SESSION_SCHEDULED.name):
        _set(rebuilt, index, record, when, value["appointment"], BOOKED, course_id)
    elif topic == topics.SESSION_RESCHEDULED.name:
        moved = _set(rebuilt, index, record, when, value["appointment"], BOOKED, course_id)
        moved.moved_outside_window = not value.get("within_window", True)
    elif topic in _STATUS_OF:
        known = rebuilt.appointments.get(str(value["appointment_id"]))
        if known is not None and known.history:
            last = known.final
            change = {**last.__dict__, "status": _STATUS_OF[topic]}
            _push(rebuilt, index, known, when, State(**change))
    elif topic == topics.PUBLIC_APPOINTMENT_STATUS.name:
        # The partner feed is the only place a consultation's outcome shows as a status.
        appointment_id = str(value["appointment_id"])
        known = rebuilt.appointments.get(appointment_id)
        if known is None:
            known = rebuilt.appointments[appointment_id] = Appointment(
                appointment_id, record.key, clinic
            )
        last_state = known.final if known.history else None
        _push(
            rebuilt,
            index,
            known,
            when,
            State(
                instant(value["starts_at"]),
                instant(value["ends_at"]),
                str(value["status"]),
                str(value["kind"]),
                last_state.therapist if last_state else None,
                last_state.room if last_state else None,
            ),
        )


def _set(
    rebuilt: Rebuilt,
    index: int,
    record: Record,
    when: datetime,
    appointment: dict[str, Any],
    status: str,
    course_id: Any,
) -> Appointment:
    appointment_id = str(appointment["appointment_id"])
    known = rebuilt.appointments.get(appointment_id)
    if known is None:
        known = rebuilt.appointments[appointment_id] = Appointment(
            appointment_id, record.key, str(record.value.get("clinic_id", ""))
        )
    if course_id is not None:
        known.course_id = str(course_id)
    state = State(
        instant(appointment["starts_at"]),
        instant(appointment["ends_at"]),
        status,
        str(appointment["kind"]),
        appointment.get("therapist_id"),
        appointment.get("room_id"),
    )
    _push(rebuilt, index, known, when, state)
    return known


def _push(rebuilt: Rebuilt, index: int, appt: Appointment, when: datetime, state: State) -> None:
    version = appt.version
    if not appt.history or appt.final != state:
        version += 1
    appt.history.append((when, version, state))
    rebuilt.version_after[(index, appt.appointment_id)] = version
    rebuilt.state_after[(index, appt.appointment_id)] = state
