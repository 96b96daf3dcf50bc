"""The auditor's course counts: each failure planted in a clean history is seen, exactly once.

`doses_without_checkin` and `booked_after_course_ended` make the demo fail; the
others (`courses_paused`, `courses_withdrawn`, `courses_restarted`,
`alerts_escalated`) report what courses lived through, counted from the topics.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta

import pytest

from ops.audit import Findings
from shared import events as ev
from tests.unit.ops.scenario import Clean, appointment, clean, utc
from tests.unit.ops.test_audit import ZERO, counts, run

VITALS = ev.VitalSigns(systolic=124, diastolic=80, heart_rate=72)


@pytest.fixture
def case() -> Clean:
    return clean()


def checked_in(case: Clean, appt: ev.Appointment, at: datetime, *, passed: bool = True) -> None:
    history = case.history
    history.add(
        ev.SessionCheckedIn(
            **history.base(case.client, at),
            course_id=case.course_id,
            appointment_id=appt.appointment_id,
            starts_at=appt.starts_at,
            passed=passed,
            refused_for=() if passed else (ev.CheckInRefusal.NO_RIDE_HOME,),
            answers=ev.CheckInAnswers(
                ride_home_confirmed=passed, fasting_confirmed=True, vitals=VITALS, phq9_item9=0
            ),
        )
    )


def completed(case: Clean, appt: ev.Appointment, times: int = 1) -> None:
    history = case.history
    fact = ev.SessionCompleted(
        **history.base(case.client, appt.ends_at),
        course_id=case.course_id,
        appointment_id=appt.appointment_id,
        kind=appt.kind,
        dose_number=appt.dose_number,
        ride_home_confirmed=True,
    )
    event_id = str(uuid.uuid4())
    for _ in range(times):
        history.add(fact, event_id)


def ended(case: Clean, at: datetime, code: ev.CourseEndCode = ev.CourseEndCode.WITHDRAWN) -> None:
    history = case.history
    history.add(
        ev.CourseEnded(
            **history.base(case.client, at),
            course_id=case.course_id,
            reason=code,
            sessions_released=0,
            medicine_sessions_completed=1,
        )
    )


def findings(case: Clean) -> Findings:
    return run(case)


# --- doses without a check-in ----------------------------------------------------


def test_a_dose_after_a_passed_check_in_is_no_failure(case: Clean) -> None:
    checked_in(case, case.dose1, case.dose1.starts_at)
    completed(case, case.dose1)
    assert counts(case) == ZERO


def test_a_dose_completed_without_any_check_in_is_counted(case: Clean) -> None:
    checked_in(case, case.dose1, case.dose1.starts_at)
    completed(case, case.dose1)
    completed(case, case.dose2, times=2)  # republished: still one dose
    assert counts(case) == {**ZERO, "doses_without_checkin": 1}
    assert findings(case).detail["doses_without_checkin"] == 1


def test_a_dose_after_a_refused_check_in_is_counted(case: Clean) -> None:
    checked_in(case, case.dose1, case.dose1.starts_at, passed=False)
    completed(case, case.dose1)
    assert counts(case) == {**ZERO, "doses_without_checkin": 1}


def test_a_check_in_that_came_after_the_completion_does_not_count(case: Clean) -> None:
    completed(case, case.dose1)
    checked_in(case, case.dose1, case.dose1.ends_at + timedelta(minutes=5))
    assert counts(case) == {**ZERO, "doses_without_checkin": 1}


def test_a_check_in_for_another_session_does_not_count(case: Clean) -> None:
    checked_in(case, case.dose2, case.dose1.starts_at)
    completed(case, case.dose1)
    assert counts(case) == {**ZERO, "doses_without_checkin": 1}


def test_sessions_without_a_dose_need_no_check_in(case: Clean) -> None:
    completed(case, case.preparation)
    assert counts(case) == ZERO


# --- nothing booked after a course ended ----------------------------------------


def integration_at(when: datetime) -> ev.Appointment:
    return appointment(ev.AppointmentKind.INTEGRATION, when, 60, therapist="t-1")


def test_a_session_scheduled_before_the_end_is_no_failure(case: Clean) -> None:
    history = case.history
    session = integration_at(utc(6, 2, 9))
    history.add(
        ev.SessionScheduled(
            **history.base(case.client, utc(5, 30, 9)),
            course_id=case.course_id,
            appointment=session,
        )
    )
    ended(case, utc(5, 31, 9))
    assert counts(case) == ZERO


def test_a_session_scheduled_after_the_end_is_counted(case: Clean) -> None:
    ended(case, utc(5, 31, 9))
    history = case.history
    history.add(
        ev.SessionScheduled(
            **history.base(case.client, utc(5, 31, 10)),
            course_id=case.course_id,
            appointment=integration_at(utc(6, 2, 9)),
        )
    )
    assert counts(case) == {**ZERO, "booked_after_course_ended": 1}
    assert findings(case).detail["booked_after_end_session_scheduled"] == 1


def test_a_move_or_a_resumption_after_the_end_is_counted(case: Clean) -> None:
    ended(case, utc(5, 31, 9))
    history = case.history
    history.add(
        ev.CourseResumed(
            **history.base(case.client, utc(5, 31, 11)),
            course_id=case.course_id,
            window_ends_on=date(2026, 6, 21),
        )
    )
    assert counts(case) == {**ZERO, "booked_after_course_ended": 1}
    assert findings(case).detail["booked_after_end_course_resumed"] == 1


def test_an_appointment_shown_booked_to_partners_after_the_end_is_counted(case: Clean) -> None:
    ended(case, utc(5, 31, 9))
    history = case.history
    dose = case.dose1
    history.add(
        ev.AppointmentStatusChanged(
            **history.base(case.client, utc(5, 31, 12)),
            appointment_id=dose.appointment_id,
            kind=dose.kind,
            status=ev.AppointmentStatus.BOOKED,
            starts_at=dose.starts_at,
            ends_at=dose.ends_at,
        )
    )
    assert counts(case) == {**ZERO, "booked_after_course_ended": 1}
    assert findings(case).detail["booked_after_end_status_booked"] == 1


def test_another_course_booked_after_the_end_is_no_failure(case: Clean) -> None:
    ended(case, utc(5, 31, 9))
    history = case.history
    history.add(
        ev.SessionScheduled(
            **history.base(case.client, utc(5, 31, 10)),
            course_id=uuid.uuid4(),
            appointment=integration_at(utc(6, 2, 9)),
        )
    )
    assert counts(case) == ZERO


# --- what courses lived through ---------------------------------------------------


def test_pauses_withdrawals_restarts_and_escalations_are_counted_from_the_topics(
    case: Clean,
) -> None:
    history = case.history
    base = history.base(case.client, utc(5, 30, 9))
    paused = ev.CoursePaused(**base, course_id=case.course_id, sessions_released=2)
    history.add(paused, "pause-1")
    history.add(paused, "pause-1")  # republished: one pause
    ended(case, utc(5, 31, 9))
    history.add(
        ev.CourseBooked(
            **history.base(case.client, utc(6, 22, 9)),
            course_id=uuid.uuid4(),
            therapist_id="t-1",
            window_ends_on=date(2026, 7, 20),
            appointments=(),
        )
    )
    for alert in ("alert-1", "alert-1", "alert-2"):
        history.add(ev.ClinicalAlertEscalated(**base, alert_id=alert, unacknowledged_minutes=15))
    found = findings(case)
    assert (found.courses_paused, found.courses_withdrawn, found.courses_restarted) == (1, 1, 1)
    assert found.alerts_escalated == 2


def test_a_clean_history_lived_through_nothing_of_the_kind(case: Clean) -> None:
    found = findings(case)
    ended(case, utc(6, 21, 9), ev.CourseEndCode.DISCHARGED)
    counted = (found.courses_paused, found.courses_withdrawn, found.courses_restarted)
    assert (*counted, found.alerts_escalated) == (0, 0, 0, 0)
    assert findings(case).courses_withdrawn == 0  # discharged is not withdrawn
