"""Finding a therapist, and a room for a dose, for one session on one clinic-local day."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from services.scheduler.domain.calendar import FreeTime
from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.course import COURSE_KINDS, MEDICINE, Placed, Step
from services.scheduler.domain.spans import Spans, covers, earliest_fit, latest_fit
from shared.events import AppointmentKind

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
        self._lengths = {kind: self.policy.minutes_of(kind) * 60 for kind in COURSE_KINDS}
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
