"""Small clinic calendars for the scheduler's unit tests, built the way the JSON config is."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from services.scheduler.domain.clinic import ClinicCalendar
from services.scheduler.domain.plans import Bookings
from shared.events import Appointment

WEEKDAYS = (0, 1, 2, 3, 4)
EVERY_DAY = (0, 1, 2, 3, 4, 5, 6)


def hours(days: tuple[int, ...] = WEEKDAYS, start: str = "09:00", end: str = "17:00") -> Any:
    return {str(day): [{"start": start, "end": end}] for day in days}


def therapist(therapist_id: str, days: tuple[int, ...] = WEEKDAYS, **extra: Any) -> dict[str, Any]:
    return {
        "id": therapist_id,
        "display_name": therapist_id.title(),
        "availability": hours(days),
        **extra,
    }


def clinic(
    *,
    timezone: str = "Europe/Lisbon",
    open_days: tuple[int, ...] = WEEKDAYS,
    therapists: list[dict[str, Any]] | None = None,
    rooms: int = 1,
    closures: tuple[str, ...] = (),
    policy: dict[str, Any] | None = None,
) -> ClinicCalendar:
    return ClinicCalendar.model_validate(
        {
            "clinic_id": "lisbon",
            "timezone": timezone,
            "opening_hours": hours(open_days),
            "therapists": therapists if therapists is not None else [therapist("ana")],
            "rooms": [{"id": f"room-{n}", "name": f"Room {n}"} for n in range(1, rooms + 1)],
            "closures": list(closures),
            "policy": policy or {},
        }
    )


def local(calendar: ClinicCalendar, day: str, at: str = "00:00") -> datetime:
    """A clinic-local wall time as an aware UTC instant."""
    wall = datetime.combine(date.fromisoformat(day), time.fromisoformat(at))
    return wall.replace(tzinfo=calendar.tz).astimezone(UTC)


def wall(calendar: ClinicCalendar, instant: datetime) -> datetime:
    return instant.astimezone(calendar.tz)


def busy(*spans: tuple[datetime, datetime]) -> list[dict[str, datetime]]:
    return [{"starts_at": start, "ends_at": end} for start, end in spans]


def booked_all_day(calendar: ClinicCalendar, first: str, days: int) -> list[dict[str, datetime]]:
    """Busy from local midnight of `first` for `days` whole local days."""
    start = local(calendar, first)
    tz: ZoneInfo = calendar.tz
    end_day = date.fromisoformat(first) + timedelta(days=days)
    end = datetime.combine(end_day, time(0), tzinfo=tz).astimezone(UTC)
    return busy((start, end))


def bookings(**resources: Any) -> Bookings:
    return Bookings.model_validate(resources)


def local_days(calendar: ClinicCalendar, appointments: Sequence[Appointment]) -> list[date]:
    return [wall(calendar, a.starts_at).date() for a in appointments]
