"""Answered measures (intake.measure.answered.v1), as the scheduler records them.

Each answer goes into the client's measure log (measure_log.py) in one write step
with its handled mark: a redelivered answer is recorded once. An answer from a link
names its measure only; the measure's point and course are taken from the course's
schedule of measures, so outcomes place it where it was asked. Its measure's timer
is left as it is: fired, it finds the answer and sends nothing (domain.measures.fired).
The check-in asks whether its session's pre-dose measure is overdue.
"""

from __future__ import annotations

from dataclasses import replace
from uuid import UUID

from chassis.unit_of_work import Decision, Transaction
from services.scheduler.changes import ScheduleChanges, UnknownClinic
from services.scheduler.domain import measures
from services.scheduler.domain.schedule import ClientSchedule
from services.scheduler.measure_log import answered_entry
from shared import events as ev
from shared.envelope import Envelope


class MeasureAnswers(ScheduleChanges):
    async def on_measure_answered(self, event: ev.MeasureAnswered, cause: Envelope) -> None:
        if self.clinics.get(event.clinic_id) is None:
            raise UnknownClinic(f"unknown clinic {event.clinic_id!r}")
        entry = answered_entry(event)
        if entry.point is None and event.measure_id is not None:
            # A link names the measure only: its point and course are the schedule's (a
            # measure id names one point of one course, so this never changes), the
            # current course's or one put on record for a new one.
            schedule = await self.store.load(event.clinic_id, event.client_id)
            courses = (*schedule.finished_courses, schedule.course) if schedule else ()
            found = next(
                (
                    (course, m)
                    for course in courses
                    if course is not None
                    for m in course.measures
                    if m.measure_id == event.measure_id
                ),
                None,
            )
            if found is not None:
                course, scheduled = found
                entry = replace(
                    entry, point=scheduled.point.value, course_id=str(course.plan.course_id)
                )

        async def step(tx: Transaction) -> Decision[None]:
            return Decision(
                lambda p: self.store.measure_log.record(
                    p, event.clinic_id, event.client_id, cause.id, entry
                )
            )

        await self.unit_of_work.run(
            event.clinic_id, [cause.id], step, marks_of=str(event.client_id)
        )

    async def measure_overdue(self, schedule: ClientSchedule, appointment_id: UUID) -> bool:
        """Whether the pre-dose measure of the session, as it now starts, opened unanswered."""
        course = schedule.course
        if course is None:
            return False
        session = course.appointment(appointment_id)
        client = schedule.client_id
        answers = await self.store.measure_log.answers_of(schedule.clinic_id, [client])
        return measures.overdue(course, session, answers[client], self.clock.now())
