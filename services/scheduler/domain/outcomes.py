"""One client's PHQ-9 over a course: the baseline, each follow-up, change, response, remission.

Pure. A course has started once its first dose was held; it has ended once it
completed (its last dose held, `completed_at`) or ended early (withdrawn,
discharged or closed incomplete, `ended_at`). Then:
- baseline: the last PHQ-9 authored before the first dose started (the enrolment
  measure when none is newer); a measure named for another course is not this
  course's;
- each follow-up point: the first PHQ-9 answered for it (named by point, for
  this course); failing that, the first PHQ-9 named for no point inside its
  window (`follow_up_windows`);
- change: the point's score less the baseline (negative: better);
- response: a drop of at least 50% from a baseline of 5 or more (a baseline
  under 5 cannot respond); remission: a score under 5. A course ended early
  counts as neither, whatever its scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

from services.scheduler.domain.course import MEDICINE
from services.scheduler.domain.schedule import Course
from shared.events import AppointmentStatus as Status
from shared.events import CourseEndCode, MeasurePoint

END_OF_COURSE, MONTH_1, MONTH_3, MONTH_6 = (
    MeasurePoint.END_OF_COURSE,
    MeasurePoint.MONTH_1,
    MeasurePoint.MONTH_3,
    MeasurePoint.MONTH_6,
)
FOLLOW_UPS = (END_OF_COURSE, MONTH_1, MONTH_3, MONTH_6)
RESPONSE_BASELINE_FLOOR = 5
REMISSION_BELOW = 5
END_OF_COURSE_DAYS = 7  # rule 21: within 7 days after the last dose
MONTH_DAYS = 30  # "1, 3 and 6 months after" the course's end, as 30, 90 and 180 days
MONTHS = {MONTH_1: 1, MONTH_3: 3, MONTH_6: 6}
MONTH_EARLY_DAYS, MONTH_LATE_DAYS = 7, 14  # a month's window around its day

Ending = Literal["in_progress", "completed", "ended_early"]


@dataclass(frozen=True)
class Measure:
    """One answered measure as the scheduler keeps it (measure_log)."""

    key: str
    authored: datetime
    point: MeasurePoint | None = None
    course_id: UUID | None = None
    measure_id: UUID | None = None
    source: str | None = None
    phq9: int | None = None
    gad7: int | None = None


@dataclass(frozen=True)
class Window:
    opens: datetime
    closes: datetime

    def holds(self, instant: datetime) -> bool:
        return self.opens <= instant <= self.closes


@dataclass(frozen=True)
class PointOutcome:
    point: MeasurePoint
    window: Window | None  # None while the course is in progress
    measure: Measure | None
    change: int | None
    responded: bool
    remitted: bool

    @property
    def score(self) -> int | None:
        return self.measure.phq9 if self.measure else None


@dataclass(frozen=True)
class CourseOutcome:
    course_id: UUID
    first_dose_at: datetime
    ending: Ending
    ended_at: datetime | None  # completed_at, or ended_at for a course ended early
    end_code: CourseEndCode | None
    baseline: Measure | None
    points: tuple[PointOutcome, ...]

    @property
    def ended_early(self) -> bool:
        return self.ending == "ended_early"

    def at(self, point: MeasurePoint) -> PointOutcome:
        return next(p for p in self.points if p.point == point)


def doses_held(course: Course) -> list[datetime]:
    """The starts of the medicine doses held, in time order."""
    sessions = (*course.plan.appointments, *course.off_plan)
    return sorted(
        a.starts_at
        for a in sessions
        if a.kind is MEDICINE and course.status_of(a.appointment_id) == Status.FULFILLED
    )


def follow_up_windows(last_dose: datetime, end: datetime) -> dict[MeasurePoint, Window]:
    """End of course: from the last dose to 7 days after the end; month N: from 7 days
    before to 14 days after N x 30 days from the end."""
    windows = {END_OF_COURSE: Window(last_dose, end + timedelta(days=END_OF_COURSE_DAYS))}
    for point, months in MONTHS.items():
        due = end + timedelta(days=months * MONTH_DAYS)
        windows[point] = Window(
            due - timedelta(days=MONTH_EARLY_DAYS), due + timedelta(days=MONTH_LATE_DAYS)
        )
    return windows


def course_outcome(course: Course, measures: Sequence[Measure]) -> CourseOutcome | None:
    """The course's outcomes from the client's measures; None until its first dose is held."""
    doses = doses_held(course)
    if not doses:
        return None
    course_id = course.plan.course_id
    own = sorted(
        (m for m in measures if m.phq9 is not None and m.course_id in (None, course_id)),
        key=lambda m: m.authored,
    )
    before = [m for m in own if m.authored < doses[0]]
    baseline = before[-1] if before else None
    ending, ended_at = _ending(course)
    windows = follow_up_windows(doses[-1], ended_at) if ended_at else {}
    # A point the course scheduled stays open as long as its link does (calendar months
    # at a local hour; the windows above are only the span unnamed answers fall in).
    for scheduled in course.measures:
        if (window := windows.get(scheduled.point)) is not None:
            windows[scheduled.point] = Window(
                min(window.opens, scheduled.opens_at), max(window.closes, scheduled.closes_at)
            )
    points = []
    for point in FOLLOW_UPS:
        window = windows.get(point)
        measure = _taken_for(point, window, own, course_id, doses[0])
        points.append(_scored(point, window, measure, baseline, ending == "ended_early"))
    return CourseOutcome(
        course_id=course_id,
        first_dose_at=doses[0],
        ending=ending,
        ended_at=ended_at,
        end_code=course.end_code if ending == "ended_early" else None,
        baseline=baseline,
        points=tuple(points),
    )


def _ending(course: Course) -> tuple[Ending, datetime | None]:
    if course.completed_at is not None:  # discharged after completing: still completed
        return "completed", course.completed_at
    if course.standing == "ended" and course.ended_at is not None:
        return "ended_early", course.ended_at
    return "in_progress", None


def _taken_for(
    point: MeasurePoint,
    window: Window | None,
    own: Sequence[Measure],
    course_id: UUID,
    first_dose: datetime,
) -> Measure | None:
    """The first measure named for `point` of this course (or of no course, once the
    course started), else the first named for no point inside the window."""
    for measure in own:
        ours = measure.course_id == course_id or measure.authored >= first_dose
        if measure.point == point and ours:
            return measure
    if window is None:
        return None
    return next((m for m in own if m.point is None and window.holds(m.authored)), None)


def _scored(
    point: MeasurePoint,
    window: Window | None,
    measure: Measure | None,
    baseline: Measure | None,
    ended_early: bool,
) -> PointOutcome:
    score = measure.phq9 if measure else None
    first = baseline.phq9 if baseline else None
    change = score - first if score is not None and first is not None else None
    responded = (
        score is not None
        and first is not None
        and first >= RESPONSE_BASELINE_FLOOR
        and 2 * score <= first  # a drop of at least half the baseline
    )
    remitted = score is not None and score < REMISSION_BELOW
    return PointOutcome(
        point=point,
        window=window,
        measure=measure,
        change=change,
        responded=responded and not ended_early,
        remitted=remitted and not ended_early,
    )
