"""The auditor's measures: what was asked, what was answered, and how clients did.

Computed from the topics alone: the measure messages sent (NotificationSent of
kind `measure_request`), the answers (MeasureAnswered, each joined to its
MeasureDue by `measure_id` for its point and course when the answer does not
say), the enrolment measure (ClientEnrolled) and the first dose held
(SessionCompleted). Nothing is read from a service's store, and nothing from
the demo's own parameters.

Outcome rates, at the end of the course, over the clients whose course completed
and who answered its end-of-course measure:
- baseline: the last PHQ-9 before the first dose started (the enrolment measure
  when none is newer);
- response: the PHQ-9 fell by at least 50% from a baseline of 5 or more;
- remission: the PHQ-9 is under 5.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from ops.audit_rebuild import occurred, rebuild
from shared import topics

if TYPE_CHECKING:
    from ops.audit import Record

MEASURE_KIND = "measure_request"
END = "end_of_course"


@dataclass(frozen=True)
class Rates:
    clients: int  # completed, with an end-of-course answer
    responded: int
    remitted: int

    @property
    def response_rate(self) -> float:
        return round(self.responded / self.clients, 3) if self.clients else 0.0

    @property
    def remission_rate(self) -> float:
        return round(self.remitted / self.clients, 3) if self.clients else 0.0


def measures_sent(records: Iterable[Record]) -> int:
    return len(
        {
            r.value["notification_id"]
            for r in records
            if r.topic == topics.NOTIFICATION_SENT.name and r.value["message_kind"] == MEASURE_KIND
        }
    )


def measures_answered(records: Iterable[Record]) -> int:
    return len({r.id for r in records if r.topic == topics.MEASURE_ANSWERED.name})


def _phq9(record: Record) -> int | None:
    for response in record.value["responses"]:
        if response["questionnaire"] == "phq9":
            return int(response["total"])
    return None


def outcome_rates(records: list[Record]) -> Rates:
    due = {
        r.value["measure_id"]: (r.value["point"], r.value["course_id"])
        for r in records
        if r.topic == topics.MEASURE_DUE.name
    }
    # The first dose from the moment it started (as the schedule stood when it was held),
    # not from when its completion was recorded: a link answered during the dose is no
    # baseline, as the scheduler's outcomes have it.
    appointments = rebuild(records).appointments
    first_dose: dict[tuple[str, str], datetime] = {}
    for r in records:
        if r.topic == topics.SESSION_COMPLETED.name and r.value.get("dose_number") == 1:
            key = (r.key, r.value["course_id"])
            appt = appointments.get(str(r.value["appointment_id"]))
            state = appt.at(occurred(r)) if appt else None
            started = state.starts_at if state is not None else occurred(r)
            first_dose[key] = min(started, first_dose.get(key, started))
    # client -> [(when, PHQ-9)], the enrolment measure and every answer
    scores: dict[str, list[tuple[datetime, int]]] = {}
    ends: dict[tuple[str, str], int] = {}
    for r in records:
        if r.topic == topics.CLIENT_ENROLLED.name:
            scores.setdefault(r.key, []).append((occurred(r), int(r.value["phq9_total"])))
        elif r.topic == topics.MEASURE_ANSWERED.name and (total := _phq9(r)) is not None:
            scores.setdefault(r.key, []).append((occurred(r), total))
            point, course = r.value.get("point"), r.value.get("course_id")
            if point is None and r.value.get("measure_id") in due:
                point, course = due[r.value["measure_id"]]
            if point == END and course is not None:
                ends.setdefault((r.key, str(course)), total)  # the first answer counts
    completed = {
        (r.key, r.value["course_id"]) for r in records if r.topic == topics.COURSE_COMPLETED.name
    }
    clients = responded = remitted = 0
    for key, end in ends.items():
        if key not in completed or key not in first_dose:
            continue
        before = [s for s in scores.get(key[0], []) if s[0] < first_dose[key]]
        if not before:
            continue
        baseline = max(before)[1]
        clients += 1
        responded += baseline >= 5 and end <= baseline / 2
        remitted += end < 5
    return Rates(clients, responded, remitted)
