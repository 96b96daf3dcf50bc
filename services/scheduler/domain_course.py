"""The shape of a course, the rules between its sessions, and the walk that places them.

A course is a sequence: preparation(s), dose 1, its integration, dose 2, ... Each session is
on its own clinic-local day, strictly after the one before it. So the client never has two
course sessions in one day, and each integration comes before the next dose: the dose it
integrates is always the latest dose before it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from services.scheduler.calendar import FreeTime, week_of
from services.scheduler.domain import ClinicCalendar, CoursePolicy
from services.scheduler.domain_spans import Spans, covers, earliest_fit, latest_fit
from shared.events import AppointmentKind

MEDICINE = AppointmentKind.MEDICINE
INTEGRATION = AppointmentKind.INTEGRATION
PREPARATION = AppointmentKind.PREPARATION
_COURSE_KINDS = (PREPARATION, MEDICINE, INTEGRATION)


@dataclass(frozen=True, slots=True)
class Step:
    kind: AppointmentKind
    number: int  # preparation: its ordinal; medicine and integration: the dose number

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.number}"


def course_steps(policy: CoursePolicy) -> tuple[Step, ...]:
    steps = [Step(PREPARATION, n) for n in range(1, policy.preparation_sessions + 1)]
    for dose in range(1, policy.medicine_sessions + 1):
        steps.append(Step(MEDICINE, dose))
        if policy.integration_follows(dose):
            steps.append(Step(INTEGRATION, dose))
    return tuple(steps)


@dataclass(frozen=True, slots=True)
class Placed:
    step: Step
    start: int
    end: int
    day: date
    therapist_id: str
    room_id: str | None = None


_Seat = tuple[int, "str | None"]  # start, room


class Seats:
    """Finds a therapist, and a room for medicine, for one session on one local day.

    Most searches ask for a whole day (the lower bound falls on an earlier day), so those
    answers are cached per (therapist, kind, day): planning tries many first-dose days and
    many therapists over the same weeks.
    """

    def __init__(self, free: FreeTime, calendar: ClinicCalendar) -> None:
        self.free = free
        self.policy = calendar.policy
        self.rooms = tuple(room.id for room in calendar.rooms)
        self.grid = calendar.policy.slot_step_minutes * 60
        self._lengths = {kind: self.policy.minutes_of(kind) * 60 for kind in _COURSE_KINDS}
        self._shortest = min(self._lengths.values())
        self._long: dict[tuple[str, int, date], Spans] = {}
        self._has_time: dict[tuple[str, date], bool] = {}
        self._whole_day: dict[tuple[str, AppointmentKind, date], _Seat | None] = {}
        self._rooms: dict[date, tuple[tuple[int, int, str], ...]] = {}

    def length(self, step: Step) -> int:
        return self._lengths[step.kind]

    def earliest(
        self, step: Step, day: date, not_before: int, pool: Sequence[str]
    ) -> Placed | None:
        """The first therapist in `pool` who is free that day, at their earliest start."""
        origin = self.free.frame(day)[0]
        for therapist in pool:
            if not_before > origin:
                seat = self._earliest(therapist, step.kind, day, not_before)
            else:
                key = (therapist, step.kind, day)
                if key in self._whole_day:
                    seat = self._whole_day[key]
                else:
                    seat = self._whole_day[key] = self._earliest(therapist, step.kind, day, origin)
            if seat is not None:
                start, room = seat
                return Placed(step, start, start + self.length(step), day, therapist, room)
        return None

    def latest(self, step: Step, day: date, not_before: int, pool: Sequence[str]) -> Placed | None:
        """The first therapist in `pool` who is free that day, at their latest start."""
        for therapist in pool:
            seat = self._seat(therapist, step.kind, day, not_before, later_is_better=True)
            if seat is not None:
                start, room = seat
                return Placed(step, start, start + self.length(step), day, therapist, room)
        return None

    def _earliest(
        self, therapist: str, kind: AppointmentKind, day: date, not_before: int
    ) -> _Seat | None:
        return self._seat(therapist, kind, day, not_before, later_is_better=False)

    def _seat(
        self,
        therapist: str,
        kind: AppointmentKind,
        day: date,
        not_before: int,
        *,
        later_is_better: bool,
    ) -> _Seat | None:
        length = self._lengths[kind]
        free = self._free(therapist, day, length)
        if not free:
            return None
        origin, grid = self.free.frame(day)[0], self.grid
        if kind is not MEDICINE:
            fit = latest_fit if later_is_better else earliest_fit
            start = fit(free, not_before, length, origin, grid)
            return None if start is None else (start, None)
        # Every (therapist span, room span) pair: a handful of integers, no new spans built.
        best: _Seat | None = None
        for c, d, room in self._room_spans(day):
            for a, b in free:
                lo, hi = max(a, c, not_before), min(b, d) - length
                if later_is_better:
                    start = hi - (hi - origin) % grid
                    better = start >= lo and (best is None or start > best[0])
                else:
                    start = lo + -(lo - origin) % grid
                    better = start <= hi and (best is None or start < best[0])
                if better:
                    best = (start, room)  # strictly better: among equals, the first room
        return best

    def can_dose(self, therapist: str, day: date) -> bool:
        """Whether a whole dose fits that day with this therapist, in some room."""
        key = (therapist, MEDICINE, day)
        if key not in self._whole_day:
            self._whole_day[key] = self._earliest(therapist, MEDICINE, day, self.free.frame(day)[0])
        return self._whole_day[key] is not None

    def has_time(self, therapist: str, day: date) -> bool:
        """Whether the therapist and client share enough time that day for any session."""
        key = (therapist, day)
        answer = self._has_time.get(key)
        if answer is None:
            answer = self._has_time[key] = bool(self._free(therapist, day, self._shortest))
        return answer

    def _free(self, therapist: str, day: date, length: int) -> Spans:
        """The time the client and therapist share that day, in spans long enough."""
        key = (therapist, length, day)
        spans = self._long.get(key)
        if spans is None:
            spans = self._long[key] = _long_enough(self.free.with_therapist(therapist, day), length)
        return spans

    def _room_spans(self, day: date) -> tuple[tuple[int, int, str], ...]:
        """Every room's free spans long enough for a medicine session, rooms in listed order."""
        spans = self._rooms.get(day)
        if spans is None:
            length = self._lengths[MEDICINE]
            spans = self._rooms[day] = tuple(
                (start, end, room)
                for room in self.rooms
                for start, end in self.free.room(room, day)
                if end - start >= length
            )
        return spans

    def at(self, step: Step, start: int, therapist: str, room: str | None) -> Placed | None:
        """The session at exactly `start` with this therapist, in `room` if free, else in
        another free room; None if that time is not free."""
        day = self.free.day_of(start)
        end = start + self.length(step)
        if not covers(self.free.with_therapist(therapist, day), start, end):
            return None
        if step.kind is not MEDICINE:
            return Placed(step, start, end, day, therapist)
        rooms = sorted(self.rooms, key=lambda candidate: candidate != room)
        for candidate in rooms:
            if covers(self.free.room(candidate, day), start, end):
                return Placed(step, start, end, day, therapist, candidate)
        return None


def _long_enough(spans: Spans, length: int) -> Spans:
    return tuple(span for span in spans if span[1] - span[0] >= length)


def earliest_course_end(seats: Seats, dose: Placed, doses_that_week: int) -> int:
    """No course can end sooner once `dose` is placed: the doses left need the minimum gap
    between them, and at most max_doses_per_week each calendar week."""
    policy = seats.policy
    left = policy.medicine_sessions - dose.step.number
    by_gap = dose.start + left * policy.min_hours_between_doses * 3600
    beyond_this_week = left - max(policy.max_doses_per_week - doses_that_week, 0)
    by_week = 0
    if beyond_this_week > 0:
        weeks = -(-beyond_this_week // policy.max_doses_per_week)
        by_week = seats.free.frame(week_of(dose.day) + timedelta(weeks=weeks))[0]
    return max(by_gap, by_week) + seats.length(dose.step)


Mode = Literal["search", "prefer", "pin", "history"]


@dataclass(frozen=True, slots=True)
class Want:
    """A step of the walk. `history` keeps `at` unchecked; `pin` keeps it only if the rules
    and resources allow; `prefer` keeps it if allowed, else searches; `search` searches."""

    step: Step
    mode: Mode = "search"
    at: Placed | None = None


class CourseWalk:
    """Places steps in order, each at its earliest allowed day and time (greedy).

    A dose whose integration cannot fit is tried on a later day (one step of look-ahead);
    nothing further back is revisited, which keeps the walk linear in the days searched.
    """

    def __init__(
        self,
        seats: Seats,
        *,
        not_before: int,
        pool: Sequence[str],
        last_day: date,
        window_end: date | None = None,
    ) -> None:
        self.seats = seats
        self.policy = seats.policy
        self.not_before = not_before
        self.pool = tuple(pool)
        self.last_day = last_day
        self.window_end = window_end

    def walk(self, placed: Sequence[Placed], wants: Sequence[Want]) -> list[Placed] | None:
        done = list(placed)
        i = 0
        while i < len(wants):
            want = wants[i]
            follower = wants[i + 1] if i + 1 < len(wants) else None
            if want.step.kind is not MEDICINE or (
                follower is not None and follower.step.kind is not INTEGRATION
            ):
                follower = None
            for option in self._options(want, done):
                if follower is None:
                    done.append(option)
                    i += 1
                    break
                after = next(self._options(follower, [*done, option]), None)
                if after is not None:
                    done += [option, after]
                    i += 2
                    break
            else:
                return None
        return done

    def _options(self, want: Want, done: list[Placed]) -> Iterator[Placed]:
        if want.mode == "history" and want.at is not None:
            yield want.at
            return
        if want.at is not None and want.mode in ("pin", "prefer"):
            at = want.at
            if self._allowed(want, at.start, at.day, done):
                kept = self.seats.at(want.step, at.start, at.therapist_id, at.room_id)
                if kept is not None:
                    yield kept
            if want.mode == "pin":
                return
        yield from self._search(want, done)

    def _search(self, want: Want, done: list[Placed]) -> Iterator[Placed]:
        not_before, day, last = self._bounds(want, done)
        while day <= last:
            if want.step.kind is not MEDICINE or self._week_has_room(day, done):
                found = self.seats.earliest(want.step, day, not_before, self.pool)
                if found is not None:
                    yield found
            day += timedelta(days=1)

    def _allowed(self, want: Want, start: int, day: date, done: list[Placed]) -> bool:
        not_before, first, last = self._bounds(want, done)
        if start < not_before or not first <= day <= last:
            return False
        return want.step.kind is not MEDICINE or self._week_has_room(day, done)

    def _bounds(self, want: Want, done: list[Placed]) -> tuple[int, date, date]:
        """The earliest instant, and the first and last local day, the step may take."""
        not_before = self.not_before
        last = self.last_day
        if done:
            not_before = max(not_before, done[-1].end)
        first = self.seats.free.day_of(not_before)
        if done:
            first = max(first, done[-1].day + timedelta(days=1))
        doses = [p for p in done if p.step.kind is MEDICINE]
        window = self._window_end(doses)
        if want.step.kind is MEDICINE:
            if doses:
                gap = self.policy.min_hours_between_doses * 3600
                not_before = max(not_before, doses[-1].start + gap)
                first = max(first, self.seats.free.day_of(not_before))
            if window is not None:
                last = min(last, window)
        elif want.step.kind is INTEGRATION:
            if not doses:
                return not_before, first, first - timedelta(days=1)  # nothing to integrate
            earliest, latest = self.policy.integration_days_after
            first = max(first, doses[-1].day + timedelta(days=earliest))
            last = min(last, doses[-1].day + timedelta(days=latest))
            if window is not None:
                last = min(last, window)
        return not_before, first, last

    def _window_end(self, doses: list[Placed]) -> date | None:
        if self.window_end is not None:
            return self.window_end
        if not doses:
            return None  # the first dose opens the window
        return doses[0].day + timedelta(days=self.policy.course_window_days - 1)

    def _week_has_room(self, day: date, done: list[Placed]) -> bool:
        week = week_of(day)
        taken = sum(1 for p in done if p.step.kind is MEDICINE and week_of(p.day) == week)
        return taken < self.policy.max_doses_per_week
