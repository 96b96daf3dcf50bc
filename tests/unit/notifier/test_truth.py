"""Only true messages (issue 14, fault 9), the pure parts: what makes a time-bound message
stale, the notifier's projection of appointments, the schedule-lag decision and when the
delivery loop wakes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from chassis.clock import WAKE_SLACK_S, FrozenClock, ScaledClock, SystemClock, next_wake_s
from services.notifier.appointment_facts import appointment_facts
from services.notifier.context import clinic_time
from services.notifier.lag_records import Change, Subject, uncommitted, waiting
from services.notifier.model import MessageKind, PlannedMessage
from services.notifier.staleness import AppointmentFact, announced_start, staleness
from shared import events as ev
from tests.unit.notifier.samples import (
    COURSE,
    DOSE_1,
    INTEGRATION,
    NOW,
    course_booked,
    event_fields,
    plan,
)

Kind = MessageKind
Status = ev.AppointmentStatus


def _one(kind: Kind, event: ev.Event | None = None) -> PlannedMessage:
    [message] = [m for m in plan(event or course_booked()) if m.kind == kind]
    return message


def _fact(status: Status, starts_at: datetime | None, as_of: datetime = NOW) -> AppointmentFact:
    return AppointmentFact(
        appointment_id=DOSE_1.appointment_id, status=status, starts_at=starts_at, as_of=as_of
    )


# --- what a time-bound message refers to --------------------------------------


def test_reminders_and_instructions_carry_the_start_they_announce() -> None:
    for kind in (Kind.REMINDER_24H, Kind.REMINDER_2H, Kind.SESSION_INSTRUCTIONS):
        message = [
            m
            for m in plan(course_booked())
            if m.kind == kind and m.appointment_id == DOSE_1.appointment_id
        ]
        assert [m.refers_to for m in message] == [DOSE_1.starts_at]


# --- staleness ----------------------------------------------------------------


def test_a_reminder_still_true_is_sent() -> None:
    reminder = _one(
        Kind.REMINDER_2H,
        ev.SessionScheduled(**event_fields(), course_id=COURSE, appointment=DOSE_1),
    )
    booked = _fact(Status.BOOKED, DOSE_1.starts_at)
    assert staleness(reminder, booked, reminder.send_at) is None
    assert staleness(reminder, None, reminder.send_at) is None  # nothing heard: as planned


def test_a_reminder_for_a_moved_session_is_stale() -> None:
    reminder = _one(
        Kind.REMINDER_24H,
        ev.SessionScheduled(**event_fields(), course_id=COURSE, appointment=DOSE_1),
    )
    moved = _fact(Status.BOOKED, DOSE_1.starts_at + timedelta(days=1))
    assert staleness(reminder, moved, reminder.send_at) == "stale: the appointment moved"


def test_a_reminder_for_a_cancelled_or_missed_session_is_stale() -> None:
    instructions = _one(
        Kind.SESSION_INSTRUCTIONS,
        ev.SessionScheduled(**event_fields(), course_id=COURSE, appointment=DOSE_1),
    )
    for status in (Status.CANCELLED, Status.NOSHOW, Status.FULFILLED):
        reason = staleness(instructions, _fact(status, None), instructions.send_at)
        assert reason == f"stale: the appointment is {status.value}"


def test_nothing_time_bound_goes_once_its_session_started() -> None:
    reminder = _one(
        Kind.REMINDER_2H,
        ev.SessionScheduled(**event_fields(), course_id=COURSE, appointment=DOSE_1),
    )
    booked = _fact(Status.BOOKED, DOSE_1.starts_at)
    assert staleness(reminder, booked, reminder.send_at) is None
    assert staleness(reminder, booked, DOSE_1.starts_at) == "stale: the session had already started"


def test_a_message_that_cannot_go_out_before_halfway_to_its_start_is_too_late() -> None:
    scheduled = ev.SessionScheduled(**event_fields(), course_id=COURSE, appointment=DOSE_1)
    booked = _fact(Status.BOOKED, DOSE_1.starts_at)
    for kind in (Kind.REMINDER_24H, Kind.REMINDER_2H, Kind.SESSION_INSTRUCTIONS):
        message = _one(kind, scheduled)
        halfway = message.send_at + (DOSE_1.starts_at - message.send_at) / 2
        assert staleness(message, booked, halfway - timedelta(seconds=1)) is None, kind
        assert staleness(message, booked, halfway) == "stale: too late to be useful", kind
        assert staleness(message, None, halfway) == "stale: too late to be useful", kind
    # A "24 h" reminder more than twelve hours late (a "2 h" one more than an hour late).
    day = _one(Kind.REMINDER_24H, scheduled)
    assert DOSE_1.starts_at - day.send_at == timedelta(hours=24)
    assert staleness(day, booked, day.send_at + timedelta(hours=11, minutes=59)) is None
    assert staleness(day, booked, day.send_at + timedelta(hours=12, minutes=1)) is not None


def test_a_plan_stored_without_its_start_is_checked_against_the_projections_start() -> None:
    reminder = _one(
        Kind.REMINDER_2H,
        ev.SessionScheduled(**event_fields(), course_id=COURSE, appointment=DOSE_1),
    ).model_copy(update={"refers_to": None})  # as planned before the field existed
    booked = _fact(Status.BOOKED, DOSE_1.starts_at)
    assert staleness(reminder, booked, reminder.send_at + timedelta(minutes=1)) is None
    assert staleness(reminder, booked, DOSE_1.starts_at) == "stale: the session had already started"


def test_a_plan_stored_before_the_upgrade_with_no_projection_reads_its_start_from_its_text() -> (
    None
):
    """The old notifier planned without `refers_to` and wrote no projection (make upgrade)."""
    lisbon = ZoneInfo("Europe/Lisbon")
    for kind in (Kind.REMINDER_2H, Kind.REMINDER_24H, Kind.SESSION_INSTRUCTIONS):
        message = _one(
            kind, ev.SessionScheduled(**event_fields(), course_id=COURSE, appointment=DOSE_1)
        ).model_copy(update={"refers_to": None})
        assert announced_start(message, lisbon) == DOSE_1.starts_at, kind
        started = staleness(message, None, DOSE_1.starts_at, lisbon)
        assert started == "stale: the session had already started", kind
        assert staleness(message, None, message.send_at, lisbon) is None, kind


def test_a_start_in_a_repeated_hour_is_read_by_its_zone_abbreviation() -> None:
    """25 October 2026, 01:30 happens twice in Lisbon: WEST (UTC+1), then WET (UTC)."""
    lisbon = ZoneInfo("Europe/Lisbon")
    first, second = (
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 25, 1, 30, tzinfo=UTC),
    )
    for instant in (first, second):
        scheduled = ev.SessionScheduled(**event_fields(), course_id=COURSE, appointment=DOSE_1)
        message = _one(Kind.REMINDER_2H, scheduled).model_copy(
            update={"refers_to": None, "context": {"starts_at": clinic_time(instant, lisbon)}}
        )
        assert announced_start(message, lisbon) == instant


def test_messages_that_are_not_time_bound_are_never_stale() -> None:
    alert = ev.ClinicalAlertRaised(
        **event_fields(), reason="phq9_item9_positive", phq9_item9=3, raised_during="session"
    )
    for message in plan(alert):  # the alert and its escalation
        assert staleness(message, None, NOW + timedelta(days=30)) is None


# --- the projection -----------------------------------------------------------


def test_schedule_events_become_appointment_facts() -> None:
    later = NOW + timedelta(minutes=5)
    moved_to = DOSE_1.starts_at + timedelta(days=1)
    moved = DOSE_1.model_copy(update={"starts_at": moved_to, "ends_at": moved_to})
    rescheduled = ev.SessionRescheduled(
        **event_fields(later),
        course_id=COURSE,
        appointment=moved,
        previous_starts_at=DOSE_1.starts_at,
    )
    [fact] = appointment_facts(rescheduled)
    assert (fact.status, fact.starts_at, fact.as_of) == (Status.BOOKED, moved_to, later)
    missed = ev.SessionMissed(
        **event_fields(),
        course_id=COURSE,
        appointment_id=INTEGRATION.appointment_id,
        kind=INTEGRATION.kind,
    )
    assert [f.status for f in appointment_facts(missed)] == [Status.NOSHOW]
    assert len(appointment_facts(course_booked())) == 3
    assert appointment_facts(ev.ScreeningCompleted(**event_fields(), eligible=True)) == ()


def test_an_older_fact_never_replaces_a_newer_one_and_a_known_start_is_kept() -> None:
    booked = _fact(Status.BOOKED, DOSE_1.starts_at, NOW)
    moved = _fact(Status.BOOKED, DOSE_1.starts_at + timedelta(days=1), NOW + timedelta(minutes=1))
    assert booked.after(moved) == moved  # a replay of the booking after the move
    assert moved.after(booked) == moved
    cancelled = _fact(Status.CANCELLED, None, NOW + timedelta(minutes=2))
    assert cancelled.after(moved).starts_at == moved.starts_at


# --- the lag gate -------------------------------------------------------------

P0, P1 = (
    TopicPartition("scheduler.session.rescheduled.v1", 0),
    TopicPartition("scheduler.session.rescheduled.v1", 1),
)


def test_the_records_to_read_are_those_the_group_has_not_committed() -> None:
    ends = {P0: 10, P1: 5}
    assert uncommitted({P0: 10, P1: 5}, ends) == {}
    assert uncommitted({P0: 7, P1: 5}, ends) == {P0: (7, 10)}
    # Never committed (absent or -1): from the start; a reader moves up to the first kept.
    assert uncommitted({P0: -1}, ends) == {P0: (0, 10), P1: (0, 5)}


ADA, BEA = uuid4(), uuid4()
DOSE1, DOSE2 = uuid4(), uuid4()


def _change(client: UUID, *appointments: UUID, event: str = "e1") -> Change:
    value = {"appointments": [{"appointment_id": str(a)} for a in appointments]}
    headers = [("ce_clinicid", b"c1"), ("ce_id", event.encode())]
    return Change.of(str(client).encode(), json.dumps(value).encode(), headers)


def test_a_message_waits_only_for_an_unapplied_change_to_its_own_appointment() -> None:
    wanted: dict[TopicPartition, set[Subject]] = {
        P0: {(ADA, DOSE1), (BEA, None)},
        P1: {(ADA, DOSE2)},
    }
    moved = _change(ADA, DOSE1)
    assert waiting(wanted, {P0: [moved]}, applied=set()) == {(ADA, DOSE1)}
    # Applied already (handled, not yet committed): nothing waits.
    assert waiting(wanted, {P0: [moved]}, applied={("c1", "e1", str(ADA))}) == set()
    # Another client's change, or another appointment's, on the same partition.
    assert waiting(wanted, {P0: [_change(BEA, DOSE2)]}, applied=set()) == {(BEA, None)}
    assert waiting(wanted, {P1: [_change(ADA, DOSE1)]}, applied=set()) == set()
    # Unreadable, or too many to read: anything may be waiting.
    unreadable = Change.of(str(ADA).encode(), b"not json")
    assert waiting(wanted, {P1: [unreadable]}, applied=set()) == {(ADA, DOSE2)}
    assert waiting(wanted, {P1: None}, applied=set()) == {(ADA, DOSE2)}


def test_the_lag_bound_is_the_smaller_of_the_real_bound_and_that_span_on_the_clock() -> None:
    from services.notifier.lag import real_bound_s  # new with the per-client gate

    demo = ScaledClock(NOW, datetime.now(UTC), 86_400)  # one clinic day per real second
    assert real_bound_s(5.0, demo) == 5.0 / 86_400  # 5 clinic seconds: 58 real microseconds
    assert real_bound_s(5.0, SystemClock()) == 5.0
    assert real_bound_s(5.0, ScaledClock(NOW, datetime.now(UTC), 0.5)) == 5.0  # a slow clock
    assert real_bound_s(5.0, FrozenClock(NOW)) == 5.0  # a clock that does not move by itself
    assert real_bound_s(5.0, None) == 5.0


def test_a_client_is_looked_up_on_the_partition_its_events_are_keyed_to() -> None:
    from services.notifier.lag_records import partition_of  # new with the per-client gate

    partitioner = DefaultPartitioner()
    for number in range(200):
        client = uuid.UUID(int=number * 7919)
        for count in (1, 6, 12):
            expected = partitioner(str(client).encode(), list(range(count)), list(range(count)))
            assert partition_of(client, count) == expected


# --- waking at the next due time ------------------------------------------------


def test_delivery_sleeps_until_the_next_message_falls_due_on_a_fast_clock() -> None:
    demo = ScaledClock(NOW, datetime.now(UTC), 86_400)  # one clinic day per real second
    due = demo.now() + timedelta(hours=2)  # a twelfth of a real second away
    wait = next_wake_s(demo, due, poll_s=0.2)
    assert abs(wait - (2 / 24 + WAKE_SLACK_S)) < 0.01
    assert next_wake_s(demo, demo.now() + timedelta(days=30), poll_s=0.2) == 0.2  # the bound
    assert next_wake_s(demo, demo.now() - timedelta(minutes=1), poll_s=0.2) == 0.0  # overdue
    assert next_wake_s(demo, None, poll_s=0.2) == 0.2  # nothing planned


def test_a_clock_that_does_not_move_by_itself_leaves_only_the_poll() -> None:
    frozen = FrozenClock(NOW)
    assert next_wake_s(frozen, NOW + timedelta(hours=1), poll_s=0.05) == 0.05
    assert next_wake_s(frozen, NOW, poll_s=0.05) == 0.0
