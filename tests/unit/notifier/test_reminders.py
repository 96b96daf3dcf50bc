from __future__ import annotations

from datetime import time, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.notifier.reminders import (
    SendWindow,
    next_in_window,
    next_morning,
    reminder_send_at,
)
from tests.unit.notifier.samples import at

LISBON = ZoneInfo("Europe/Lisbon")
NEW_YORK = ZoneInfo("America/New_York")
DAY = timedelta(hours=24)
TWO_HOURS = timedelta(hours=2)
LONG_AGO = at("2026-01-01T00:00+00:00")


def test_day_before_reminder_keeps_the_wall_time_across_the_lisbon_spring_change() -> None:
    # Clocks go forward on Sunday 29 March 2026: 10:00 WEST Sunday, 10:00 WET Saturday.
    session = at("2026-03-29T10:00+01:00")
    assert reminder_send_at(session, DAY, LISBON, now=LONG_AGO) == at("2026-03-28T10:00+00:00")


def test_early_reminder_moves_to_window_opening_on_the_new_lisbon_offset() -> None:
    session = at("2026-03-29T10:00+01:00")  # nominal 08:00 WEST, before the window
    assert reminder_send_at(session, TWO_HOURS, LISBON, now=LONG_AGO) == at(
        "2026-03-29T09:00+01:00"
    )


def test_day_before_reminder_keeps_the_wall_time_across_the_new_york_fall_change() -> None:
    # Clocks go back on Sunday 1 November 2026: 10:00 EST Sunday, 10:00 EDT Saturday.
    session = at("2026-11-01T10:00-05:00")
    assert reminder_send_at(session, DAY, NEW_YORK, now=LONG_AGO) == at("2026-10-31T10:00-04:00")


def test_reminder_before_an_early_session_moves_to_the_previous_evening_across_dst() -> None:
    # 08:00 EST Monday: 06:00 is too early, 09:00 is after the session, so Sunday 20:00 EST.
    session = at("2026-11-02T08:00-05:00")
    assert reminder_send_at(session, TWO_HOURS, NEW_YORK, now=LONG_AGO) == at(
        "2026-11-01T20:00-05:00"
    )


def test_late_evening_reminder_moves_back_to_window_close_on_the_old_offset() -> None:
    session = at("2026-11-01T21:30-05:00")  # nominal Saturday 21:30 EDT
    assert reminder_send_at(session, DAY, NEW_YORK, now=LONG_AGO) == at("2026-10-31T20:00-04:00")


def test_reminder_inside_the_window_is_sent_at_its_nominal_time() -> None:
    session = at("2026-04-15T16:00+01:00")
    assert reminder_send_at(session, TWO_HOURS, LISBON, now=LONG_AGO) == at(
        "2026-04-15T14:00+01:00"
    )


def test_early_reminder_goes_at_window_opening_when_that_is_still_before_the_session() -> None:
    session = at("2026-04-15T10:30+01:00")
    assert reminder_send_at(session, TWO_HOURS, LISBON, now=LONG_AGO) == at(
        "2026-04-15T09:00+01:00"
    )


def test_clinic_send_window_is_honoured() -> None:
    session = at("2026-04-15T10:30+01:00")
    window = SendWindow(time(8, 0), time(18, 0))
    send_at = reminder_send_at(session, TWO_HOURS, LISBON, window, now=LONG_AGO)
    assert send_at == at("2026-04-15T08:30+01:00")


def test_late_reminder_goes_now_when_the_session_is_ahead_and_now_is_in_the_window() -> None:
    session = at("2026-04-15T16:00+01:00")
    now = at("2026-04-15T12:00+01:00")
    assert reminder_send_at(session, DAY, LISBON, now=now) == now


def test_late_reminder_is_skipped_outside_the_window() -> None:
    session = at("2026-04-15T10:00+01:00")
    now = at("2026-04-14T22:00+01:00")
    assert reminder_send_at(session, DAY, LISBON, now=now) is None


def test_reminder_for_a_session_already_started_is_skipped() -> None:
    session = at("2026-04-15T10:00+01:00")
    assert reminder_send_at(session, TWO_HOURS, LISBON, now=session + TWO_HOURS) is None


def test_reminder_lead_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        reminder_send_at(at("2026-04-15T10:00+01:00"), timedelta(0), LISBON, now=LONG_AGO)


def test_instant_outside_the_window_waits_for_the_next_opening() -> None:
    assert next_in_window(at("2026-03-28T22:00+00:00"), LISBON) == at("2026-03-29T09:00+01:00")
    assert next_in_window(at("2026-03-29T07:00+01:00"), LISBON) == at("2026-03-29T09:00+01:00")


def test_instant_inside_the_window_stays() -> None:
    instant = at("2026-03-29T12:00+01:00")
    assert next_in_window(instant, LISBON) == instant


def test_next_morning_is_the_window_opening_on_the_next_clinic_day() -> None:
    assert next_morning(at("2026-10-31T23:30-04:00"), NEW_YORK) == at("2026-11-01T09:00-05:00")
