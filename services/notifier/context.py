"""What each message says: template variables built from events, in clinic time (rule 12).

Times are formatted here, at planning, so a stored plan renders the same way
whenever it is sent and templates need no time-zone logic.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from pydantic import JsonValue

from services.notifier.model import DOSING_KINDS
from shared.events import (
    Appointment,
    AppointmentKind,
    BoosterSessionBooked,
    MeasureDue,
    MeasurePoint,
)

Context = dict[str, JsonValue]

# Wording for email bodies only; SMS and subjects say "appointment" (rule 14).
SESSION_LABELS = {
    AppointmentKind.CONSULTATION: "free consultation",
    AppointmentKind.PREPARATION: "preparation session",
    AppointmentKind.MEDICINE: "medicine session",
    AppointmentKind.INTEGRATION: "integration session",
    AppointmentKind.BOOSTER: "booster session",
}

# Rule 9: fasting before a medicine session.
NO_FOOD_BEFORE = timedelta(hours=2)
NO_LIQUIDS_BEFORE = timedelta(minutes=30)


def clinic_time(instant: datetime, tz: ZoneInfo) -> str:
    """E.g. "Tuesday 31 March 2026, 09:00 WEST"."""
    local = instant.astimezone(tz)
    return f"{local:%A} {local.day} {local:%B %Y, %H:%M %Z}"


def clinic_day(day: date) -> str:
    """E.g. "Friday 17 April 2026"."""
    return f"{day:%A} {day.day} {day:%B %Y}"


def clock_time(instant: datetime, tz: ZoneInfo) -> str:
    return f"{instant.astimezone(tz):%H:%M}"


def appointment(appt: Appointment, tz: ZoneInfo) -> Context:
    return {
        "session_label": SESSION_LABELS[appt.kind],
        "starts_at": clinic_time(appt.starts_at, tz),
        "duration_minutes": int((appt.ends_at - appt.starts_at).total_seconds() // 60),
        "is_dosing": appt.kind in DOSING_KINDS,
        "dose_number": appt.dose_number,
    }


def instructions(appt: Appointment, tz: ZoneInfo) -> Context:
    return {
        **appointment(appt, tz),
        "no_food_from": clock_time(appt.starts_at - NO_FOOD_BEFORE, tz),
        "no_liquids_from": clock_time(appt.starts_at - NO_LIQUIDS_BEFORE, tz),
    }


def course(
    appointments: Iterable[Appointment], window_ends_on: date | None, tz: ZoneInfo
) -> Context:
    in_order = sorted(appointments, key=lambda appt: appt.starts_at)
    sessions: list[JsonValue] = [appointment(appt, tz) for appt in in_order]
    return {
        "sessions": sessions,
        "session_count": len(in_order),
        "dosing_count": sum(appt.kind in DOSING_KINDS for appt in in_order),
        "window_ends_on": clinic_day(window_ends_on) if window_ends_on else None,
    }


def booster(booked: BoosterSessionBooked, tz: ZoneInfo) -> Context:
    return {**course(booked.appointments, None, tz), "number": booked.booster_number}


def measure(due: MeasureDue, tz: ZoneInfo) -> Context:
    """A measure request: which measure (its link is minted at hand-over: measures.py), and
    until when it is open; no score, no instrument's name (rule 14)."""
    return {
        "measure_id": str(due.measure_id),
        "before_session": due.point == MeasurePoint.PRE_DOSE,
        "closes_at": clinic_time(due.closes_at, tz),
        "closes_at_utc": due.closes_at.isoformat(),
    }
