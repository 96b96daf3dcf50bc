"""The auditor's course checks: doses given without a check-in, bookings after a course ended,
and the counts of what courses lived through (paused, withdrawn, restarted, alerts escalated,
booster sessions booked, consultations waitlisted and waitlist offers taken).

Read from the topics alone, like every auditor count (ops/audit_checks.py).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from typing import TYPE_CHECKING

from ops.audit_rebuild import Rebuilt, occurred
from shared import topics
from shared.events import AppointmentKind, AppointmentStatus, CourseEndCode

if TYPE_CHECKING:
    from ops.audit import Record

DOSING = frozenset({AppointmentKind.MEDICINE.value, AppointmentKind.BOOSTER.value})
# Facts that book (or re-book) something for a course, naming the course.
BOOKING = frozenset(
    {
        topics.COURSE_BOOKED.name,
        topics.SESSION_SCHEDULED.name,
        topics.SESSION_RESCHEDULED.name,
        topics.COURSE_RESUMED.name,
    }
)


def doses_without_checkin(records: list[Record], detail: Counter[str]) -> int:
    """Medicine (and booster) sessions completed with no passed check-in for them before."""
    passed: dict[str, list[datetime]] = defaultdict(list)
    for r in records:
        if r.topic == topics.SESSION_CHECKED_IN.name and r.value.get("passed"):
            passed[str(r.value["appointment_id"])].append(occurred(r))
    found = 0
    seen: set[str] = set()
    for r in records:
        if r.topic != topics.SESSION_COMPLETED.name or r.value.get("kind") not in DOSING:
            continue
        appointment = str(r.value["appointment_id"])
        if appointment in seen:
            continue  # a republished completion is one dose
        seen.add(appointment)
        completed = occurred(r)
        found += not any(at <= completed for at in passed.get(appointment, ()))
    detail["doses_without_checkin"] += found
    return found


def booked_after_course_ended(records: list[Record], rebuilt: Rebuilt, detail: Counter[str]) -> int:
    """Anything booked for a course after its CourseEnded: a session scheduled or moved, the
    course resumed or booked again, or (partner feed) one of its appointments shown booked."""
    ended: dict[str, datetime] = {}
    for r in records:
        if r.topic == topics.COURSE_ENDED.name:
            course = str(r.value["course_id"])
            ended[course] = min(occurred(r), ended.get(course, occurred(r)))
    found: Counter[str] = Counter()
    for r in records:
        if r.topic in BOOKING:
            course = str(r.value.get("course_id"))
            why = r.topic.split(".", 1)[1].rsplit(".", 1)[0].replace(".", "_")
        elif (
            r.topic == topics.PUBLIC_APPOINTMENT_STATUS.name
            and r.value.get("status") == AppointmentStatus.BOOKED.value
        ):
            known = rebuilt.appointments.get(str(r.value["appointment_id"]))
            course = str(known.course_id) if known and known.course_id else ""
            why = "status_booked"
        else:
            continue
        if course in ended and occurred(r) > ended[course]:
            found[why] += 1
    for why, n in found.items():
        detail[f"booked_after_end_{why}"] += n
    return sum(found.values())


def courses_paused(records: list[Record]) -> int:
    return len({r.id for r in records if r.topic == topics.COURSE_PAUSED.name})


def courses_withdrawn(records: list[Record]) -> int:
    return len(
        {
            str(r.value["course_id"])
            for r in records
            if r.topic == topics.COURSE_ENDED.name
            and r.value.get("reason") == CourseEndCode.WITHDRAWN.value
        }
    )


def courses_restarted(records: list[Record]) -> int:
    """Courses booked for a client after an earlier course of theirs (a returning client)."""
    courses: dict[str, set[str]] = defaultdict(set)
    for r in records:
        if r.topic == topics.COURSE_BOOKED.name:
            courses[r.key].add(str(r.value["course_id"]))
    return sum(len(ids) - 1 for ids in courses.values())


def alerts_escalated(records: list[Record]) -> int:
    return len(
        {
            str(r.value["alert_id"])
            for r in records
            if r.topic == topics.CLINICAL_ALERT_ESCALATED.name
        }
    )


def booster_sessions_booked(records: list[Record]) -> int:
    """Booster sessions booked when their booster fell due (a republished fact is one)."""
    return _distinct(records, topics.BOOSTER_SESSION_BOOKED.name)


def waitlisted(records: list[Record]) -> int:
    """Times a client joined a clinic's consultation waitlist."""
    return _distinct(records, topics.CONSULTATION_WAITLISTED.name)


def waitlist_offers_taken(records: list[Record]) -> int:
    """Freed consultation slots a waiting client accepted through the offer's link."""
    return _distinct(records, topics.CONSULTATION_OFFER_ACCEPTED.name)


def _distinct(records: list[Record], topic: str) -> int:
    return len({r.id for r in records if r.topic == topic})
