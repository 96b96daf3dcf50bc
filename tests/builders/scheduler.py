"""Builders of scheduler worlds shared by the tests and `make bench`: a busy clinic's
calendar and weeks of bookings (random but seeded), and a client whose course was held
to the end, so their booster plan is the lifecycle's own.

They live with the tests (the benchmark measures on the same worlds the tests check).
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta

from services.scheduler.domain import lifecycle, medicine
from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.planner import plan_course
from services.scheduler.domain.plans import Bookings, CoursePlan
from services.scheduler.domain.schedule import ClientSchedule
from shared import events as ev

START = datetime(2026, 3, 16)  # a Monday, clinic-local wall time
THERAPISTS, ROOMS, DAYS = 20, 8, 42
PASSING_CHECKIN = ev.CheckInAnswers(
    ride_home_confirmed=True,
    fasting_confirmed=True,
    vitals=ev.VitalSigns(systolic=122, diastolic=78, heart_rate=72),
    phq9_item9=0,
)


class FigureFailed(AssertionError):
    """An outcome the figures rest on did not hold (two race winners, a lost booster...)."""


def clinic(rng: random.Random, therapists: int = THERAPISTS, rooms: int = ROOMS) -> ClinicCalendar:
    """Therapists each on 3 to 5 of the 6 open days (with a lunch break), and rooms."""
    day = [{"start": "08:00", "end": "20:00"}]
    split = [{"start": "08:00", "end": "13:00"}, {"start": "14:00", "end": "19:00"}]
    team = [
        {
            "id": f"t{n}",
            "display_name": f"Therapist {n}",
            "availability": {d: split for d in rng.sample(range(6), rng.randint(3, 5))},
        }
        for n in range(therapists)
    ]
    return ClinicCalendar.model_validate(
        {
            "clinic_id": "bench",
            "timezone": "Europe/Lisbon",
            "opening_hours": {d: day for d in range(6)},
            "therapists": team,
            "rooms": [{"id": f"r{n}", "name": f"Room {n}"} for n in range(rooms)],
            "closures": ["2026-04-03", "2026-04-25"],
        }
    )


def booked(calendar: ClinicCalendar, rng: random.Random, load: float) -> Bookings:
    """Six weeks from START in which each therapist's and room's hours are `load` taken."""

    def busy(share: float, lengths: list[int]) -> list[dict[str, datetime]]:
        spans = []
        for offset in range(DAYS):
            at = (START + timedelta(days=offset, hours=8)).replace(tzinfo=calendar.tz)
            while at.hour < 19:
                length = timedelta(minutes=rng.choice(lengths))
                if rng.random() < share:
                    spans.append({"starts_at": at, "ends_at": at + length})
                at += length
        return spans

    return Bookings.model_validate(
        {
            "therapists": {t.id: busy(load, [60, 60, 180]) for t in calendar.therapists},
            "rooms": {r.id: busy(load, [180]) for r in calendar.rooms},
            "client": busy(0.05, [60]),
        }
    )


def completed_course(calendar: ClinicCalendar, completed_at: datetime) -> ClientSchedule:
    """A client whose whole course was held, completed at `completed_at`: their booster
    plan is set by the lifecycle, the first booster 14 days later at 09:00 local."""
    schedule = ClientSchedule(
        clinic_id=calendar.clinic_id, client_id=uuid.uuid4(), correlation_id="bench"
    )
    start = completed_at - timedelta(days=45)
    plan = plan_course(calendar, Bookings(), uuid.uuid4(), start)
    if not isinstance(plan, CoursePlan):
        raise FigureFailed(f"no course fits an empty calendar: {plan.reason}")
    schedule, _ = lifecycle.course_booked(schedule, plan, start)
    for appointment in plan.appointments:
        schedule = checked_in(schedule, appointment, calendar)
        schedule, _ = lifecycle.complete_session(
            schedule,
            appointment.appointment_id,
            ride_home_confirmed=True,
            phq9_total=6,
            phq9_item9=0,
            calendar=calendar,
            now=completed_at,
        )
    course = schedule.course
    if course is None or course.completed_at is None or course.next_booster != 1:
        raise FigureFailed("holding every session did not complete the course")
    return schedule


def checked_in(
    schedule: ClientSchedule,
    appointment: ev.Appointment,
    calendar: ClinicCalendar,
    answers: ev.CheckInAnswers = PASSING_CHECKIN,
) -> ClientSchedule:
    """A medicine session checked in as it starts (other sessions need none)."""
    if appointment.kind not in (ev.AppointmentKind.MEDICINE, ev.AppointmentKind.BOOSTER):
        return schedule
    schedule, _ = medicine.check_in(
        schedule, appointment.appointment_id, answers, calendar, appointment.starts_at
    )
    return schedule


def due_at(schedule: ClientSchedule, client_id: uuid.UUID, due: datetime) -> ClientSchedule:
    """The same completed course for another client, its first booster due at `due`."""
    assert schedule.course is not None
    course = schedule.course.model_copy(update={"next_booster_due_at": due})
    return schedule.model_copy(
        update={"client_id": client_id, "correlation_id": str(client_id), "course": course}
    )
