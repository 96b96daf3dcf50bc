"""Outcomes: a client's measures over their course, the clinic's cohorts, their publication.

Read from the schedules and the measure log (measure_log), decided in
domain.outcomes and domain.cohorts. Publishing is one write step
(chassis.unit_of_work): each publishable cohort summary is an input named by its
event id, so a summary already published is not published again, one left in
the outbox by a crash is relayed with its id, and changed figures (another id)
are published as a new fact. Cohorts under 10 are never published.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from uuid import UUID
from zoneinfo import ZoneInfo

from redis.asyncio.client import Pipeline

from chassis.outbox import Output
from chassis.unit_of_work import Decision, Transaction
from services.scheduler.changes import ScheduleChanges, UnknownClinic
from services.scheduler.domain import cohorts
from services.scheduler.domain.cohorts import CohortRow, PointSummary
from services.scheduler.domain.outcomes import CourseOutcome, Measure, course_outcome
from shared import events as ev

Publication = Literal["published", "already_published", "suppressed", "not_final"]


@dataclass(frozen=True)
class ClientOutcomes:
    client_id: UUID
    measures: list[Measure]
    course: CourseOutcome | None  # the current course, once its first dose was held
    cohort_month: str | None


@dataclass(frozen=True)
class ClinicOutcomes:
    timezone: str
    rows: list[CohortRow]
    by_point: list[PointSummary]
    in_progress: int  # courses started and not yet ended: in no cohort yet


@dataclass(frozen=True)
class CohortPublication:
    row: CohortRow
    status: Publication
    event_id: str | None = None


class OutcomeRequests(ScheduleChanges):
    def _zone(self, clinic_id: str) -> ZoneInfo:
        clinic = self.clinics.get(clinic_id)
        if clinic is None:
            raise UnknownClinic(f"unknown clinic {clinic_id!r}")
        return clinic.zone

    async def client_outcomes(self, clinic_id: str, client_id: UUID) -> ClientOutcomes | None:
        """None: the scheduler knows nothing of the client."""
        zone = self._zone(clinic_id)
        schedule = await self.store.load(clinic_id, client_id)
        measures = await self.store.measure_log.measures_of(clinic_id, client_id)
        if schedule is None and not measures:
            return None
        course = schedule.course if schedule else None
        outcome = course_outcome(course, measures) if course else None
        month = cohorts.cohort_month(outcome, zone) if outcome else None
        return ClientOutcomes(client_id, measures, outcome, month)

    async def clinic_outcomes(self, clinic_id: str) -> ClinicOutcomes:
        zone = self._zone(clinic_id)
        clients = await self.store.client_ids(clinic_id)
        schedules = await self.store.load_many(clinic_id, clients)
        measures = await self.store.measure_log.measures_of_many(clinic_id, clients)
        # A returning client's earlier courses stay in the cohorts of the months they ended.
        outcomes = [
            outcome
            for schedule in schedules
            if schedule is not None
            for course in (*schedule.finished_courses, schedule.course)
            if course is not None
            if (outcome := course_outcome(course, measures[schedule.client_id]))
        ]
        return ClinicOutcomes(
            timezone=str(zone.key),
            rows=cohorts.cohort_table(outcomes, zone, self.clock.now()),
            by_point=cohorts.summary_by_point(outcomes, zone),
            in_progress=sum(o.ended_at is None for o in outcomes),
        )

    async def publish_outcomes(self, clinic_id: str) -> list[CohortPublication]:
        """Publish every final cohort of at least 10 not published with these figures."""
        table = await self.clinic_outcomes(clinic_id)
        now = self.clock.now()
        ready = {
            (row.month, row.point): cohorts.summarized(clinic_id, row, now)
            for row in table.rows
            if row.publishable
        }
        ids = {place: cohorts.summary_event_id(summary) for place, summary in ready.items()}
        inputs = {f"cohort-summary:{event_id}": place for place, event_id in ids.items()}

        async def step(tx: Transaction) -> Decision[list[str]]:
            places = [inputs[i] for i in tx.fresh]
            outputs = [self._output(ready[place], ids[place]) for place in places]
            return Decision(_nothing, outputs, list(tx.fresh))

        fresh: set[tuple[str, ev.MeasurePoint]] = set()
        if inputs:
            done = await self.unit_of_work.run(clinic_id, list(inputs), step, leave_to_relay=True)
            if isinstance(done, list):  # REPLAYED: every one published before
                fresh = {inputs[i] for i in done}
        return [_publication(row, ids, fresh) for row in table.rows]

    def _output(self, summary: ev.CohortOutcomesSummarized, event_id: str) -> Output:
        cohort = str(summary.client_id)
        envelope = self.publisher.envelope_for(summary, event_id=event_id, correlation_id=cohort)
        return Output(summary, envelope)


def _publication(
    row: CohortRow,
    ids: dict[tuple[str, ev.MeasurePoint], str],
    fresh: set[tuple[str, ev.MeasurePoint]],
) -> CohortPublication:
    place = (row.month, row.point)
    if place not in ids:
        return CohortPublication(row, "suppressed" if row.suppressed else "not_final")
    return CohortPublication(
        row, "published" if place in fresh else "already_published", ids[place]
    )


def _nothing(_: Pipeline) -> None:
    """Publishing changes no state: the outbox and the handled marks are the record."""
