"""A clinic's day calendar: every appointment starting on one clinic-local date, read
from the scheduler's own store in a handful of round trips, whatever the clinic's size.

1. the day's UTC range (domain.day: 23 or 25 hours across a DST change);
2. one pipeline of ZRANGEBYSCOREs over the booking ledger's set of each therapist and
   room of the clinic's calendar, by start: the appointments that hold one of them;
3. one HMGET of the clinic's appointment index: each appointment's client;
4. one MGET of those clients' schedules: each appointment's kind, status, resources
   and check-in, as the schedule holds it now;
5. one pipeline of the measure logs of the clients with a dose that day (flags).

What is listed is what holds a therapist's or a room's slot that day. A cancelled
session or consultation gave its slot up and is not listed; nor is a course session
missed (its slot goes, the course is re-planned), nor one taken out of a plan by a
pause or an ending. A consultation missed but not yet rebooked keeps its slot and is
listed, status `noshow`. Slots are trimmed from the ledger 30 days after they end
(ledger.BOOKINGS_KEPT): a day further back than that lists what is left of it.

The reads are not one snapshot: an appointment moved or cancelled between them is
shown as its schedule says (listed only if it still starts that day and is not
cancelled), one booked in between shows on the next read.
"""

from __future__ import annotations

import datetime as dt
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from services.scheduler.domain.day import Flag, Found, day_range, find, flags, is_dose
from services.scheduler.domain.schedule import ClientSchedule
from services.scheduler.ledger import Resource
from services.scheduler.scheduler import Scheduler
from shared import events as ev


class DayAppointment(BaseModel):
    """One appointment of the day: ids and times only (the console looks names up)."""

    model_config = ConfigDict(frozen=True)

    appointment_id: UUID
    client_id: UUID
    kind: ev.AppointmentKind
    status: ev.AppointmentStatus
    starts_at: dt.datetime
    ends_at: dt.datetime
    therapist_id: str
    room_id: str | None
    dose_number: int | None = Field(description="Medicine sessions only")
    flags: list[Flag] = Field(description="Doses only (domain.day.Flag)")


class CalendarDay(BaseModel):
    model_config = ConfigDict(frozen=True)

    date: dt.date = Field(description="The clinic-local date")
    timezone: str = Field(description="The clinic's IANA time zone")
    appointments: list[DayAppointment] = Field(description="By start, then therapist")
    therapists: list[str] = Field(description="The calendar's therapists' ids")
    rooms: list[str] = Field(description="The calendar's rooms' ids")


async def calendar_day(scheduler: Scheduler, clinic_id: str, day: dt.date) -> CalendarDay:
    calendar = await scheduler.calendar(clinic_id)
    since, until = day_range(day, calendar.tz)
    store = scheduler.store
    resources: list[tuple[Resource, str]] = [
        *(("therapist", t.id) for t in calendar.therapists),
        *(("room", r.id) for r in calendar.rooms),
    ]
    booked = await store.ledger.starting(clinic_id, resources, since, until)
    ids = sorted({b.appointment_id for held in booked for b in held}, key=str)
    owners = await store.clients_of(clinic_id, ids)
    clients = sorted(set(owners.values()), key=str)
    schedules = dict(zip(clients, await store.load_many(clinic_id, clients), strict=True))

    found: list[tuple[ClientSchedule, Found]] = []
    for appointment_id in ids:
        owner = owners.get(appointment_id)
        schedule = schedules.get(owner) if owner is not None else None
        session = find(schedule, appointment_id) if schedule is not None else None
        if (
            schedule is None
            or session is None
            or session.status == ev.AppointmentStatus.CANCELLED
            or not since <= session.appointment.starts_at < until
        ):
            continue  # changed since the ledger was read, or no schedule holds it
        found.append((schedule, session))

    dosed = sorted({s.client_id for s, session in found if is_dose(session)}, key=str)
    answers = await store.measure_log.answers_of(clinic_id, dosed)
    now = scheduler.clock.now()
    appointments = [
        DayAppointment(
            appointment_id=session.appointment.appointment_id,
            client_id=schedule.client_id,
            kind=session.appointment.kind,
            status=session.status,
            starts_at=session.appointment.starts_at,
            ends_at=session.appointment.ends_at,
            therapist_id=session.appointment.therapist_id,
            room_id=session.appointment.room_id,
            dose_number=session.appointment.dose_number,
            flags=flags(session, answers.get(schedule.client_id, []), now),
        )
        for schedule, session in found
    ]
    appointments.sort(key=lambda a: (a.starts_at, a.therapist_id, str(a.appointment_id)))
    return CalendarDay(
        date=day,
        timezone=calendar.timezone,
        appointments=appointments,
        therapists=[t.id for t in calendar.therapists],
        rooms=[r.id for r in calendar.rooms],
    )
