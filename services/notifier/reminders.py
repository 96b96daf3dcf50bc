"""When messages go out: the clinic's send window and reminder times (rules 12, 13).

Pure: `now` is passed in, instants are aware UTC, and every window decision is
taken on the clinic's wall clock through zoneinfo, so it holds across
daylight-saving changes.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

GRACE = timedelta(minutes=3)
"""How long a change notice waits, so rapid changes collapse into one (see pending.py)."""


class SendWindow(NamedTuple):
    """Clinic-local wall times between which clients may be messaged, both ends included."""

    start: time
    end: time

    def contains(self, wall: time) -> bool:
        return self.start <= wall <= self.end


DEFAULT_SEND_WINDOW = SendWindow(time(9, 0), time(20, 0))


def at_wall_time(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """The UTC instant of a clinic wall time.

    A wall time that a spring-forward skips is read with the offset before the
    change (zoneinfo's fold=0), i.e. it lands an hour later on the new clock.
    """
    return datetime.combine(day, wall, tzinfo=tz).astimezone(UTC)


def nominal_send_at(appointment_start: datetime, lead: timedelta, tz: ZoneInfo) -> datetime:
    """`lead` before the start: whole days on the clinic calendar, the rest in elapsed time.

    So "24 h before" a Sunday 10:00 session is Saturday 10:00 clinic time even
    when the clocks change overnight, while "2 h before" stays two real hours.
    """
    local_start = appointment_start.astimezone(tz)
    whole_days = timedelta(days=lead.days)
    same_wall_time = at_wall_time(local_start.date() - whole_days, local_start.time(), tz)
    return same_wall_time - (lead - whole_days)


def reminder_send_at(
    appointment_start: datetime,
    lead: timedelta,
    tz: ZoneInfo,
    send_window: SendWindow = DEFAULT_SEND_WINDOW,
    *,
    now: datetime,
) -> datetime | None:
    """When a reminder `lead` before `appointment_start` goes out, or None to skip it.

    Inside the window the nominal time stands. Before the window opens it moves
    to that day's opening if that is still before the session, else to the
    previous evening's close; after the window closes it moves back to that
    day's close. A time already past is replaced by `now` when the session is
    still ahead and `now` is inside the window; otherwise the reminder is
    skipped (None): a late reminder outside the window would wake the client.
    """
    if lead <= timedelta(0):
        raise ValueError(f"a reminder lead must be positive, got {lead}")
    send_at = _into_window_before(
        nominal_send_at(appointment_start, lead, tz), appointment_start, tz, send_window
    )
    if send_at >= now:
        return send_at
    if appointment_start > now and send_window.contains(now.astimezone(tz).time()):
        return now
    return None


def _into_window_before(
    nominal: datetime, appointment_start: datetime, tz: ZoneInfo, window: SendWindow
) -> datetime:
    local = nominal.astimezone(tz)
    if window.contains(local.time()):
        return nominal
    if local.time() > window.end:
        return at_wall_time(local.date(), window.end, tz)
    opening = at_wall_time(local.date(), window.start, tz)
    if opening < appointment_start:
        return opening
    return at_wall_time(local.date() - timedelta(days=1), window.end, tz)


def next_in_window(
    instant: datetime, tz: ZoneInfo, send_window: SendWindow = DEFAULT_SEND_WINDOW
) -> datetime:
    """`instant` if it falls inside the window, else the next time the window opens."""
    local = instant.astimezone(tz)
    if send_window.contains(local.time()):
        return instant.astimezone(UTC)
    day = local.date() if local.time() < send_window.start else local.date() + timedelta(days=1)
    return at_wall_time(day, send_window.start, tz)


def next_morning(
    instant: datetime, tz: ZoneInfo, send_window: SendWindow = DEFAULT_SEND_WINDOW
) -> datetime:
    """When the window opens on the clinic-local day after `instant`."""
    return at_wall_time(instant.astimezone(tz).date() + timedelta(days=1), send_window.start, tz)
