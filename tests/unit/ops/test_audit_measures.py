"""The auditor's measure counts and outcome rates, from events alone; and the demo's answers."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest

from ops import audit_measures, demo_measures
from shared import events as ev
from tests.unit.ops.scenario import History, utc

COURSE = uuid.uuid4()


def phq9(total: int, at: datetime) -> ev.QuestionnaireResponse:
    answers = demo_measures.items(total, 9, last_zero=True)
    return ev.QuestionnaireResponse(
        questionnaire=ev.Instrument.PHQ9,
        items=tuple(answers),
        total=total,
        loinc="44261-6",
        authored=at,
    )


def client_course(
    history: History,
    enrolled: int,
    before_first_dose: int | None,
    end: int | None,
    *,
    completed: bool = True,
) -> uuid.UUID:
    client = uuid.uuid4()
    history.add(
        ev.ClientEnrolled(
            **history.base(client, utc(4, 1, 9)),
            consent_recorded_at=utc(4, 1, 9),
            phq9_total=enrolled,
            phq9_band=ev.Phq9Band.MODERATE,
            gad7_total=8,
        )
    )
    if before_first_dose is not None:
        history.add(
            ev.MeasureAnswered(
                **history.base(client, utc(4, 5, 9)),
                source="link",
                responses=(phq9(before_first_dose, utc(4, 5, 9)),),
            )
        )
    history.add(
        ev.SessionCompleted(
            **history.base(client, utc(4, 6, 12)),
            course_id=COURSE,
            appointment_id=uuid.uuid4(),
            kind=ev.AppointmentKind.MEDICINE,
            dose_number=1,
            ride_home_confirmed=True,
        )
    )
    if completed:
        history.add(
            ev.CourseCompleted(
                **history.base(client, utc(4, 24, 12)),
                course_id=COURSE,
                medicine_sessions_completed=6,
            )
        )
    if end is not None:
        measure = uuid.uuid4()
        history.add(
            ev.MeasureDue(
                **history.base(client, utc(4, 24, 12)),
                measure_id=measure,
                course_id=COURSE,
                point=ev.MeasurePoint.END_OF_COURSE,
                instruments=(ev.Instrument.PHQ9,),
                opens_at=utc(4, 24, 12),
                closes_at=utc(5, 1, 12),
            )
        )
        # From a link: the answer names the measure only; its point comes from MeasureDue.
        history.add(
            ev.MeasureAnswered(
                **history.base(client, utc(4, 25, 9)),
                source="link",
                measure_id=measure,
                responses=(phq9(end, utc(4, 25, 9)),),
            )
        )
    return client


def test_response_and_remission_are_judged_from_the_last_measure_before_the_first_dose() -> None:
    history = History()
    client_course(history, enrolled=14, before_first_dose=16, end=8)  # 16 -> 8: responded
    client_course(history, enrolled=12, before_first_dose=None, end=4)  # remitted and responded
    client_course(history, enrolled=12, before_first_dose=None, end=7)  # neither
    client_course(history, enrolled=4, before_first_dose=None, end=1)  # remitted; baseline < 5
    client_course(history, enrolled=12, before_first_dose=None, end=None)  # not measured
    client_course(history, enrolled=12, before_first_dose=None, end=2, completed=False)
    rates = audit_measures.outcome_rates(history.records)
    assert (rates.clients, rates.responded, rates.remitted) == (4, 2, 2)
    assert (rates.response_rate, rates.remission_rate) == (0.5, 0.5)
    assert audit_measures.measures_answered(history.records) == 6


@pytest.mark.parametrize(
    ("total", "count", "last_zero"), [(0, 9, True), (24, 9, True), (21, 7, False), (13, 7, False)]
)
def test_answers_spread_a_total_over_items_of_0_to_3(
    total: int, count: int, last_zero: bool
) -> None:
    answers = demo_measures.items(total, count, last_zero=last_zero)
    assert len(answers) == count
    assert sum(answers) == total
    assert all(0 <= a <= 3 for a in answers)
    assert not last_zero or answers[-1] == 0


def test_a_total_that_cannot_be_answered_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be spread"):
        demo_measures.items(25, 9, last_zero=True)


def test_the_drawn_courses_follow_the_published_rates() -> None:
    courses = [demo_measures.course_of(n, "run") for n in range(2000)]
    remitted = sum(c.phq9_to < 5 for c in courses) / len(courses)
    responded = sum(c.phq9_to <= c.phq9_from / 2 for c in courses) / len(courses)
    assert 0.27 < remitted < 0.35
    assert 0.56 < responded < 0.68
    first, last = courses[0].at(0), courses[0].at(9)
    assert first == (courses[0].phq9_from, courses[0].gad7_from)
    assert last == (courses[0].phq9_to, courses[0].gad7_to)


def test_the_form_is_filled_by_its_radio_groups() -> None:
    html = (
        "<form method=post action=''><input type=hidden name=csrf value=x>"
        + "".join(
            f"<input type=radio name=phq9_{i} value={v}>" for i in range(1, 10) for v in range(4)
        )
        + "".join(
            f"<input type=radio name=gad7_{i} value={v}>" for i in range(1, 8) for v in range(4)
        )
        + "</form>"
    )
    fields = demo_measures.filled(html, 12, 5)
    assert fields["csrf"] == "x"
    assert sum(int(fields[f"phq9_{i}"]) for i in range(1, 10)) == 12
    assert fields["phq9_9"] == "0"
    assert sum(int(fields[f"gad7_{i}"]) for i in range(1, 8)) == 5


def test_a_measure_answered_during_the_first_dose_is_no_baseline() -> None:
    """The first dose counts from its start, not from when its completion was recorded."""
    history = History()
    client = uuid.uuid4()
    dose = ev.Appointment(
        appointment_id=uuid.uuid4(),
        kind=ev.AppointmentKind.MEDICINE,
        starts_at=utc(4, 6, 9),
        ends_at=utc(4, 6, 12),
        therapist_id="t-1",
        dose_number=1,
    )
    history.add(
        ev.ClientEnrolled(
            **history.base(client, utc(4, 1, 9)),
            consent_recorded_at=utc(4, 1, 9),
            phq9_total=12,
            phq9_band=ev.Phq9Band.MODERATE,
            gad7_total=8,
        )
    )
    history.add(
        ev.CourseBooked(
            **history.base(client, utc(4, 2, 9)),
            course_id=COURSE,
            therapist_id="t-1",
            appointments=(dose,),
            window_ends_on=utc(4, 27, 0).date(),
        )
    )
    history.add(  # during the dose: after it started, before its completion was recorded
        ev.MeasureAnswered(
            **history.base(client, utc(4, 6, 10)),
            source="staff",
            responses=(phq9(2, utc(4, 6, 10)),),
        )
    )
    history.add(
        ev.SessionCompleted(
            **history.base(client, utc(4, 6, 12)),
            course_id=COURSE,
            appointment_id=dose.appointment_id,
            kind=ev.AppointmentKind.MEDICINE,
            dose_number=1,
            ride_home_confirmed=True,
        )
    )
    history.add(
        ev.CourseCompleted(
            **history.base(client, utc(4, 24, 12)), course_id=COURSE, medicine_sessions_completed=6
        )
    )
    history.add(
        ev.MeasureAnswered(
            **history.base(client, utc(4, 25, 9)),
            source="staff",
            point=ev.MeasurePoint.END_OF_COURSE,
            course_id=COURSE,
            responses=(phq9(6, utc(4, 25, 9)),),
        )
    )
    rates = audit_measures.outcome_rates(history.records)
    # Baseline 12 (enrolment), not 2: 12 -> 6 responded; from 2 it would not have.
    assert (rates.clients, rates.responded, rates.remitted) == (1, 1, 0)
