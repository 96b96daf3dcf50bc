"""Where a booster that fell due is booked: its medicine session, then its integration.

Pure. The booster session lies on an open clinic-local day from the due date's
first to last booking day (policy `booster_booking_days`, default the due date to
+7 days), at least the minimum notice from now, inside the client's availability;
its integration follows on a day `integration_days_after` it (default 1-3). Both
go to the course's therapist when they can anywhere in the window; only if they
cannot are other therapists tried, day by day, the course's therapist first.
A booster session is a medicine session (same length, a room with a recliner);
its appointment is of kind BOOSTER.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from math import ceil
from uuid import UUID, uuid5

from pydantic import AwareDatetime, Field

from services.scheduler.domain.calendar import FreeTime, instant
from services.scheduler.domain.clinic import ClinicCalendar, Interval
from services.scheduler.domain.course import INTEGRATION, MEDICINE, Placed, Step
from services.scheduler.domain.plans import Bookings, ClientAvailability, PlanFailure, Value
from services.scheduler.domain.seats import Seats
from shared.events import Appointment, AppointmentKind

EARLIEST_FIT_DAYS = 90  # how far past the window the earliest possible day is looked for


class BoosterSessions(Value):
    """One booked booster as the course keeps it."""

    number: int = Field(ge=1)
    due_at: AwareDatetime
    appointments: tuple[Appointment, ...] = Field(
        description="The booster session, then its integration"
    )
    declined: bool = False


class BoosterToBook(Value):
    """A booster announced and not booked yet: its sessions are booked in a step of their
    own (services.scheduler.timers), so announcing a clinic's boosters waits for no search."""

    number: int = Field(ge=1)
    due_at: AwareDatetime


def booster_ids(course_id: UUID, number: int) -> tuple[UUID, UUID]:
    """The ids of booster `number`'s sessions: the same every time it is planned."""
    return uuid5(course_id, f"booster-{number}"), uuid5(course_id, f"booster-{number}-integration")


def place_booster(
    calendar: ClinicCalendar,
    bookings: Bookings,
    course_id: UUID,
    number: int,
    due_at: datetime,
    now: datetime,
    therapist_id: str | None,
    availability: ClientAvailability | None = None,
) -> tuple[Appointment, ...] | PlanFailure:
    """The booster's two sessions, or why none fit (with the earliest day one would)."""
    if not calendar.rooms:
        return PlanFailure(reason="the clinic has no room for medicine sessions")
    if not calendar.therapists:
        return PlanFailure(reason="the clinic has no therapists")
    policy = calendar.policy
    seats = Seats(FreeTime(calendar, bookings, client=availability), calendar)
    notice = now + timedelta(hours=policy.min_notice_hours)
    not_before = ceil(max(due_at, notice).timestamp())
    due_on = due_at.astimezone(calendar.tz).date()
    first, last = policy.booster_booking_days
    days = [due_on + timedelta(days=n) for n in range(first, last + 1)]
    everyone = [t.id for t in calendar.therapists]
    pools: list[list[str]] = []
    if therapist_id in everyone:
        pools.append([therapist_id])
    pools.append(sorted(everyone, key=lambda t: t != therapist_id))
    for pool in pools:
        placed = _first_fit(seats, number, days, not_before, pool)
        if placed is not None:
            return _appointments(course_id, number, placed)
    later = [days[-1] + timedelta(days=n) for n in range(1, EARLIEST_FIT_DAYS + 1)]
    found = _first_fit(seats, number, later, not_before, pools[-1])
    limited = availability is not None and availability.limits
    fits = "fits the client's availability" if limited else "fits"
    return PlanFailure(
        reason=f"no booster session {fits} from {days[0]} to {days[-1]}",
        earliest_fit_on=found[0].day if found else None,
    )


def _first_fit(
    seats: Seats, number: int, days: Sequence[date], not_before: int, pool: Sequence[str]
) -> tuple[Placed, Placed] | None:
    earliest, latest = seats.policy.integration_days_after
    for day in days:
        if day < seats.free.day_of(not_before):
            continue
        dose = seats.earliest(Step(MEDICINE, number), day, not_before, pool)
        if dose is None:
            continue
        # The integration stays with the booster's therapist whenever they are free.
        with_same = sorted(pool, key=lambda t: t != dose.therapist_id)
        for after in range(earliest, latest + 1):
            step = Step(INTEGRATION, number)
            talk = seats.earliest(step, day + timedelta(days=after), dose.end, with_same)
            if talk is not None:
                return dose, talk
    return None


def _appointments(
    course_id: UUID, number: int, placed: tuple[Placed, Placed]
) -> tuple[Appointment, ...]:
    ids = booster_ids(course_id, number)
    kinds = (AppointmentKind.BOOSTER, AppointmentKind.INTEGRATION)
    return tuple(
        Appointment(
            appointment_id=appointment_id,
            kind=kind,
            starts_at=instant(p.start),
            ends_at=instant(p.end),
            therapist_id=p.therapist_id,
            room_id=p.room_id,
        )
        for appointment_id, kind, p in zip(ids, kinds, placed, strict=True)
    )


def with_held(
    bookings: Bookings, held: Sequence[Appointment], own: Sequence[Appointment] = ()
) -> Bookings:
    """`bookings` with sessions held earlier in the same write step, not in the ledger yet:
    `held` take their therapist and room, the client's `own` take the client's time too."""
    therapists, rooms = dict(bookings.therapists), dict(bookings.rooms)
    client = list(bookings.client)
    for a in (*held, *own):
        span = Interval(starts_at=a.starts_at, ends_at=a.ends_at)
        therapists[a.therapist_id] = (*therapists.get(a.therapist_id, ()), span)
        if a.room_id is not None:
            rooms[a.room_id] = (*rooms.get(a.room_id, ()), span)
    client += [Interval(starts_at=a.starts_at, ends_at=a.ends_at) for a in own]
    return Bookings(therapists=therapists, rooms=rooms, client=tuple(client))
