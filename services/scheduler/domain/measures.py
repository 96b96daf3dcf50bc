"""The schedule of measures of a course (protocol rules 3, 21), as the clinic's policy says.

PHQ-9 and GAD-7 (CoursePolicy.measures; a point left out is switched off) are asked:
- before each dose (the course's medicine sessions and booked booster sessions):
  opening `pre_dose_hours` (48) before its start, or when the session was planned
  if that is later, and closing at its start;
- at the end of the course: opening at the last dose's completion (the course's),
  closing `end_of_course_days` (7) later;
- 1, 3 and 6 months after the last dose: the same day of the month on the clinic's
  calendar (or that month's last day), at `follow_up_local_time` (09:00) on the
  wall clock whatever DST says, closing `follow_up_days` (14) later, at that hour.

An id names exactly one fact and is the same on every replay of it, so a replay
publishes the same MeasureDue:
- a pre-dose measure is named by its course, its session and the start it
  precedes: a session moved to another start is another measure with a window of
  its own (the old one is withdrawn unless it was sent already); moved back, it is
  the first one again;
- the end of course and each follow-up by their course and point (a course
  completes once).

`replanned` derives the schedule from the course as it stands, whatever door
changed it: what was sent, answered or lapsed stays on record; a pending measure
whose dose is no longer booked, or whose point the clinic switched off, is
withdrawn; nothing is planned after a course ended but the end-of-course and
follow-up measures of a course that completed, and nothing that is closed already.
`fired` decides a timer: a measure is sent once, only while open and unanswered.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from uuid import UUID, uuid5
from zoneinfo import ZoneInfo

from services.scheduler.domain.boosters import add_months
from services.scheduler.domain.clinic import MeasurePolicy
from services.scheduler.domain.facts import base
from services.scheduler.domain.measure_state import MeasureState, ScheduledMeasure
from services.scheduler.domain.schedule import ClientSchedule, Course
from shared import events as ev
from shared.events import AppointmentKind as Kind
from shared.events import AppointmentStatus as Status
from shared.events import MeasurePoint as Point

FOLLOW_UPS = {Point.MONTH_1: 1, Point.MONTH_3: 3, Point.MONTH_6: 6}


class Answer(NamedTuple):
    """A measure answered, as the measure log keeps it (measure_log.MeasureEntry)."""

    measure_id: UUID | None
    point: str | None
    authored: datetime


def measure_id(course_id: UUID, point: Point, session: ev.Appointment | None = None) -> UUID:
    if session is None:
        return uuid5(course_id, f"measure/{point}")
    start = f"{session.starts_at.timestamp():.0f}"
    return uuid5(course_id, f"measure/{point}/{session.appointment_id}/{start}")


def replanned(
    schedule: ClientSchedule, policy: MeasurePolicy, tz: ZoneInfo, now: datetime
) -> ClientSchedule:
    """The schedule with its course's measures as the course now stands."""
    course = schedule.course
    if course is None:
        return schedule
    earlier = {m.measure_id: m for m in course.measures}
    kept = [m for m in course.measures if m.state != "pending"]
    for wanted in _wanted(course, policy, tz, now, earlier):
        before = earlier.get(wanted.measure_id)
        if before is not None and before.state != "pending":
            continue  # on record already
        if before is None and wanted.closes_at <= now:
            continue
        kept.append(wanted)
    measures = tuple(sorted(kept, key=lambda m: (m.opens_at, str(m.measure_id))))
    if measures == course.measures:
        return schedule
    return schedule.model_copy(update={"course": course.model_copy(update={"measures": measures})})


def pending(schedule: ClientSchedule | None) -> list[ScheduledMeasure]:
    """The measures whose timers wait."""
    if schedule is None or schedule.course is None:
        return []
    return [m for m in schedule.course.measures if m.state == "pending"]


def fired(
    schedule: ClientSchedule,
    due_ids: Iterable[UUID],
    answers: Sequence[Answer],
    policy: MeasurePolicy,
    tz: ZoneInfo,
    now: datetime,
) -> tuple[ClientSchedule, list[ev.MeasureDue]]:
    """The timers of `due_ids` fired: each measure still pending and open is sent once; one
    answered meanwhile is not, nor one that closed before its timer fired."""
    schedule = replanned(schedule, policy, tz, now)
    course = schedule.course
    if course is None:
        return schedule, []
    wanted, due = set(due_ids), []
    measures = list(course.measures)
    for index, measure in enumerate(measures):
        if measure.measure_id not in wanted or measure.state != "pending" or now < measure.opens_at:
            continue  # withdrawn, settled, or not open yet (its timer is armed again)
        state: MeasureState = "sent"
        if answered(measure, answers):
            state = "answered"
        elif now >= measure.closes_at:
            state = "lapsed"
        else:
            due.append(_due(schedule, course, measure, now))
        measures[index] = measure.model_copy(update={"state": state})
    updated = course.model_copy(update={"measures": tuple(measures)})
    return schedule.model_copy(update={"course": updated}), due


def overdue(
    course: Course, session: ev.Appointment, answers: Sequence[Answer], now: datetime
) -> bool:
    """Whether the pre-dose measure of `session`, as it now starts, opened and is unanswered."""
    wanted = measure_id(course.plan.course_id, Point.PRE_DOSE, session)
    for measure in course.measures:
        if measure.measure_id == wanted:
            return (
                measure.state in ("pending", "sent")
                and measure.opens_at <= now
                and not answered(measure, answers)
            )
    return False


def answered(measure: ScheduledMeasure, answers: Sequence[Answer]) -> bool:
    """Answered by its link, or by answers entered for no measure inside its window."""
    return any(
        answer.measure_id == measure.measure_id
        or (
            answer.measure_id is None
            and answer.point in (None, measure.point)
            and measure.opens_at <= answer.authored < measure.closes_at
        )
        for answer in answers
    )


def _wanted(
    course: Course,
    policy: MeasurePolicy,
    tz: ZoneInfo,
    now: datetime,
    earlier: dict[UUID, ScheduledMeasure],
) -> Iterator[ScheduledMeasure]:
    course_id, instruments = course.plan.course_id, policy.instruments
    if Point.PRE_DOSE in policy.points and course.standing != "ended":
        for session in _doses(course):
            if course.status_of(session.appointment_id) != Status.BOOKED:
                continue
            pre_dose = measure_id(course_id, Point.PRE_DOSE, session)
            planned_at = earlier[pre_dose].planned_at if pre_dose in earlier else now
            opens = session.starts_at - timedelta(hours=policy.pre_dose_hours)
            yield ScheduledMeasure(
                measure_id=pre_dose,
                point=Point.PRE_DOSE,
                instruments=instruments,
                opens_at=max(opens, planned_at),
                closes_at=session.starts_at,
                planned_at=planned_at,
                appointment_id=session.appointment_id,
                dose_number=session.dose_number,
            )
    completed = course.completed_at
    if completed is None:
        return
    windows: list[tuple[Point, datetime, datetime]] = []
    if Point.END_OF_COURSE in policy.points:
        closes = _days_later(completed, policy.end_of_course_days, tz)
        windows.append((Point.END_OF_COURSE, completed, closes))
    for point, months in FOLLOW_UPS.items():
        if point in policy.points:
            day = add_months(completed.astimezone(tz).date(), months)
            opens = datetime.combine(day, policy.follow_up_local_time, tzinfo=tz).astimezone(UTC)
            windows.append((point, opens, _days_later(opens, policy.follow_up_days, tz)))
    for point, opens, closes in windows:
        follow_up = measure_id(course_id, point)
        planned_at = earlier[follow_up].planned_at if follow_up in earlier else now
        yield ScheduledMeasure(
            measure_id=follow_up,
            point=point,
            instruments=instruments,
            opens_at=opens,
            closes_at=closes,
            planned_at=planned_at,
        )


def _doses(course: Course) -> list[ev.Appointment]:
    boosters = (a for b in course.booster_sessions for a in b.appointments)
    return [
        a for a in (*course.plan.appointments, *boosters) if a.kind in (Kind.MEDICINE, Kind.BOOSTER)
    ]


def _days_later(instant: datetime, days: int, tz: ZoneInfo) -> datetime:
    """`days` clinic-local days after `instant`, at the same wall-clock time."""
    local = instant.astimezone(tz)
    wall = local.replace(tzinfo=None) + timedelta(days=days)
    return wall.replace(tzinfo=tz).astimezone(UTC)


def _due(
    schedule: ClientSchedule, course: Course, measure: ScheduledMeasure, now: datetime
) -> ev.MeasureDue:
    return ev.MeasureDue(
        **base(schedule, now),
        measure_id=measure.measure_id,
        course_id=course.plan.course_id,
        point=measure.point,
        instruments=measure.instruments,
        opens_at=measure.opens_at,
        closes_at=measure.closes_at,
        dose_number=measure.dose_number,
        appointment_id=measure.appointment_id,
    )
