"""The scheduler's HTTP routes for outcomes: a client's measures and course outcomes, the
clinic's cohort table, and publishing the cohorts large enough to publish.

The clinic sees its own figures, small cohorts too, marked `suppressed`: those
are never published (domain.cohorts).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException

from chassis.http import CLINIC_RESPONSES, CONFLICT, AuthorisedClinic, staff_actor
from chassis.unit_of_work import WriteConflict
from services.scheduler.domain.cohorts import MIN_COHORT, CohortRow, PointSummary
from services.scheduler.domain.intervals import Estimate
from services.scheduler.domain.outcomes import CourseOutcome, Measure, PointOutcome
from services.scheduler.outcome_requests import CohortPublication
from services.scheduler.scheduler import Scheduler


def estimate_view(found: Estimate | None) -> dict[str, Any] | None:
    if found is None:
        return None
    interval = found.interval
    return {
        "n": found.n,
        "mean": round(found.mean, 2),
        "ci95": [round(interval[0], 2), round(interval[1], 2)] if interval else None,
    }


def measure_view(measure: Measure) -> dict[str, Any]:
    return {
        "authored": measure.authored.isoformat(),
        "point": measure.point,
        "course_id": str(measure.course_id) if measure.course_id else None,
        "measure_id": str(measure.measure_id) if measure.measure_id else None,
        "source": measure.source,
        "phq9": measure.phq9,
        "gad7": measure.gad7,
    }


def _point_view(point: PointOutcome) -> dict[str, Any]:
    return {
        "point": point.point,
        "opens_at": point.window.opens.isoformat() if point.window else None,
        "closes_at": point.window.closes.isoformat() if point.window else None,
        "phq9": point.score,
        "authored": point.measure.authored.isoformat() if point.measure else None,
        "change": point.change,
        "responded": point.responded,
        "remitted": point.remitted,
    }


def course_outcome_view(outcome: CourseOutcome, month: str | None) -> dict[str, Any]:
    baseline = outcome.baseline
    return {
        "course_id": str(outcome.course_id),
        "ending": outcome.ending,
        "end_code": outcome.end_code,
        "first_dose_at": outcome.first_dose_at.isoformat(),
        "ended_at": outcome.ended_at.isoformat() if outcome.ended_at else None,
        "cohort_month": month,
        "baseline": {"phq9": baseline.phq9, "authored": baseline.authored.isoformat()}
        if baseline
        else None,
        "points": [_point_view(p) for p in outcome.points],
    }


def row_view(row: CohortRow) -> dict[str, Any]:
    return {
        "month": row.month,
        "point": row.point,
        "clients_started": row.started,
        "ended_early": row.ended_early,
        "clients_measured": row.measured,
        "awaiting": row.awaiting,
        "baseline": estimate_view(row.baseline),
        "score": estimate_view(row.score),
        "change": estimate_view(row.change),
        "response_rate": round(row.response_rate, 4),
        "remission_rate": round(row.remission_rate, 4),
        "final": row.final,
        "suppressed": row.suppressed,
    }


def point_summary_view(summary: PointSummary) -> dict[str, Any]:
    return {
        "point": summary.point or "baseline",
        "clients_started": summary.started,
        "phq9": estimate_view(summary.score),
        "suppressed": summary.suppressed,
    }


def publication_view(publication: CohortPublication) -> dict[str, Any]:
    row = publication.row
    return {
        "month": row.month,
        "point": row.point,
        "clients_started": row.started,
        "status": publication.status,
        "event_id": publication.event_id,
    }


def routes(scheduler: Scheduler) -> APIRouter:
    router = APIRouter(
        prefix="/v1/clinics/{clinic_id}",
        tags=["outcomes"],
        responses=CLINIC_RESPONSES,
        dependencies=[Depends(staff_actor)],
    )

    @router.get(
        "/clients/{client_id}/outcomes",
        summary="A client's measures over time, and their course's PHQ-9 outcomes",
    )
    async def client_outcomes(clinic: AuthorisedClinic, client_id: UUID) -> dict[str, Any]:
        found = await scheduler.client_outcomes(clinic.id, client_id)
        if found is None:
            raise HTTPException(404, "not found")
        return {
            "client_id": str(client_id),
            "measures": [measure_view(m) for m in found.measures],
            "course": course_outcome_view(found.course, found.cohort_month)
            if found.course
            else None,
        }

    @router.get(
        "/outcomes",
        summary="The clinic's cohorts by month of course end and measure point",
    )
    async def clinic_outcomes(clinic: AuthorisedClinic) -> dict[str, Any]:
        table = await scheduler.clinic_outcomes(clinic.id)
        return {
            "clinic_id": clinic.id,
            "timezone": table.timezone,
            "minimum_cohort": MIN_COHORT,
            "courses_in_progress": table.in_progress,
            "cohorts": [row_view(row) for row in table.rows],
            "by_point": [point_summary_view(s) for s in table.by_point],
        }

    @router.post(
        "/outcomes/publish",
        summary="Publish the de-identified summary of every final cohort of at least "
        f"{MIN_COHORT} clients (public.outcomes.cohort-summarized.v1)",
        responses=CONFLICT,
    )
    async def publish_outcomes(clinic: AuthorisedClinic) -> dict[str, Any]:
        try:
            report = await scheduler.publish_outcomes(clinic.id)
        except WriteConflict as busy:
            raise HTTPException(409, "outcomes are being published; retry") from busy
        return {"clinic_id": clinic.id, "cohorts": [publication_view(p) for p in report]}

    return router
