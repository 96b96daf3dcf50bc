from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from services.notifier.model import MessageKind, PlannedMessage
from services.notifier.pending import supersede
from shared import events as ev
from tests.unit.notifier.samples import COURSE, DOSE_1, INTEGRATION, NOW, at, event_fields, plan

SECOND_CHANGE = NOW + timedelta(minutes=1)
FIRST_TOLD = at("2026-03-31T10:00+01:00")


def rescheduled(
    to: ev.Appointment,
    changed_at: datetime,
    cause: str,
    previous: datetime = FIRST_TOLD,
) -> PlannedMessage:
    event = ev.SessionRescheduled(
        **event_fields(changed_at),
        course_id=COURSE,
        appointment=to,
        previous_starts_at=previous,
    )
    return _notice(plan(event, now=changed_at, cause_event_id=cause))


def booked(changed_at: datetime = NOW) -> PlannedMessage:
    event = ev.SessionScheduled(**event_fields(changed_at), course_id=COURSE, appointment=DOSE_1)
    return _notice(plan(event, now=changed_at, cause_event_id="booked"))


def cancelled(changed_at: datetime) -> PlannedMessage:
    event = ev.SessionCancelled(
        **event_fields(changed_at),
        course_id=COURSE,
        appointment_id=DOSE_1.appointment_id,
        kind=DOSE_1.kind,
        late=False,
    )
    return _notice(plan(event, now=changed_at, cause_event_id="cancelled"))


def _notice(messages: list[PlannedMessage]) -> PlannedMessage:
    (notice,) = [m for m in messages if m.slot and m.slot.endswith("/notice")]
    return notice


LATER_DOSE = DOSE_1.model_copy(
    update={"starts_at": at("2026-04-03T10:00+01:00"), "ends_at": at("2026-04-03T13:00+01:00")}
)


def test_first_change_is_pending_for_the_grace_period() -> None:
    notice = rescheduled(DOSE_1, NOW, "first")
    pending = supersede(None, notice, changed_at=NOW)
    assert pending is not None
    assert (pending.version, pending.due_at) == (1, NOW + timedelta(minutes=3))


def test_second_change_within_grace_replaces_the_first_and_restarts_the_wait() -> None:
    first = supersede(None, rescheduled(DOSE_1, NOW, "first"), changed_at=NOW)
    second = supersede(
        first, rescheduled(LATER_DOSE, SECOND_CHANGE, "second"), changed_at=SECOND_CHANGE
    )
    assert second is not None
    assert second.version == 2
    assert second.due_at == SECOND_CHANGE + timedelta(minutes=3)
    assert second.message.context["starts_at"] == "Friday 3 April 2026, 10:00 WEST"


def test_change_replayed_out_of_order_leaves_the_newer_notice() -> None:
    newer = supersede(
        None, rescheduled(LATER_DOSE, SECOND_CHANGE, "second"), changed_at=SECOND_CHANGE
    )
    assert supersede(newer, rescheduled(DOSE_1, NOW, "first"), changed_at=NOW) == newer


def test_session_booked_then_moved_is_announced_once_as_booked_at_the_new_time() -> None:
    pending = supersede(None, booked(), changed_at=NOW)
    merged = supersede(
        pending, rescheduled(LATER_DOSE, SECOND_CHANGE, "moved"), changed_at=SECOND_CHANGE
    )
    assert merged is not None
    assert merged.message.kind == MessageKind.SESSION_BOOKED
    assert merged.message.context["starts_at"] == "Friday 3 April 2026, 10:00 WEST"


def test_session_booked_then_cancelled_within_grace_is_not_announced() -> None:
    pending = supersede(None, booked(), changed_at=NOW)
    assert supersede(pending, cancelled(SECOND_CHANGE), changed_at=SECOND_CHANGE) is None


def test_moved_then_cancelled_sends_only_the_cancellation() -> None:
    pending = supersede(None, rescheduled(LATER_DOSE, NOW, "moved"), changed_at=NOW)
    final = supersede(pending, cancelled(SECOND_CHANGE), changed_at=SECOND_CHANGE)
    assert final is not None
    assert final.message.kind == MessageKind.SESSION_CANCELLED


def test_only_change_notices_about_the_same_appointment_supersede() -> None:
    pending = supersede(None, booked(), changed_at=NOW)
    other = rescheduled(INTEGRATION, SECOND_CHANGE, "other")
    with pytest.raises(ValueError, match="same appointment"):
        supersede(pending, other, changed_at=SECOND_CHANGE)
    reminder = next(
        m
        for m in plan(ev.SessionScheduled(**event_fields(), course_id=COURSE, appointment=DOSE_1))
        if m.kind == MessageKind.REMINDER_2H
    )
    with pytest.raises(ValueError, match="not a change notice"):
        supersede(pending, reminder, changed_at=SECOND_CHANGE)


TOLD = at("2026-03-30T10:00+01:00")
NEVER_TOLD = at("2026-04-01T10:00+01:00")
IN_BETWEEN = DOSE_1.model_copy(
    update={"starts_at": NEVER_TOLD, "ends_at": NEVER_TOLD + timedelta(hours=3)}
)


def test_two_moves_inside_the_grace_period_name_the_time_the_client_was_last_told() -> None:
    first = supersede(None, rescheduled(IN_BETWEEN, NOW, "first", TOLD), changed_at=NOW)
    second = supersede(
        first,
        rescheduled(LATER_DOSE, SECOND_CHANGE, "second", NEVER_TOLD),
        changed_at=SECOND_CHANGE,
    )
    assert second is not None
    assert second.message.context["previous_starts_at"] == "Monday 30 March 2026, 10:00 WEST"
    assert second.message.context["starts_at"] == "Friday 3 April 2026, 10:00 WEST"


def test_a_move_after_the_notice_went_names_the_time_that_notice_told() -> None:
    # The first notice was sent: no pending one is left, so the event's previous time stands.
    after = supersede(
        None, rescheduled(LATER_DOSE, SECOND_CHANGE, "second", NEVER_TOLD), changed_at=SECOND_CHANGE
    )
    assert after is not None
    assert after.message.context["previous_starts_at"] == "Wednesday 1 April 2026, 10:00 WEST"


def test_moved_and_moved_back_inside_the_grace_period_is_not_announced() -> None:
    told_dose = DOSE_1.model_copy(update={"starts_at": TOLD, "ends_at": TOLD + timedelta(hours=3)})
    first = supersede(None, rescheduled(IN_BETWEEN, NOW, "first", TOLD), changed_at=NOW)
    back = rescheduled(told_dose, SECOND_CHANGE, "back", NEVER_TOLD)
    assert supersede(first, back, changed_at=SECOND_CHANGE) is None
