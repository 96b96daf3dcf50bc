"""Finding a consultation slot and planning a KAP course. Pure: time is always passed in."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from math import ceil
from uuid import UUID, uuid5

from services.scheduler.domain.calendar import FreeTime, instant
from services.scheduler.domain.capacity import PoolDays
from services.scheduler.domain.clinic import ClinicCalendar, CoursePolicy
from services.scheduler.domain.course import MEDICINE, PREPARATION, Placed, Step, course_steps
from services.scheduler.domain.plans import (
    Bookings,
    ClientAvailability,
    CoursePlan,
    PlanFailure,
    Slot,
)
from services.scheduler.domain.seats import Seats
from services.scheduler.domain.spans import earliest_fit, intersect
from services.scheduler.domain.walk import CourseWalk, Want, earliest_course_end
from shared.events import Appointment, PreferredTime

COURSE_HORIZON_DAYS = 120
EARLIEST_FIT_HORIZON_DAYS = 365


def find_consultation_slot(
    calendar: ClinicCalendar,
    bookings: Bookings,
    preferred_times: Sequence[PreferredTime],
    not_before: datetime,
    horizon_days: int = 28,
) -> Slot | None:
    """The earliest consultation with any therapist inside the client's preferred weekly
    windows (any opening hour if they gave none); ties go to the therapist listed first."""
    free = FreeTime(calendar, bookings)
    length = calendar.policy.consultation_minutes * 60
    grid = calendar.policy.slot_step_minutes * 60
    lower = ceil(not_before.timestamp())
    first_day = free.day_of(lower)
    for offset in range(horizon_days):
        day = first_day + timedelta(days=offset)
        windows = free.opening(day)
        if preferred_times:
            wanted = [p for p in preferred_times if p.weekday == day.weekday()]
            windows = free.local_spans(day, wanted)
        if not windows:
            continue
        origin = free.frame(day)[0]
        best: tuple[int, str] | None = None
        for therapist in calendar.therapists:
            spans = intersect(free.with_therapist(therapist.id, day), windows)
            start = earliest_fit(spans, lower, length, origin, grid)
            if start is not None and (best is None or start < best[0]):
                best = (start, therapist.id)
        if best is not None:
            start, therapist_id = best
            return Slot(
                starts_at=instant(start), ends_at=instant(start + length), therapist_id=therapist_id
            )
    return None


def is_late_cancellation(appointment_start: datetime, now: datetime, policy: CoursePolicy) -> bool:
    """Cancelled less than the cancellation window before the start (exactly on it is not)."""
    return appointment_start - now < timedelta(hours=policy.cancellation_window_hours)


def plan_course(
    calendar: ClinicCalendar,
    bookings: Bookings,
    course_id: UUID,
    not_before: datetime,
    preferred_therapist: str | None = None,
    horizon_days: int = COURSE_HORIZON_DAYS,
    availability: ClientAvailability | None = None,
) -> CoursePlan | PlanFailure:
    """The whole course: preparation(s), doses and integrations, by the policy's rules.

    For each therapist alone, their earliest course (first doses tried day by day from
    `not_before`, up to `horizon_days` ahead); the one that ends first wins, ties going to
    the preferred therapist, then to the order of the clinic's list. Only if nobody can
    take the whole course are therapists mixed, session by session, keeping the first
    dose's therapist whenever they are free that day. Appointment ids derive from
    `course_id`, so planning the same course again yields the same ids.

    On failure, the same search runs on up to a year ahead, and `earliest_fit_on` is the
    day the course it finds would start (its first preparation). Every session lies inside
    the client's `availability` when given.
    """
    if not calendar.rooms:
        return PlanFailure(reason="the clinic has no room for medicine sessions")
    if not calendar.therapists:
        return PlanFailure(reason="the clinic has no therapists")
    planner = _CoursePlanner(calendar, bookings, ceil(not_before.timestamp()), availability)
    therapists = _preferred_first(calendar, preferred_therapist)
    first_days = planner.first_dose_days(horizon_days)
    placed = planner.search(therapists, first_days)
    if placed is not None:
        return _course_plan(calendar, course_id, placed)
    later = planner.first_dose_days(EARLIEST_FIT_HORIZON_DAYS)[len(first_days) :]
    found = planner.search(therapists, later)
    limited = availability is not None and availability.limits
    fits = "fits the client's availability" if limited else "fits"
    return PlanFailure(
        reason=f"no full course {fits} in the next {horizon_days} days",
        earliest_fit_on=found[0].day if found else None,
    )


def _preferred_first(calendar: ClinicCalendar, preferred: str | None) -> tuple[str, ...]:
    ids = [t.id for t in calendar.therapists]
    return tuple(sorted(ids, key=lambda therapist: therapist != preferred))


class _CoursePlanner:
    def __init__(
        self,
        calendar: ClinicCalendar,
        bookings: Bookings,
        not_before: int,
        availability: ClientAvailability | None,
    ) -> None:
        self.policy = calendar.policy
        self.closures = calendar.closures
        self.seats = Seats(FreeTime(calendar, bookings, client=availability), calendar)
        self.not_before = not_before
        steps = course_steps(self.policy)
        self.preparations = [s for s in steps if s.kind is PREPARATION]
        self.after_first_dose = [Want(s) for s in steps[len(self.preparations) + 1 :]]
        self._pool_days: dict[tuple[str, ...], PoolDays] = {}

    def first_dose_days(self, horizon_days: int) -> list[date]:
        # Every preparation needs a day of its own before the first dose.
        today = self.seats.free.day_of(self.not_before)
        first = len(self.preparations)
        return [today + timedelta(days=n) for n in range(first, horizon_days + 1)]

    def search(self, therapists: Sequence[str], first_days: Sequence[date]) -> list[Placed] | None:
        return self.single_therapist(therapists, first_days) or self.mixed(therapists, first_days)

    def single_therapist(
        self, therapists: Sequence[str], first_days: Sequence[date]
    ) -> list[Placed] | None:
        """Each therapist's earliest course, found day by day; the one that ends first wins,
        ties going to the therapist tried first. Days go in the outer loop so the search
        stops as soon as no later first dose could end before the best course found, and a
        therapist whose working days alone rule that out leaves the search unwalked."""
        best: tuple[int, int, list[Placed]] | None = None  # end, rank, course
        searching = [
            (rank, therapist)
            for rank, therapist in enumerate(therapists)
            if self._could_ever_work_alone(therapist)
        ]
        for day in first_days:
            if not searching or (best is not None and self._cannot_end_before(day, best[0])):
                break
            still_searching = []
            for rank, therapist in searching:
                if best is not None and self._alone_cannot_end_before(therapist, day, best[0]):
                    continue  # nor from any later day: drop them from the search
                course = self._course_from(day, (therapist,))
                if course is None:
                    still_searching.append((rank, therapist))
                elif best is None or (course[-1].end, rank) < best[:2]:
                    best = (course[-1].end, rank, course)
            searching = still_searching
        return None if best is None else best[2]

    def _cannot_end_before(self, first_dose_day: date, end: int) -> bool:
        start = self.seats.free.frame(first_dose_day)[0]
        dose = Placed(Step(MEDICINE, 1), start, start, first_dose_day, "")
        return earliest_course_end(self.seats, dose, doses_that_week=1) > end

    def _alone_cannot_end_before(self, therapist: str, first_dose_day: date, end: int) -> bool:
        """Whether every course the therapist could give alone from that first-dose day ends
        after `end`, judged from their working weekdays only (no free time computed).

        Each session after the first dose takes a day of its own on which they work and the
        clinic is open, so the last one starts no earlier than the local midnight of the Nth
        such day (N sessions after the first dose) and ends after it. The bound only grows
        with the first-dose day, so a therapist it rules out is out for every later day.
        """
        last_day = self._nth_workday_after(therapist, first_dose_day)
        return self.seats.free.frame(last_day)[0] >= end

    def _nth_workday_after(self, therapist: str, day: date) -> date:
        # Ends: only therapists with workdays are searched (_could_ever_work_alone).
        workdays = self.seats.free.workdays(therapist)
        closures = self.closures
        left = len(self.after_first_dose)
        while left:
            day += timedelta(days=1)
            if day.weekday() in workdays and day not in closures:
                left -= 1
        return day

    def mixed(self, therapists: Sequence[str], first_days: Sequence[date]) -> list[Placed] | None:
        for day in first_days:
            course = self._course_from(day, therapists)
            if course is not None:
                return course
        return None

    def _course_from(self, day: date, pool: Sequence[str]) -> list[Placed] | None:
        first_dose = self.seats.earliest(Step(MEDICINE, 1), day, self.not_before, pool)
        if first_dose is None:
            return None
        if not self._capacity(pool).course_may_fit(day, len(self.after_first_dose)):
            return None
        # The course stays with the first dose's therapist whenever they are free that day.
        pool = sorted(pool, key=lambda therapist: therapist != first_dose.therapist_id)
        preparations = self._preparations_before(first_dose, pool)
        if preparations is None:
            return None
        walk = CourseWalk(
            self.seats,
            not_before=self.not_before,
            pool=pool,
            last_day=day + timedelta(days=self.policy.course_window_days - 1),
        )
        return walk.walk([*preparations, first_dose], self.after_first_dose)

    def _could_ever_work_alone(self, therapist: str) -> bool:
        """Whether the therapist's working weekdays could ever hold a whole course: every
        session after the first dose needs a day of its own inside the window."""
        workdays = self.seats.free.workdays(therapist)
        window = range(1, self.policy.course_window_days)
        return any(
            sum((first + offset) % 7 in workdays for offset in window) >= len(self.after_first_dose)
            for first in range(7)
        )

    def _capacity(self, pool: Sequence[str]) -> PoolDays:
        key = tuple(pool)
        days = self._pool_days.get(key)
        if days is None:
            today = self.seats.free.day_of(self.not_before)
            days = self._pool_days[key] = PoolDays(self.seats, pool, today)
        return days

    def _preparations_before(self, first_dose: Placed, pool: Sequence[str]) -> list[Placed] | None:
        """Each preparation as late as it can be: close to the dose it prepares for."""
        placed: list[Placed] = []
        day = first_dose.day
        earliest_day = self.seats.free.day_of(self.not_before)
        for step in reversed(self.preparations):
            found = None
            while found is None:
                day -= timedelta(days=1)
                if day < earliest_day:
                    return None
                found = self.seats.latest(step, day, self.not_before, pool)
            placed.insert(0, found)
        return placed


def _course_plan(calendar: ClinicCalendar, course_id: UUID, placed: Sequence[Placed]) -> CoursePlan:
    first_dose = next(p for p in placed if p.step.kind is MEDICINE)
    return CoursePlan(
        course_id=course_id,
        therapist_id=first_dose.therapist_id,
        window_ends_on=first_dose.day + timedelta(days=calendar.policy.course_window_days - 1),
        appointments=tuple(appointment(course_id, p) for p in placed),
    )


def appointment(course_id: UUID, placed: Placed, appointment_id: UUID | None = None) -> Appointment:
    return Appointment(
        appointment_id=appointment_id or uuid5(course_id, placed.step.name),
        kind=placed.step.kind,
        starts_at=instant(placed.start),
        ends_at=instant(placed.end),
        therapist_id=placed.therapist_id,
        room_id=placed.room_id,
        dose_number=placed.step.number if placed.step.kind is MEDICINE else None,
    )
