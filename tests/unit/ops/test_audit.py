"""Every auditor counter sees the failure it rules out, and counts exactly what was planted.

Each test starts from a clean history (all zeros), plants one fault the way the
topics or the sinks would show it, and checks that counter alone moves, by
exactly the number planted. Both NotificationSent forms are tried: with the
newer `appointment_id`/`refers_to` fields and without (resolved from the cause).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from ops import audit_rules
from ops.audit import Findings, Mail, Record, Text
from ops.audit_checks import FAILING, audit
from services.notifier.model import MessageKind, notification_id
from shared import events as ev
from tests.unit.ops.scenario import CLINIC, Clean, History, appointment, clean, utc

REPORTED = (*FAILING, "mail_resends", "sms_resends")
ZERO = dict.fromkeys(REPORTED, 0)
RULES = audit_rules.load()


def run(case: Clean, **kw: object) -> Findings:
    history = case.history
    return audit(
        history.records,
        RULES,
        mails=history.mails,
        texts=history.texts,
        now=case.now,
        **kw,  # type: ignore[arg-type]
    )


def counts(case: Clean) -> dict[str, int]:
    found = run(case).counts()
    return {name: found[name] for name in REPORTED}


@pytest.fixture(params=[True, False], ids=["with-fields", "derived-from-cause"])
def case(request: pytest.FixtureRequest) -> Clean:
    return clean(with_fields=request.param)


def test_a_clean_history_gives_all_zeros(case: Clean) -> None:
    found = run(case)
    assert {name: found.counts()[name] for name in REPORTED} == ZERO
    # 4 appointments x (24 h + 2 h), all on time; none skipped
    assert (found.reminders_on_time, found.reminders_late, found.reminders_skipped) == (8, 0, 0)


# --- overlaps ------------------------------------------------------------------


def other_client_booked(case: Clean, appt: ev.Appointment) -> None:
    case.history.consultation(uuid.uuid4(), utc(5, 23, 9), appt)


def test_an_overlap_per_therapist_is_counted(case: Clean) -> None:
    clash = appointment(ev.AppointmentKind.CONSULTATION, utc(6, 1, 10), 30, therapist="t-1")
    other_client_booked(case, clash)
    assert counts(case) == {**ZERO, "overlaps": 1}
    assert run(case).detail["overlaps_therapist"] == 1


def test_an_overlap_per_room_is_counted(case: Clean) -> None:
    clash = appointment(
        ev.AppointmentKind.CONSULTATION, utc(6, 1, 11), 30, therapist="t-9", room="recliner-1"
    )
    other_client_booked(case, clash)
    assert counts(case) == {**ZERO, "overlaps": 1}
    assert run(case).detail["overlaps_room"] == 1


def test_an_overlap_per_client_is_counted(case: Clean) -> None:
    clash = appointment(ev.AppointmentKind.CONSULTATION, utc(6, 1, 9, 30), 30, therapist="t-9")
    case.history.consultation(case.client, utc(5, 23, 9), clash)
    assert counts(case) == {**ZERO, "overlaps": 1}
    assert run(case).detail["overlaps_client"] == 1


def test_a_cancelled_appointment_overlaps_nothing(case: Clean) -> None:
    clash = appointment(ev.AppointmentKind.CONSULTATION, utc(6, 1, 10), 30, therapist="t-1")
    other = uuid.uuid4()
    history = case.history
    booked = history.add(
        ev.ConsultationBooked(**history.base(other, utc(5, 23, 9)), appointment=clash)
    )
    history.send(booked, MessageKind.CONSULTATION_BOOKED, utc(5, 23, 9), clash)
    history.add(
        ev.AppointmentStatusChanged(
            **history.base(other, utc(5, 23, 10)),
            appointment_id=clash.appointment_id,
            kind=clash.kind,
            status=ev.AppointmentStatus.CANCELLED,
            starts_at=clash.starts_at,
            ends_at=clash.ends_at,
        )
    )
    assert counts(case) == ZERO


# --- course rules ---------------------------------------------------------------


def test_doses_closer_than_the_minimum_spacing_are_a_violation() -> None:
    case = clean(dose2_at=utc(6, 2, 9))  # 24 h after the first, the protocol wants 48 h
    assert counts(case) == {**ZERO, "rule_violations": 1}
    assert run(case).detail["rule_spacing"] == 1


def test_a_third_dose_in_one_week_is_a_violation(case: Clean) -> None:
    history, medicine = case.history, ev.AppointmentKind.MEDICINE
    third = appointment(medicine, utc(6, 6, 9), 180, room="recliner-2", dose=3)  # Saturday
    added = history.add(
        ev.SessionScheduled(
            **history.base(case.client, utc(5, 28, 9)), course_id=case.course_id, appointment=third
        )
    )
    history.remind(added, third)
    assert counts(case) == {**ZERO, "rule_violations": 1}
    assert run(case).detail["rule_per_week"] == 1


def moved(case: Clean, appt: ev.Appointment, to: datetime, at: datetime) -> ev.Appointment:
    """`appt` moved to `to` at `at`: its first messages superseded, the new ones sent."""
    history = case.history
    later = appt.model_copy(
        update={"starts_at": to, "ends_at": to + (appt.ends_at - appt.starts_at)}
    )
    move = history.add(
        ev.SessionRescheduled(
            **history.base(case.client, at),
            course_id=case.course_id,
            appointment=later,
            previous_starts_at=appt.starts_at,
        )
    )
    forget(history, appt, case.course)
    history.remind(move, later)
    return later


def forget(history: History, appt: ev.Appointment, cause: Record) -> None:
    """Drop the messages `cause` planned for `appt` (never sent: superseded)."""
    kinds = (MessageKind.REMINDER_24H, MessageKind.REMINDER_2H, MessageKind.SESSION_INSTRUCTIONS)
    ids = {str(notification_id(cause.id, k, "email", "client", appt.appointment_id)) for k in kinds}
    history.records = [r for r in history.records if r.value.get("notification_id") not in ids]
    history.mails = [m for m in history.mails if m.message_id[1:].split("@")[0] not in ids]


def test_a_dose_moved_past_the_window_unannounced_is_a_violation(case: Clean) -> None:
    moved(case, case.dose2, utc(6, 23, 9), utc(5, 27, 9))
    case.now = utc(6, 24, 8)
    assert counts(case) == {**ZERO, "rule_violations": 1}
    assert run(case).detail["rule_outside_window"] == 1


def test_a_dose_moved_past_the_window_and_announced_so_is_allowed(case: Clean) -> None:
    later = moved(case, case.dose2, utc(6, 23, 9), utc(5, 27, 9))
    history = case.history
    move = next(r for r in history.records if r.topic.endswith("rescheduled.v1"))
    move.value["within_window"] = False
    assert later.starts_at == utc(6, 23, 9)
    case.now = utc(6, 24, 8)
    assert counts(case) == ZERO


# --- boosters ---------------------------------------------------------------------


def test_a_booster_announced_twice_with_two_ids_is_repeated(case: Clean) -> None:
    again = dict(case.booster.value, occurred_at=utc(6, 20, 8, 1).isoformat())
    case.history.records.append(
        dataclasses.replace(case.booster, id=str(uuid.uuid4()), value=again)
    )
    assert counts(case) == {**ZERO, "boosters_repeated": 1}
    assert run(case).detail["boosters_announced_twice"] == 1


def test_a_booster_republished_with_the_same_id_is_repeated(case: Clean) -> None:
    case.history.records.append(case.booster)
    assert counts(case) == {**ZERO, "boosters_repeated": 1}


def test_a_booster_due_at_ten_local_is_off_time(case: Clean) -> None:
    # 09:00 UTC is 10:00 in Lisbon in June; the policy says 09:00 clinic time.
    ten = utc(6, 20, 9).isoformat()
    case.booster.value.update(due_at=ten, occurred_at=ten)
    assert counts(case) == {**ZERO, "boosters_repeated": 1}
    assert run(case).detail["boosters_off_local_time"] == 1


def test_a_booster_announced_before_it_is_due_is_counted(case: Clean) -> None:
    case.booster.value["occurred_at"] = utc(6, 6, 8).isoformat()
    assert counts(case) == {**ZERO, "boosters_repeated": 1}
    assert run(case).detail["boosters_announced_early"] == 1


# --- notifications ------------------------------------------------------------------


def test_one_reminder_sent_twice_under_two_ids_is_repeated(case: Clean) -> None:
    history = case.history
    at = history.planned(case.course, case.dose1, timedelta(hours=24)) + timedelta(minutes=1)
    if history.with_fields:
        # The same logical message under another id, as a re-planned copy would be.
        history.send(case.course, MessageKind.REMINDER_24H, at, case.dose1, nid=uuid.uuid4())
        assert counts(case) == {**ZERO, "notifications_repeated": 1}
        return
    # Without the fields: the course booking republished under a new id plans it again.
    copy = dataclasses.replace(case.course, id=str(uuid.uuid4()))
    history.records.append(copy)
    history.send(copy, MessageKind.COURSE_BOOKED, utc(5, 27, 8, 1))
    history.send(copy, MessageKind.REMINDER_24H, at, case.dose1)
    # the confirmation and the reminder, each told twice
    assert counts(case) == {**ZERO, "notifications_repeated": 2}


def test_a_resend_with_the_same_message_id_is_counted_apart(case: Clean) -> None:
    case.history.mails.append(case.history.mails[3])
    assert counts(case) == {**ZERO, "mail_resends": 1}


def test_a_reminder_for_a_moved_session_is_stale(case: Clean) -> None:
    history = case.history
    moved(case, case.dose2, utc(6, 5, 9), utc(5, 31, 8))
    # The 24 h reminder planned for the first time still went out, after the move.
    history.send(case.course, MessageKind.REMINDER_24H, utc(6, 3, 9), case.dose2)
    assert counts(case) == {**ZERO, "stale_reminders": 1}
    assert run(case).detail["stale_moved_or_dropped"] == 1


def test_a_stale_reminder_is_explained_by_ids_and_instants(
    case: Clean, caplog: pytest.LogCaptureFixture
) -> None:
    """One line names what was sent, when, and what the topics said then (no PHI)."""
    moved(case, case.dose2, utc(6, 5, 9), utc(5, 31, 8))
    sent = case.history.send(case.course, MessageKind.REMINDER_24H, utc(6, 3, 9), case.dose2)
    with caplog.at_level("WARNING", logger="ops.audit_messages"):
        run(case)
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stale")]
    assert "moved_or_dropped" in line
    assert str(case.dose2.appointment_id) in line
    assert str(sent.value["notification_id"]) in line
    assert f"planned from {case.course.type} {case.course.id}" in line  # the news it came of


def test_a_reminder_sent_after_the_session_started_is_stale(case: Clean) -> None:
    history = case.history
    nid = nid_of(case.course, MessageKind.REMINDER_2H, case.dose1)
    forget_one(history, nid)
    history.send(
        case.course,
        MessageKind.REMINDER_2H,
        case.dose1.starts_at + timedelta(minutes=5),
        case.dose1,
    )
    assert counts(case) == {**ZERO, "stale_reminders": 1}
    assert run(case).detail["stale_after_start"] == 1


def nid_of(cause: Record, kind: MessageKind, appt: ev.Appointment) -> str:
    """The id the scenario gave that message (it derives ids as the notifier does)."""
    return str(notification_id(cause.id, kind, "email", "client", appt.appointment_id))


def forget_one(history: History, nid: str) -> None:
    history.records = [r for r in history.records if r.value.get("notification_id") != nid]
    history.mails = [m for m in history.mails if m.message_id != f"<{nid}@kap>"]


def test_a_mail_without_a_notification_sent_is_a_mismatch(case: Clean) -> None:
    case.history.mails.append(Mail(f"<{uuid.uuid4()}@kap>", utc(6, 1, 8)))
    assert counts(case) == {**ZERO, "mail_mismatches": 1}


def test_a_mail_still_in_flight_when_the_topics_were_read_is_no_mismatch(case: Clean) -> None:
    """The sinks are read after the topics while the notifier keeps sending: a mail
    accepted after the topics were read may not have its NotificationSent there yet.
    One accepted well before still must."""
    read_at = 1_000_000.0
    late = Mail(f"<{uuid.uuid4()}@kap>", utc(6, 1, 8), accepted_at=read_at + 0.5)
    case.history.mails.append(late)
    assert run(case, in_flight_after=read_at - 2).mail_mismatches == 0
    early = Mail(f"<{uuid.uuid4()}@kap>", utc(6, 1, 8), accepted_at=read_at - 60)
    case.history.mails.append(early)
    assert run(case, in_flight_after=read_at - 2).mail_mismatches == 1


def test_a_notification_sent_without_its_mail_is_a_mismatch(case: Clean) -> None:
    del case.history.mails[2]
    assert counts(case) == {**ZERO, "mail_mismatches": 1}


def test_texts_are_matched_and_resends_counted_apart(case: Clean) -> None:
    history = case.history
    history.send(case.booster, MessageKind.BOOSTER_DUE, utc(6, 20, 8), channel="sms")
    assert counts(case) == ZERO
    history.texts.append(history.texts[0])
    history.texts.append(Text(str(uuid.uuid4())))
    assert counts(case) == {**ZERO, "sms_resends": 1, "sms_mismatches": 1}


# --- reminder timing ---------------------------------------------------------------


def test_a_late_reminder_and_a_skipped_one_are_counted(case: Clean) -> None:
    history = case.history
    planned = history.planned(case.course, case.dose1, timedelta(hours=24))
    late_id = nid_of(case.course, MessageKind.REMINDER_24H, case.dose1)
    late = next(r for r in history.records if r.value.get("notification_id") == late_id)
    late.value["occurred_at"] = (planned + timedelta(minutes=30)).isoformat()
    history.mails = [
        dataclasses.replace(m, date=planned + timedelta(minutes=30))
        if m.message_id == f"<{late.value['notification_id']}@kap>"
        else m
        for m in history.mails
    ]
    skipped = nid_of(case.course, MessageKind.REMINDER_2H, case.preparation)
    forget_one(history, skipped)
    found = run(case)
    assert {name: found.counts()[name] for name in REPORTED} == ZERO
    assert (found.reminders_on_time, found.reminders_late, found.reminders_skipped) == (6, 1, 1)


def test_a_reminder_the_notifier_dropped_as_stale_is_skipped(case: Clean) -> None:
    history = case.history
    nid = nid_of(case.course, MessageKind.REMINDER_2H, case.preparation)
    forget_one(history, nid)
    history.add(
        ev.NotificationFailed(
            **history.base(case.client, utc(5, 29, 7)),
            notification_id=uuid.UUID(nid),
            message_kind="reminder_2h",
            channel="email",
            cause_event_id=case.course.id,
            reason="stale: the session moved",
            permanent=True,
        )
    )
    found = run(case)
    assert found.reminders_skipped == 1


# --- lost ----------------------------------------------------------------------------


def test_a_request_never_answered_is_lost(case: Clean) -> None:
    history, someone = case.history, uuid.uuid4()
    contact = ev.Contact(name="Other Person", email="other@example.test")
    asked = history.add(
        ev.ConsultationRequested(**history.base(someone, utc(5, 30, 8)), contact=contact)
    )
    history.send(asked, MessageKind.CONSULTATION_REQUEST_RECEIVED, utc(5, 30, 8))
    assert counts(case) == {**ZERO, "lost": 1}
    assert run(case).detail["lost_unanswered_consultation"] == 1


def test_a_fact_the_notifier_never_answered_is_lost(case: Clean) -> None:
    history = case.history
    booked = next(r for r in history.records if r.topic == "scheduler.consultation.booked.v1")
    for answer in [r for r in history.records if r.value.get("cause_event_id") == booked.id]:
        forget_one(history, answer.value["notification_id"])
    assert counts(case) == {**ZERO, "lost": 1}
    assert run(case).detail["lost_no_notification"] == 1


def test_accepted_requests_missing_from_the_topics_are_lost(case: Clean) -> None:
    from ops.audit import Expected

    expected = Expected({"intake.screening.completed.v1": 1}, frozenset({str(uuid.uuid4())}))
    assert run(case, expected=expected).lost == 2


def test_clinic_rules_come_from_the_clinics_file(case: Clean, tmp_path: Path) -> None:
    # A clinic that announces boosters at 10:00: a 10:00 booster is on time there.
    clinics = tmp_path / "clinics.json"
    policy = {"booster_due_local_time": "10:00"}
    clinics.write_text(
        json.dumps([{"id": CLINIC, "timezone": "Europe/Lisbon", "scheduler": {"policy": policy}}])
    )
    ten = utc(6, 20, 9).isoformat()
    case.booster.value.update(due_at=ten, occurred_at=ten)
    history = case.history
    found = audit(history.records, audit_rules.load(clinics), mails=history.mails, now=case.now)
    assert found.boosters_repeated == 0
    assert run(case).boosters_repeated == 1  # the protocol's 09:00 elsewhere


def test_a_reminder_replanned_from_a_fact_about_another_session_is_repeated() -> None:
    case = clean(with_fields=True)
    history = case.history
    moved(case, case.dose2, utc(6, 5, 9), utc(5, 28, 9))
    move = next(r for r in history.records if r.topic.endswith("rescheduled.v1"))
    # The first dose did not change, yet its 24 h reminder went out again under the move.
    at = history.planned(case.course, case.dose1, timedelta(hours=24)) + timedelta(minutes=2)
    history.send(move, MessageKind.REMINDER_24H, at, case.dose1)
    assert counts(case) == {**ZERO, "notifications_repeated": 1}


def test_a_returning_client_s_second_screening_is_a_new_message_not_a_repeat(
    case: Clean,
) -> None:
    history = case.history
    screened = ev.ScreeningCompleted(**history.base(case.client, utc(6, 25, 9)), eligible=True)
    first = history.add(screened)
    history.send(first, MessageKind.SCREENING_OUTCOME, utc(6, 25, 9))
    # The same screening said again in the same round of care: a repeat.
    again = history.add(screened.model_copy(update={"occurred_at": utc(6, 26, 9)}))
    history.send(again, MessageKind.SCREENING_OUTCOME, utc(6, 26, 9))
    assert counts(case)["notifications_repeated"] == 1
    # After the course ended, the client is screened anew: a new round, a new message.
    history.add(
        ev.CourseEnded(
            **history.base(case.client, utc(6, 27, 9)),
            course_id=case.course_id,
            reason=ev.CourseEndCode.WITHDRAWN,
            sessions_released=0,
            medicine_sessions_completed=2,
        )
    )
    returning = history.add(screened.model_copy(update={"occurred_at": utc(6, 28, 9)}))
    history.send(returning, MessageKind.SCREENING_OUTCOME, utc(6, 28, 9))
    assert counts(case)["notifications_repeated"] == 1


def test_a_pause_carries_the_course_window_on_by_the_days_it_lasted(case: Clean) -> None:
    history = case.history
    history.add(
        ev.CoursePaused(
            **history.base(case.client, utc(6, 10, 9)),
            course_id=case.course_id,
            sessions_released=1,
            window_days_left=12,  # the window (open since the first dose) to 21 June
        )
    )
    # Paused for ten days: the window (to 21 June) now ends on 1 July.
    history.add(
        ev.CourseResumed(
            **history.base(case.client, utc(6, 20, 9)),
            course_id=case.course_id,
            window_ends_on=datetime(2026, 7, 1).date(),
        )
    )
    inside = appointment(ev.AppointmentKind.MEDICINE, utc(6, 30, 9), 180, room="r-1", dose=3)
    history.add(
        ev.SessionScheduled(
            **history.base(case.client, utc(6, 20, 9)), course_id=case.course_id, appointment=inside
        )
    )
    assert counts(case)["rule_violations"] == 0
    beyond = appointment(ev.AppointmentKind.MEDICINE, utc(7, 3, 9), 180, room="r-1", dose=4)
    history.add(
        ev.SessionScheduled(
            **history.base(case.client, utc(6, 20, 10)),
            course_id=case.course_id,
            appointment=beyond,
        )
    )
    assert run(case).detail["rule_outside_window"] == 1


def test_the_window_opens_at_the_first_dose_as_it_stands(case: Clean) -> None:
    history = case.history
    # The first dose moved a day later before it was given: its window ends a day later.
    later = moved(case, case.dose1, utc(6, 2, 9), utc(5, 30, 9))
    history.add(
        ev.CourseResumed(
            **history.base(case.client, utc(5, 30, 10)),
            course_id=case.course_id,
            window_ends_on=datetime(2026, 6, 22).date(),
        )
    )
    assert later.starts_at == utc(6, 2, 9)
    assert run(case).detail["rule_window_too_long"] == 0
    history.add(
        ev.CourseResumed(
            **history.base(case.client, utc(5, 30, 11)),
            course_id=case.course_id,
            window_ends_on=datetime(2026, 6, 23).date(),
        )
    )
    assert run(case).detail["rule_window_too_long"] == 1  # a day more than the policy's


# --- a change crossing a message in flight ---------------------------------------

KAFKA_MS = 1_800_000_000_000  # a real instant (ms), as Kafka stamps records


def crossed(
    case: Clean,
    *,
    gap_s: float,
    told: bool,
    on_the_wire_s: float | None = None,
    readable_after_s: float | None = None,
) -> Findings:
    """dose2 moved 10 clinic minutes before its 24 h reminder went out; the move reached
    Kafka `gap_s` real seconds before the reminder's copy reached its sink; `told`: the
    client was then sent a notice caused by the move. `on_the_wire_s`: the sink says the
    hand-over began this long before it accepted the copy. `readable_after_s`: a witness
    first read the move this long after its record time."""
    history = case.history
    sent_at = utc(6, 3, 9)
    move = history.add(
        ev.SessionRescheduled(
            **history.base(case.client, sent_at - timedelta(minutes=10)),
            course_id=case.course_id,
            appointment=case.dose2.model_copy(
                update={
                    "starts_at": utc(6, 5, 9),
                    "ends_at": utc(6, 5, 9) + (case.dose2.ends_at - case.dose2.starts_at),
                }
            ),
            previous_starts_at=case.dose2.starts_at,
        )
    )
    seen = None if readable_after_s is None else KAFKA_MS + int(readable_after_s * 1000)
    history.records[-1] = move = dataclasses.replace(move, appended_ms=KAFKA_MS, seen_ms=seen)
    forget(history, case.dose2, case.course)
    history.send(case.course, MessageKind.REMINDER_24H, sent_at, case.dose2)
    accepted = KAFKA_MS / 1000 + gap_s
    began = None if on_the_wire_s is None else accepted - on_the_wire_s
    history.mails[-1] = dataclasses.replace(history.mails[-1], accepted_at=accepted, began_at=began)
    if told:
        history.send(
            move, MessageKind.SESSION_RESCHEDULED, sent_at + timedelta(minutes=5), case.dose2
        )
    return run(case)


def test_a_change_that_crossed_the_reminder_in_flight_and_was_told_is_reported_apart(
    case: Clean,
) -> None:
    found = crossed(case, gap_s=0.01, told=True)
    assert (found.stale_reminders, found.reminders_crossed) == (0, 1)


def test_a_crossing_the_client_was_never_told_of_is_stale(case: Clean) -> None:
    found = crossed(case, gap_s=0.01, told=False)
    assert (found.stale_reminders, found.reminders_crossed) == (1, 0)


def test_a_change_on_the_topics_well_before_the_send_is_stale_even_if_told(case: Clean) -> None:
    found = crossed(case, gap_s=0.5, told=True)
    assert (found.stale_reminders, found.reminders_crossed) == (1, 0)


@pytest.mark.parametrize(
    ("on_the_wire_s", "stale", "crossed_in_flight"), [(0.49, 0, 1), (0.3, 1, 0)]
)
def test_a_crossing_is_judged_from_when_the_hand_over_began_at_the_sink(
    case: Clean, on_the_wire_s: float, stale: int, crossed_in_flight: int
) -> None:
    # Accepted 0.5 s after the move reached Kafka; its hand-over began 10 ms after the
    # move (crossed in flight), or 200 ms after it (stale).
    found = crossed(case, gap_s=0.5, told=True, on_the_wire_s=on_the_wire_s)
    assert (found.stale_reminders, found.reminders_crossed) == (stale, crossed_in_flight)


@pytest.mark.parametrize(
    ("readable_after_s", "stale", "crossed_in_flight"), [(0.45, 0, 1), (0.2, 1, 0)]
)
def test_a_crossing_is_judged_from_when_the_change_could_first_be_read(
    case: Clean, readable_after_s: float, stale: int, crossed_in_flight: int
) -> None:
    # Created 0.5 s before the copy reached its sink, first readable 50 ms before it
    # (crossed in flight: replicas slow to take it), or 300 ms before it (stale).
    found = crossed(case, gap_s=0.5, told=True, readable_after_s=readable_after_s)
    assert (found.stale_reminders, found.reminders_crossed) == (stale, crossed_in_flight)


def test_a_cancelled_consultation_the_client_was_never_told_of_is_lost(case: Clean) -> None:
    history = case.history
    booked = next(r for r in history.records if r.topic == "scheduler.consultation.booked.v1")
    appt = ev.Appointment.model_validate(booked.value["appointment"])
    history.add(
        ev.ConsultationCancelled(
            **history.base(case.client, appt.starts_at - timedelta(days=1)),
            appointment_id=appt.appointment_id,
            starts_at=appt.starts_at,
        )
    )
    assert run(case).detail["lost_no_notification"] == 1


def test_a_copy_sent_to_a_client_outside_the_run_is_theirs_not_a_mismatch(case: Clean) -> None:
    """A sink shared with another run or a test holds their copies too: a copy whose sent
    fact is on the topics for a client outside the journal is neither matched nor a
    mismatch here; one with no sent fact anywhere still is."""
    theirs, nobodys = str(uuid.uuid4()), str(uuid.uuid4())
    case.history.mails.append(Mail(f"<{theirs}@kap>", utc(6, 1, 8)))
    case.history.mails.append(Mail(f"<{nobodys}@kap>", utc(6, 1, 8)))
    found = run(case, sent_elsewhere=frozenset({theirs}))
    assert found.mail_mismatches == 1
