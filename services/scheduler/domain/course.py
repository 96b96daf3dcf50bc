"""The shape of a course: its steps in order, and a session placed in time.

A course is a sequence: preparation(s), dose 1, its integration, dose 2, ... Each session is
on its own clinic-local day, strictly after the one before it. So the client never has two
course sessions in one day, and each integration comes before the next dose: the dose it
integrates is always the latest dose before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from services.scheduler.domain.clinic import CoursePolicy
from shared.events import AppointmentKind

MEDICINE = AppointmentKind.MEDICINE
INTEGRATION = AppointmentKind.INTEGRATION
PREPARATION = AppointmentKind.PREPARATION
COURSE_KINDS = (PREPARATION, MEDICINE, INTEGRATION)


@dataclass(frozen=True, slots=True)
class Step:
    kind: AppointmentKind
    number: int  # preparation: its ordinal; medicine and integration: the dose number

    @property
    def name(self) -> str:
        """Also the seed of the appointment id: uuid5(course_id, name)."""
        return f"{self.kind}-{self.number}"


def course_steps(policy: CoursePolicy) -> tuple[Step, ...]:
    steps = [Step(PREPARATION, n) for n in range(1, policy.preparation_sessions + 1)]
    for dose in range(1, policy.medicine_sessions + 1):
        steps.append(Step(MEDICINE, dose))
        if policy.integration_follows(dose):
            steps.append(Step(INTEGRATION, dose))
    return tuple(steps)


@dataclass(frozen=True, slots=True)
class Placed:
    """A step at a time (UTC epoch seconds) on a clinic-local day, with its resources."""

    step: Step
    start: int
    end: int
    day: date
    therapist_id: str
    room_id: str | None = None
