"""A clinic's cohorts by month of course end: figures, suppression under 10, summaries."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.scheduler.domain import cohorts
from services.scheduler.domain.cohorts import CohortRow
from services.scheduler.domain.outcomes import (
    END_OF_COURSE,
    MONTH_1,
    CourseOutcome,
    Measure,
    course_outcome,
)
from services.scheduler.domain.schedule import Course
from shared import events as ev
from tests.unit.scheduler.outcome_builders import COMPLETED_AT, course, dose_at, enrolment, phq9

LISBON = ZoneInfo("Europe/Lisbon")
AFTER_END_OF_COURSE = COMPLETED_AT + timedelta(days=8)
MONTH = COMPLETED_AT.astimezone(LISBON).strftime("%Y-%m")


def client(baseline: int | None, end: int | None, shape: Course | None = None) -> CourseOutcome:
    """A completed course measured at enrolment and at its end (None: not measured)."""
    measures: list[Measure] = []
    if baseline is not None:
        measures.append(enrolment(baseline))
    if end is not None:
        measures.append(phq9(end, COMPLETED_AT + timedelta(days=2), END_OF_COURSE))
    outcome = course_outcome(shape or course(), measures)
    assert outcome is not None
    return outcome


def withdrawn(baseline: int, score: int | None = None) -> CourseOutcome:
    ended_at = dose_at(2) + timedelta(days=2)  # March: the completed courses end in April
    shape = course(held=2, ended=ev.CourseEndCode.WITHDRAWN, ended_at=ended_at)
    measures = [enrolment(baseline)]
    if score is not None:
        measures.append(phq9(score, ended_at + timedelta(days=1), END_OF_COURSE))
    outcome = course_outcome(shape, measures)
    assert outcome is not None
    return outcome


def row(
    outcomes: Sequence[CourseOutcome], point: ev.MeasurePoint = END_OF_COURSE, month: str = MONTH
) -> CohortRow:
    table = cohorts.cohort_table(outcomes, LISBON, AFTER_END_OF_COURSE)
    return next(r for r in table if r.month == month and r.point == point)


def test_a_cohort_under_10_is_suppressed_and_10_is_not() -> None:
    nine = row([client(16, 6) for _ in range(9)])
    ten = row([client(16, 6) for _ in range(10)])
    assert nine.started == 9
    assert nine.suppressed
    assert not nine.publishable
    assert not ten.suppressed
    assert ten.publishable
    with pytest.raises(ValueError, match="not publishable"):
        cohorts.summarized("lisbon", nine, AFTER_END_OF_COURSE)


def test_rates_are_over_everyone_who_started() -> None:
    members = [client(16, 4) for _ in range(3)]  # responded and remitted
    members += [client(16, 8) for _ in range(3)]  # responded
    members += [client(16, 12) for _ in range(2)]  # neither
    members += [client(16, None) for _ in range(2)]  # not measured
    figures = row(members)
    assert (figures.started, figures.measured) == (10, 8)
    assert figures.response_rate == 0.6
    assert figures.remission_rate == 0.3


def test_mean_change_with_its_interval_over_those_measured_with_a_baseline() -> None:
    members = [client(16, end) for end in (4, 6, 8, 10, 12)] + [client(None, 2)]
    figures = row(members)
    assert figures.measured == 6
    assert figures.score is not None
    assert figures.score.n == 6
    assert figures.change is not None
    assert figures.change.n == 5
    assert figures.change.mean == -8
    low, high = figures.change.interval or (0, 0)
    half = 2.776 * (10**0.5) / (5**0.5)  # changes -12..-4: sd sqrt(10), t(4)
    assert (low, high) == pytest.approx((-8 - half, -8 + half))
    assert figures.baseline is not None
    assert figures.baseline.mean == 16


def test_a_withdrawn_course_counts_in_the_month_it_ended_as_not_responded() -> None:
    early = withdrawn(20, score=2)
    assert early.ended_at is not None
    month = early.ended_at.astimezone(LISBON).strftime("%Y-%m")
    assert month != MONTH  # ended in March; the completed courses in April
    table = cohorts.cohort_table([early, client(16, 4)], LISBON, AFTER_END_OF_COURSE)
    march = next(r for r in table if r.month == month and r.point == END_OF_COURSE)
    assert (march.started, march.ended_early, march.measured) == (1, 1, 1)
    assert (march.responded, march.remitted) == (0, 0)
    assert march.change is not None
    assert march.change.mean == -18


def test_the_month_is_the_clinics_own() -> None:
    late_evening = datetime(2026, 3, 31, 23, 30, tzinfo=UTC)  # Lisbon: 1 April 00:30
    done = client(16, 6, course(completed_at=late_evening))
    assert cohorts.cohort_month(done, LISBON) == "2026-04"
    assert cohorts.cohort_month(done, ZoneInfo("America/New_York")) == "2026-03"


def test_a_point_is_final_once_no_window_is_still_open() -> None:
    members = [client(16, 6) for _ in range(9)] + [client(16, None)]
    during = cohorts.cohort_table(members, LISBON, COMPLETED_AT + timedelta(days=3))
    waiting = next(r for r in during if r.point == END_OF_COURSE)
    assert waiting.awaiting == 1
    assert not waiting.final
    assert not waiting.publishable
    assert row(members).final
    assert not row(members, MONTH_1).final  # a month's window is yet to come


def test_courses_in_progress_are_in_no_cohort() -> None:
    going = course_outcome(course(held=3, completed_at=None), [enrolment(16)])
    assert going is not None
    assert cohorts.cohort_table([going], LISBON, AFTER_END_OF_COURSE) == []


def test_the_summary_names_no_client_and_a_cohort_has_one_summary_id_whatever_its_figures() -> None:
    members = [client(16, 6) for _ in range(10)]
    summary = cohorts.summarized("lisbon", row(members), AFTER_END_OF_COURSE)
    again = cohorts.summarized("lisbon", row(members), AFTER_END_OF_COURSE + timedelta(hours=1))
    changed = cohorts.summarized("lisbon", row([*members, client(16, 4)]), AFTER_END_OF_COURSE)
    assert summary.client_id == cohorts.cohort_id("lisbon", MONTH, END_OF_COURSE)
    assert changed.client_id == summary.client_id
    assert cohorts.summary_event_id(again) == cohorts.summary_event_id(summary)
    # Published once: changed figures never go out again (two could be subtracted).
    assert cohorts.summary_event_id(changed) == cohorts.summary_event_id(summary)
    other = cohorts.cohort_id("lisbon", MONTH, MONTH_1)
    assert other != summary.client_id  # another point is another cohort, another summary
    assert (summary.clients_started, summary.clients_measured) == (10, 10)
    assert (summary.mean_change, summary.response_rate, summary.remission_rate) == (-10, 1, 0)
    text = json.dumps(summary.model_dump(mode="json"))
    assert not any(str(m.course_id) in text for m in members)


def test_the_chart_summary_gives_the_baseline_then_each_point() -> None:
    members = [client(16, 6) for _ in range(4)] + [client(20, None)]
    summaries = cohorts.summary_by_point(members, LISBON)
    assert [s.point for s in summaries] == [None, *cohorts.FOLLOW_UPS]
    baseline, end = summaries[0].score, summaries[1].score
    assert baseline is not None
    assert end is not None
    assert (baseline.n, baseline.mean) == (5, 16.8)
    assert (end.n, end.mean) == (4, 6)
    assert all(s.suppressed for s in summaries)  # 5 clients


def test_the_mean_change_of_fewer_than_ten_measured_is_not_published() -> None:
    """Ten started, one measured: the cohort may be published, but its mean change would be
    that one client's."""
    members = [client(16, 6)] + [client(16, None) for _ in range(9)]
    summary = cohorts.summarized("lisbon", row(members), AFTER_END_OF_COURSE)
    assert (summary.clients_started, summary.clients_measured) == (10, 1)
    assert (summary.mean_change, summary.mean_change_ci95) == (None, None)
