"""A client's outcomes over one course: baseline, points, change, response, remission."""

from __future__ import annotations

import uuid
from datetime import timedelta

from services.scheduler.domain.measure_state import ScheduledMeasure
from services.scheduler.domain.outcomes import (
    END_OF_COURSE,
    MONTH_1,
    MONTH_3,
    MONTH_6,
    CourseOutcome,
    Measure,
    course_outcome,
    follow_up_windows,
)
from shared import events as ev
from shared.events import MeasurePoint
from tests.unit.scheduler.outcome_builders import (
    COMPLETED_AT,
    FIRST_DOSE,
    LAST_DOSE,
    course,
    dose_at,
    enrolment,
    phq9,
)

PRE_DOSE = MeasurePoint.PRE_DOSE


def outcome_of(measures: list[Measure], **shape: object) -> CourseOutcome:
    found = course_outcome(course(**shape), measures)  # type: ignore[arg-type]
    assert found is not None
    return found


def end_of_course(score: int) -> Measure:
    return phq9(score, COMPLETED_AT + timedelta(days=2), END_OF_COURSE)


def test_the_baseline_is_the_last_phq9_before_the_first_dose() -> None:
    pre_dose = phq9(14, FIRST_DOSE - timedelta(hours=20), PRE_DOSE)
    after = phq9(9, FIRST_DOSE + timedelta(minutes=5), PRE_DOSE)
    outcome = outcome_of([enrolment(18), pre_dose, after])
    assert outcome.baseline == pre_dose


def test_the_enrolment_measure_is_the_baseline_when_none_is_newer() -> None:
    first = enrolment(18)
    outcome = outcome_of([first, phq9(12, dose_at(2) - timedelta(hours=3), PRE_DOSE)])
    assert outcome.baseline == first


def test_a_measure_of_gad7_only_is_no_phq9() -> None:
    gad_only = Measure(key="x", authored=FIRST_DOSE - timedelta(hours=2), gad7=12)
    first = enrolment(18)
    assert outcome_of([first, gad_only]).baseline == first


def test_a_measure_named_for_another_course_is_not_this_courses() -> None:
    mine = uuid.uuid4()
    earlier = phq9(3, FIRST_DOSE - timedelta(days=2), END_OF_COURSE, course_id=uuid.uuid4())
    theirs = phq9(1, COMPLETED_AT + timedelta(days=1), END_OF_COURSE, course_id=uuid.uuid4())
    outcome = outcome_of([enrolment(18), earlier, theirs], course_id=mine)
    assert outcome.baseline is not None
    assert outcome.baseline.phq9 == 18
    assert outcome.at(END_OF_COURSE).measure is None


def test_the_measure_named_for_a_point_wins_over_one_inside_its_window() -> None:
    mine = uuid.uuid4()
    untagged = phq9(11, COMPLETED_AT + timedelta(days=1))
    tagged = phq9(7, COMPLETED_AT + timedelta(days=3), END_OF_COURSE, course_id=mine)
    outcome = outcome_of([enrolment(18), untagged, tagged], course_id=mine)
    assert outcome.at(END_OF_COURSE).measure == tagged


def test_without_a_named_measure_the_first_inside_the_window_counts() -> None:
    windows = follow_up_windows(LAST_DOSE, COMPLETED_AT)
    month_3 = windows[MONTH_3]
    too_early = phq9(4, month_3.opens - timedelta(days=1))
    first = phq9(6, month_3.opens + timedelta(days=1))
    second = phq9(2, month_3.opens + timedelta(days=2))
    outcome = outcome_of([enrolment(18), too_early, second, first])
    assert outcome.at(MONTH_3).measure == first
    assert outcome.at(MONTH_3).change == 6 - 18


def test_windows_follow_the_end_of_the_course() -> None:
    windows = follow_up_windows(LAST_DOSE, COMPLETED_AT)
    assert windows[END_OF_COURSE].opens == LAST_DOSE
    assert windows[END_OF_COURSE].closes == COMPLETED_AT + timedelta(days=7)
    assert windows[MONTH_1].opens == COMPLETED_AT + timedelta(days=23)
    assert windows[MONTH_1].closes == COMPLETED_AT + timedelta(days=44)
    assert windows[MONTH_6].opens == COMPLETED_AT + timedelta(days=173)


def test_response_is_a_drop_of_at_least_half_the_baseline() -> None:
    halved = outcome_of([enrolment(16), end_of_course(8)]).at(END_OF_COURSE)
    short = outcome_of([enrolment(16), end_of_course(9)]).at(END_OF_COURSE)
    assert (halved.change, halved.responded) == (-8, True)
    assert (short.change, short.responded) == (-7, False)


def test_remission_is_a_score_under_5() -> None:
    four = outcome_of([enrolment(20), end_of_course(4)]).at(END_OF_COURSE)
    five = outcome_of([enrolment(20), end_of_course(5)]).at(END_OF_COURSE)
    assert four.remitted
    assert four.responded
    assert not five.remitted
    assert five.responded


def test_a_baseline_under_5_is_never_counted_as_responded() -> None:
    point = outcome_of([enrolment(4), end_of_course(0)]).at(END_OF_COURSE)
    assert point.change == -4
    assert not point.responded
    assert point.remitted  # a score under 5, whatever the baseline


def test_no_measure_at_a_point_is_neither_change_response_nor_remission() -> None:
    outcome = outcome_of([enrolment(16), end_of_course(3)])
    for point in (MONTH_1, MONTH_3, MONTH_6):
        missing = outcome.at(point)
        assert missing.measure is None
        assert (missing.change, missing.responded, missing.remitted) == (None, False, False)


def test_no_baseline_gives_no_change_and_no_response() -> None:
    point = outcome_of([end_of_course(3)]).at(END_OF_COURSE)
    assert (point.change, point.responded, point.remitted) == (None, False, True)


def test_a_withdrawn_course_counts_as_neither_responded_nor_remitted() -> None:
    ended_at = dose_at(3) + timedelta(days=2)
    measures = [enrolment(20), phq9(2, ended_at + timedelta(days=1))]
    outcome = outcome_of(measures, held=3, ended=ev.CourseEndCode.WITHDRAWN, ended_at=ended_at)
    assert outcome.ending == "ended_early"
    assert outcome.ended_at == ended_at
    assert outcome.end_code is ev.CourseEndCode.WITHDRAWN
    point = outcome.at(END_OF_COURSE)
    assert point.window is not None
    assert point.window.closes == ended_at + timedelta(days=7)
    assert point.change == -18  # measured, and shown
    assert not point.responded
    assert not point.remitted


def test_a_course_completed_then_discharged_stays_completed() -> None:
    completed = course()
    discharged = completed.model_copy(
        update={
            "standing": "ended",
            "ended_at": COMPLETED_AT + timedelta(days=40),
            "end_code": ev.CourseEndCode.DISCHARGED,
        }
    )
    outcome = course_outcome(discharged, [enrolment(16), end_of_course(4)])
    assert outcome is not None
    assert (outcome.ending, outcome.ended_at) == ("completed", COMPLETED_AT)
    assert outcome.at(END_OF_COURSE).remitted


def test_a_course_without_a_dose_held_has_not_started() -> None:
    assert course_outcome(course(held=0, completed_at=None), [enrolment(16)]) is None
    never = course(held=0, ended=ev.CourseEndCode.WITHDRAWN, ended_at=FIRST_DOSE)
    assert course_outcome(never, [enrolment(16)]) is None


def test_a_course_in_progress_has_no_windows_yet() -> None:
    outcome = outcome_of([enrolment(16)], held=2, completed_at=None)
    assert outcome.ending == "in_progress"
    assert outcome.ended_at is None
    assert all(p.window is None for p in outcome.points)


def test_a_scheduled_point_stays_open_as_long_as_its_link() -> None:
    """Review finding: a 6-month link open till the 14th day after calendar month 6 was
    counted closed at 30 x 6 + 14 days, so the point could be final with links open."""
    shape = course()
    late_close = COMPLETED_AT + timedelta(days=6 * 30 + 20)
    scheduled = ScheduledMeasure(
        measure_id=uuid.uuid4(),
        point=MONTH_6,
        instruments=(ev.Instrument.PHQ9,),
        opens_at=COMPLETED_AT + timedelta(days=6 * 30 + 3),
        closes_at=late_close,
        planned_at=COMPLETED_AT,
    )
    found = course_outcome(shape.model_copy(update={"measures": (scheduled,)}), [enrolment(16)])
    assert found is not None
    window = found.at(MONTH_6).window
    assert window is not None
    assert window.closes == late_close
    assert found.at(MONTH_1).window == follow_up_windows(LAST_DOSE, COMPLETED_AT)[MONTH_1]
