"""How a course ends early, or is held: withdrawn, discharged, closed incomplete, on review.

Pure, like domain.lifecycle: each function takes the time it needs and returns
the new schedule with the events it causes; sessions it lets go are returned
too, so the write step frees their slots in the booking ledger.

- A review hold (consecutive medicine no-shows, clinic policy) books nothing
  more and keeps what is booked; lifting it rebooks the dose that was missed
  (domain.pausing).
- An ending (withdrawn, discharged, closed as incomplete) releases every
  session not yet started and stops boosters; nothing is booked after it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from services.scheduler.domain import booster_booking, booster_lifecycle
from services.scheduler.domain.course import MEDICINE
from services.scheduler.domain.facts import Change, base, course_of, course_status, status_changed
from services.scheduler.domain.schedule import ClientSchedule, Course, Refused
from shared import events as ev
from shared.events import AppointmentStatus as Status

Released = list[ev.Appointment]


def consecutive_no_shows(course: Course) -> int:
    """Medicine sessions missed in a row, counted back from the latest one attended or
    missed (a cancellation neither breaks nor extends the run)."""
    count = 0
    sessions = (*course.plan.appointments, *course.off_plan)  # replaced no-shows count too
    medicine = [a for a in sessions if a.kind is MEDICINE]
    for session in sorted(medicine, key=lambda a: a.starts_at, reverse=True):
        status = course.status_of(session.appointment_id)
        if status == Status.NOSHOW:
            count += 1
        elif status == Status.FULFILLED:
            break
    return count


def release(
    schedule: ClientSchedule, now: datetime
) -> tuple[ClientSchedule, list[ev.Event], Released]:
    """Every session booked and not yet started, cancelled and taken out of the live plan."""
    course = course_of(schedule)
    released = [
        a
        for a in course.plan.appointments
        if course.status_of(a.appointment_id) == Status.BOOKED and a.starts_at > now
    ]
    gone = {a.appointment_id for a in released}
    statuses = {**course.statuses, **{str(a.appointment_id): Status.CANCELLED for a in released}}
    plan = course.plan.model_copy(
        update={
            "appointments": tuple(
                a for a in course.plan.appointments if a.appointment_id not in gone
            )
        }
    )
    course = course.model_copy(
        update={"plan": plan, "statuses": statuses, "off_plan": (*course.off_plan, *released)}
    )
    events: list[ev.Event] = []
    for session in released:
        events += [
            ev.SessionCancelled(
                **base(schedule, now),
                course_id=plan.course_id,
                appointment_id=session.appointment_id,
                kind=session.kind,
                late=False,  # released by the clinic, not a client's late cancellation
            ),
            status_changed(schedule, session, Status.CANCELLED, now),
        ]
    return schedule.model_copy(update={"course": course}), events, released


def end_course(
    schedule: ClientSchedule,
    code: ev.CourseEndCode,
    now: datetime,
    detail: str | None = None,
) -> tuple[ClientSchedule, list[ev.Event], Released]:
    course = course_of(schedule)
    if course.standing == "ended":
        raise Refused("the course has already ended")
    updated, events, released = release(schedule, now)
    updated, boosters, booster_sessions = booster_booking.release_boosters(updated, now)
    events, released = events + boosters, released + booster_sessions
    if course.completed_at is not None and not course.boosters_stopped:
        discharged = code is ev.CourseEndCode.DISCHARGED
        why: Literal["discharged", "stopped_by_care_team"] = (
            "discharged" if discharged else "stopped_by_care_team"
        )
        updated, stopped = booster_lifecycle.stop_boosters(updated, why, now)
        events += stopped
    ended = course_of(updated).model_copy(
        update={
            "standing": "ended",
            "ended_at": now,
            "end_code": code,
            "review_for": None,
            "boosters_stopped": True,
            "next_booster": None,
            "next_booster_due_at": None,
            "boosters_to_book": (),
        }
    )
    updated = updated.model_copy(update={"course": ended})
    fact = ev.CourseEnded(
        **base(schedule, now),
        course_id=course.plan.course_id,
        reason=code,
        sessions_released=len(released),
        medicine_sessions_completed=course.doses_held(),
        detail=detail,
    )
    public = course_status(updated, ev.CourseStatus.ENDED, now, ended_as=code)
    return updated, [*events, fact, public], released


def hold_for_review(schedule: ClientSchedule, missed: UUID, now: datetime) -> Change:
    course = course_of(schedule)
    held = course.model_copy(update={"standing": "on_review", "review_for": missed})
    updated = schedule.model_copy(update={"course": held})
    fact = ev.CourseHeldForReview(
        **base(schedule, now),
        course_id=course.plan.course_id,
        consecutive_no_shows=consecutive_no_shows(course),
    )
    return updated, [fact, course_status(updated, ev.CourseStatus.ON_REVIEW, now)]
