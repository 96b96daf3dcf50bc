"""A clinic's outcomes per cohort: the courses that ended in one clinic-local month.

Pure. A cohort is everyone whose course started (first dose held) and ended in
the month: completed in the month of `completed_at`, ended early (withdrawn,
discharged, closed incomplete) in the month of `ended_at`. For each follow-up
point it gives:
- `started`: everyone in the cohort; `ended_early`: those among them whose
  course ended early;
- `measured`: those with a PHQ-9 at the point; `awaiting`: those not measured
  whose window for the point is still open or to come;
- the mean score of those measured, and the mean change (score less
  baseline) with the mean baseline of those measured who have a baseline, each
  with a 95% t interval;
- response and remission rates over everyone who started: a client not
  measured, or whose course ended early, counts as neither.
A cohort of fewer than `MIN_COHORT` is suppressed: it is never published, and
says so. A point is final once no one is awaiting it; only a final point of a
cohort not suppressed is published.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid5
from zoneinfo import ZoneInfo

from services.scheduler.domain.intervals import Estimate, estimate
from services.scheduler.domain.outcomes import FOLLOW_UPS, CourseOutcome, PointOutcome
from shared import events as ev
from shared.envelope import derived_event_id
from shared.events import MeasurePoint

MIN_COHORT = 10
COHORT_NAMESPACE = UUID("207de817-f4e2-590e-ab83-da28d94d7c1e")  # uuid5(URL, "kap:outcomes:cohort")


@dataclass(frozen=True)
class CohortRow:
    month: str  # YYYY-MM, clinic time
    point: MeasurePoint
    started: int
    ended_early: int
    measured: int
    awaiting: int
    baseline: Estimate | None
    score: Estimate | None
    change: Estimate | None
    responded: int
    remitted: int

    @property
    def response_rate(self) -> float:
        return self.responded / self.started

    @property
    def remission_rate(self) -> float:
        return self.remitted / self.started

    @property
    def suppressed(self) -> bool:
        return self.started < MIN_COHORT

    @property
    def final(self) -> bool:
        return self.awaiting == 0

    @property
    def publishable(self) -> bool:
        return self.final and not self.suppressed


@dataclass(frozen=True)
class PointSummary:
    """Everyone in every cohort together, at one point (baseline: None)."""

    point: MeasurePoint | None
    started: int
    score: Estimate | None

    @property
    def suppressed(self) -> bool:
        return self.started < MIN_COHORT


def cohort_month(outcome: CourseOutcome, zone: ZoneInfo) -> str | None:
    """The clinic-local month the course ended in; None while it is in progress."""
    if outcome.ended_at is None:
        return None
    return outcome.ended_at.astimezone(zone).strftime("%Y-%m")


def cohorts(outcomes: Iterable[CourseOutcome], zone: ZoneInfo) -> dict[str, list[CourseOutcome]]:
    by_month: dict[str, list[CourseOutcome]] = defaultdict(list)
    for outcome in outcomes:
        month = cohort_month(outcome, zone)
        if month is not None:
            by_month[month].append(outcome)
    return dict(sorted(by_month.items()))


def cohort_table(
    outcomes: Iterable[CourseOutcome], zone: ZoneInfo, now: datetime
) -> list[CohortRow]:
    """One row per cohort month and follow-up point, months in order."""
    return [
        _row(month, point, members, now)
        for month, members in cohorts(outcomes, zone).items()
        for point in FOLLOW_UPS
    ]


def _row(
    month: str, point: MeasurePoint, members: Sequence[CourseOutcome], now: datetime
) -> CohortRow:
    at = [(member, member.at(point)) for member in members]
    scores = [(member, s) for member, p in at if (s := p.score) is not None]
    paired = [(b, s) for member, s in scores if (b := _baseline(member)) is not None]
    return CohortRow(
        month=month,
        point=point,
        started=len(members),
        ended_early=sum(m.ended_early for m in members),
        measured=len(scores),
        awaiting=sum(_awaiting(p, now) for _, p in at),
        baseline=estimate([b for b, _ in paired]),
        score=estimate([s for _, s in scores]),
        change=estimate([s - b for b, s in paired]),
        responded=sum(p.responded for _, p in at),
        remitted=sum(p.remitted for _, p in at),
    )


def _baseline(member: CourseOutcome) -> int | None:
    return member.baseline.phq9 if member.baseline else None


def _awaiting(point: PointOutcome, now: datetime) -> bool:
    return point.score is None and point.window is not None and point.window.closes >= now


def summary_by_point(outcomes: Iterable[CourseOutcome], zone: ZoneInfo) -> list[PointSummary]:
    """Every ended course together: the mean baseline, then the mean score at each point
    (of those measured there), for a clinic's chart."""
    members = [m for group in cohorts(outcomes, zone).values() for m in group]
    baselines = [b for m in members if (b := _baseline(m)) is not None]
    summaries = [PointSummary(None, len(members), estimate(baselines))]
    for point in FOLLOW_UPS:
        scores = [s for m in members if (s := m.at(point).score) is not None]
        summaries.append(PointSummary(point, len(members), estimate(scores)))
    return summaries


# --- the public summary -----------------------------------------------------------


def cohort_id(clinic_id: str, month: str, point: MeasurePoint) -> UUID:
    """The cohort's own id (names no client): the key of its summaries."""
    return uuid5(COHORT_NAMESPACE, f"{clinic_id}/{month}/{point.value}")


def summarized(clinic_id: str, row: CohortRow, now: datetime) -> ev.CohortOutcomesSummarized:
    """The de-identified summary of a publishable row (figures rounded: 2 places for
    scores, 4 for rates)."""
    if not row.publishable:
        raise ValueError(f"cohort {row.month} {row.point} is not publishable")
    change = row.change
    interval = change.interval if change else None
    few = row.measured < MIN_COHORT
    return ev.CohortOutcomesSummarized(
        clinic_id=clinic_id,
        client_id=cohort_id(clinic_id, row.month, row.point),
        occurred_at=now,
        cohort_month=row.month,
        point=row.point,
        clients_started=row.started,
        clients_measured=row.measured,
        ended_early=row.ended_early,
        # The mean of fewer than MIN_COHORT measured is not shown: of one, it is theirs.
        mean_change=round(change.mean, 2) if change and few is False else None,
        mean_change_ci95=(round(interval[0], 2), round(interval[1], 2))
        if interval and few is False
        else None,
        response_rate=round(row.response_rate, 4),
        remission_rate=round(row.remission_rate, 4),
    )


def summary_event_id(summary: ev.CohortOutcomesSummarized) -> str:
    """Named by the clinic, month and point alone: a cohort is published once, when final.

    Figures that change after (a late answer, a returning client's course) are not
    published again: two summaries of one cohort could be subtracted to show one
    client's change.
    """
    return derived_event_id(f"outcomes/{summary.client_id}", "summary")
