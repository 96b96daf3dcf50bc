"""The course rules of the protocol, checked on a finished plan: one place, used by many tests."""

from __future__ import annotations

from datetime import date, timedelta
from itertools import pairwise

from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.plans import CoursePlan
from shared.events import Appointment, AppointmentKind

MEDICINE = AppointmentKind.MEDICINE
INTEGRATION = AppointmentKind.INTEGRATION
PREPARATION = AppointmentKind.PREPARATION


def doses(plan: CoursePlan) -> list[Appointment]:
    return [a for a in plan.appointments if a.kind is MEDICINE]


def of_kind(plan: CoursePlan, kind: AppointmentKind) -> list[Appointment]:
    return [a for a in plan.appointments if a.kind is kind]


def local_day(calendar: ClinicCalendar, appointment: Appointment) -> date:
    return appointment.starts_at.astimezone(calendar.tz).date()


def assert_follows_the_protocol(calendar: ClinicCalendar, plan: CoursePlan) -> None:
    policy = calendar.policy
    sessions = list(plan.appointments)
    assert sessions == sorted(sessions, key=lambda a: a.starts_at)

    days = [local_day(calendar, a) for a in sessions]
    assert days == sorted(set(days)), "one course session per client per local day"

    medicine = doses(plan)
    assert [a.dose_number for a in medicine] == list(range(1, policy.medicine_sessions + 1))
    assert len(of_kind(plan, PREPARATION)) == policy.preparation_sessions
    assert all(p.ends_at <= medicine[0].starts_at for p in of_kind(plan, PREPARATION))

    first_day = local_day(calendar, medicine[0])
    assert plan.window_ends_on == first_day + timedelta(days=policy.course_window_days - 1)
    for earlier, later in pairwise(medicine):
        gap = later.starts_at - earlier.starts_at
        assert gap >= timedelta(hours=policy.min_hours_between_doses)
    weeks = [
        local_day(calendar, a) - timedelta(days=local_day(calendar, a).weekday()) for a in medicine
    ]
    assert max(weeks.count(week) for week in weeks) <= policy.max_doses_per_week

    _assert_integrations(calendar, plan)
    for appointment in sessions:
        _assert_inside_hours(calendar, appointment)
        minutes = policy.minutes_of(appointment.kind)
        assert appointment.ends_at - appointment.starts_at == timedelta(minutes=minutes)
        assert (appointment.room_id is not None) == (appointment.kind is MEDICINE)
        if appointment.kind in (MEDICINE, INTEGRATION):
            assert local_day(calendar, appointment) <= plan.window_ends_on


def _assert_integrations(calendar: ClinicCalendar, plan: CoursePlan) -> None:
    earliest, latest = calendar.policy.integration_days_after
    integrated: list[int] = []
    last_dose: Appointment | None = None
    for appointment in plan.appointments:
        if appointment.kind is MEDICINE:
            last_dose = appointment
        elif appointment.kind is INTEGRATION:
            assert last_dose is not None
            assert last_dose.dose_number is not None
            assert last_dose.dose_number not in integrated, "integration comes before next dose"
            integrated.append(last_dose.dose_number)
            days_after = (local_day(calendar, appointment) - local_day(calendar, last_dose)).days
            assert earliest <= days_after <= latest
    expected = [
        dose
        for dose in range(1, calendar.policy.medicine_sessions + 1)
        if calendar.policy.integration_follows(dose)
    ]
    assert integrated == expected


def _assert_inside_hours(calendar: ClinicCalendar, appointment: Appointment) -> None:
    start = appointment.starts_at.astimezone(calendar.tz)
    end = appointment.ends_at.astimezone(calendar.tz)
    assert start.date() == end.date()
    assert start.date() not in calendar.closures
    ranges = calendar.opening_hours.on(start.weekday())
    assert any(r.start <= start.time() and end.time() <= r.end for r in ranges)
    therapist = next(t for t in calendar.therapists if t.id == appointment.therapist_id)
    mine = therapist.availability.on(start.weekday())
    assert any(r.start <= start.time() and end.time() <= r.end for r in mine)
