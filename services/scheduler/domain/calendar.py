"""Clinic-local days and the free time of therapists and rooms on them.

A local range [a, b) on a day becomes the UTC span whose every instant shows a wall time in
[a, b) on that day. Around a DST change that span is one hour shorter or longer than b - a,
while a block of N minutes is always N real minutes: that is what keeps a 180-minute session
inside 09:00-17:00 local on the morning the clocks change.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import accumulate
from math import ceil, floor
from operator import attrgetter
from zoneinfo import ZoneInfo

from services.scheduler.domain.clinic import ClinicCalendar, Interval, TimeRange
from services.scheduler.domain.plans import Bookings, ClientAvailability
from services.scheduler.domain.spans import Span, Spans, intersect, merge, subtract
from shared.events import Appointment, PreferredTime

_DAY = 24 * 3600


def epoch(at: datetime) -> int:
    return floor(at.timestamp())


def instant(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _both_folds(day: date, wall: time, tz: ZoneInfo) -> tuple[int, int]:
    at = datetime.combine(day, wall, tzinfo=tz)
    return epoch(at), epoch(at.replace(fold=1))


def local_start(day: date, wall: time, tz: ZoneInfo) -> int:
    """The first instant from which the wall clock reads `wall` or later, without going back.

    For a repeated wall time that is its second occurrence; for one skipped by a DST gap, a
    point at or after the gap. Either way a range only ever shrinks, never leaks outside.
    """
    return max(_both_folds(day, wall, tz))


def local_end(day: date, wall: time, tz: ZoneInfo) -> int:
    """The instant until which the wall clock reads before `wall`: as local_start, shrinking."""
    return min(_both_folds(day, wall, tz))


def week_of(day: date) -> date:
    """The Monday that starts `day`'s calendar week."""
    return day - timedelta(days=day.weekday())


def _seconds(wall: time) -> int:
    return wall.hour * 3600 + wall.minute * 60 + wall.second


def _wall(ranges: Iterable[TimeRange]) -> Spans:
    return tuple((_seconds(r.start), _seconds(r.end)) for r in ranges)


class Timeline:
    """Busy intervals over weeks, cut to the part overlapping one day.

    Converting an aware datetime to epoch seconds costs more than everything else done with
    it, so only the intervals a query actually touches are converted.
    """

    def __init__(self, intervals: Iterable[Interval]) -> None:
        self._ordered = sorted(intervals, key=attrgetter("starts_at"))
        self._starts = [i.starts_at for i in self._ordered]
        # The latest end so far: sorted even when intervals overlap, so it can be bisected.
        self._reach = list(accumulate((i.ends_at for i in self._ordered), max))

    def during(self, start: datetime, end: datetime) -> Spans:
        """Sorted by start, possibly overlapping: `subtract` takes them as they are."""
        first = bisect_right(self._reach, start)
        last = bisect_left(self._starts, end, lo=first)
        return tuple(
            (floor(i.starts_at.timestamp()), ceil(i.ends_at.timestamp()))  # rounded outwards
            for i in self._ordered[first:last]
        )


@dataclass(frozen=True, slots=True)
class _Day:
    start: int  # local midnight
    end: int  # the next local midnight
    start_at: datetime
    end_at: datetime
    opening: Spans
    client_busy: Spans

    @property
    def regular(self) -> bool:
        """No DST change: every wall time is a fixed offset from midnight."""
        return self.end - self.start == _DAY


class FreeTime:
    """When each therapist and room is free on a local day, for one client.

    Built once per planning call; every answer is cached per (resource, day), so trying
    twenty therapists over the same weeks computes each day's free time once. Bookings may
    include the appointments listed in `own` (a course being re-planned): they are ignored.
    """

    def __init__(
        self,
        calendar: ClinicCalendar,
        bookings: Bookings,
        own: Iterable[Appointment] = (),
        client: ClientAvailability | None = None,
    ) -> None:
        self.tz = calendar.tz
        self._client = client if client is not None and client.limits else None
        self._calendar = calendar
        self._therapists = {t.id: t for t in calendar.therapists}
        own = tuple(own)
        self._therapist_busy = {
            t.id: Timeline(
                [*t.time_off, *_others(bookings.therapists.get(t.id, ()), own, therapist=t.id)]
            )
            for t in calendar.therapists
        }
        self._room_busy = {
            r.id: Timeline(_others(bookings.rooms.get(r.id, ()), own, room=r.id))
            for r in calendar.rooms
        }
        self._client_busy = Timeline(_others(bookings.client, own))
        self._workdays = {
            t.id: frozenset(
                weekday
                for weekday in range(7)
                for mine in t.availability.on(weekday)
                for clinic in calendar.opening_hours.on(weekday)
                if mine.start < clinic.end and clinic.start < mine.end
            )
            for t in calendar.therapists
        }
        self._days: dict[date, _Day] = {}
        self._with_therapist: dict[tuple[str, date], Spans] = {}
        self._room: dict[tuple[str, date], Spans] = {}
        self._weekly_hours: dict[tuple[str, int], Spans] = {}

    def _day(self, day: date) -> _Day:
        record = self._days.get(day)
        if record is None:
            midnight = time(0)
            start = local_start(day, midnight, self.tz)
            end = local_start(day + timedelta(days=1), midnight, self.tz)
            start_at, end_at = instant(start), instant(end)
            hours = (
                ()
                if day in self._calendar.closures
                else self._calendar.opening_hours.on(day.weekday())
            )
            record = self._days[day] = _Day(
                start,
                end,
                start_at,
                end_at,
                self._local_spans(day, start, end, hours),
                self._client_busy.during(start_at, end_at),
            )
        return record

    def frame(self, day: date) -> Span:
        """The day from local midnight to the next; also the origin of its slot grid."""
        record = self._day(day)
        return record.start, record.end

    def day_of(self, seconds: int) -> date:
        return datetime.fromtimestamp(seconds, self.tz).date()

    def opening(self, day: date) -> Spans:
        return self._day(day).opening

    def local_spans(self, day: date, ranges: Iterable[TimeRange | PreferredTime]) -> Spans:
        record = self._day(day)
        return self._local_spans(day, record.start, record.end, ranges)

    def _local_spans(
        self, day: date, start: int, end: int, ranges: Iterable[TimeRange | PreferredTime]
    ) -> Spans:
        if end - start == _DAY:
            spans = ((start + _seconds(r.start), start + _seconds(r.end)) for r in ranges)
        else:
            spans = (
                (local_start(day, r.start, self.tz), local_end(day, r.end, self.tz)) for r in ranges
            )
        return merge((s, e) for s, e in spans if s < e)

    def workdays(self, therapist_id: str) -> frozenset[int]:
        """The weekdays on which the therapist's hours meet the clinic's."""
        return self._workdays.get(therapist_id, frozenset())

    def with_therapist(self, therapist_id: str, day: date) -> Spans:
        """When the client and this therapist are both free, inside opening hours."""
        key = (therapist_id, day)
        spans = self._with_therapist.get(key)
        if spans is None:
            spans = self._with_therapist[key] = self._free_with_therapist(therapist_id, day)
        return spans

    def _free_with_therapist(self, therapist_id: str, day: date) -> Spans:
        record = self._day(day)
        therapist = self._therapists.get(therapist_id)
        if therapist is None or not record.opening:
            return ()
        if record.regular:
            # The same every week, shifted to that day's midnight.
            offsets = self._weekly_offsets(therapist_id, day.weekday())
            hours: Spans = tuple((record.start + s, record.start + e) for s, e in offsets)
        else:
            mine = self.local_spans(day, therapist.availability.on(day.weekday()))
            hours = intersect(record.opening, mine)
        if not hours:
            return ()
        if self._client is not None:
            hours = self._client_can_come(day, hours)
            if not hours:
                return ()
        busy = self._therapist_busy[therapist_id].during(record.start_at, record.end_at)
        free = subtract(hours, busy) if busy else hours
        return subtract(free, record.client_busy) if record.client_busy else free

    def _client_can_come(self, day: date, hours: Spans) -> Spans:
        client = self._client
        if client is None:
            return hours
        if day in client.blocked_dates:
            return ()
        if not client.weekly:
            return hours
        wanted = [w for w in client.weekly if w.weekday == day.weekday()]
        return intersect(hours, self.local_spans(day, wanted)) if wanted else ()

    def _weekly_offsets(self, therapist_id: str, weekday: int) -> Spans:
        """The therapist's hours inside the clinic's on this weekday, in wall-clock seconds
        from midnight: on a day without a DST change, also real seconds from midnight."""
        key = (therapist_id, weekday)
        offsets = self._weekly_hours.get(key)
        if offsets is None:
            availability = self._therapists[therapist_id].availability.on(weekday)
            opening = self._calendar.opening_hours.on(weekday)
            offsets = self._weekly_hours[key] = intersect(_wall(opening), _wall(availability))
        return offsets

    def room(self, room_id: str, day: date) -> Spans:
        key = (room_id, day)
        spans = self._room.get(key)
        if spans is None:
            record = self._day(day)
            spans = record.opening
            if spans:
                busy = self._room_busy[room_id].during(record.start_at, record.end_at)
                spans = subtract(spans, busy) if busy else spans
            self._room[key] = spans
        return spans


def _others(
    booked: Iterable[Interval],
    own: tuple[Appointment, ...],
    *,
    therapist: str | None = None,
    room: str | None = None,
) -> list[Interval]:
    """`booked` without the intervals that are one of `own`'s appointments."""
    if not own:
        return list(booked)
    mine = {
        (a.starts_at, a.ends_at)
        for a in own
        if (therapist is None or a.therapist_id == therapist)
        and (room is None or a.room_id == room)
    }
    return [i for i in booked if (i.starts_at, i.ends_at) not in mine]
