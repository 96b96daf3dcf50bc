"""A returning client: a new course replaces a completed or ended one.

Pure, like domain.lifecycle. The old course's id is kept in `previous_courses` and
the course itself in `finished_courses` (its cohort still counts it); its boosters
stop when it is put on record.
"""

from __future__ import annotations

from datetime import datetime

from services.scheduler.domain import booster_lifecycle
from services.scheduler.domain.facts import Change, course_of
from services.scheduler.domain.schedule import ClientSchedule, Course, Refused
from shared import events as ev


def finished(course: Course) -> bool:
    """Completed or ended: a returning client may start a new course."""
    return course.standing == "ended" or course.completed_at is not None


def archived(schedule: ClientSchedule, now: datetime) -> Change:
    """A finished course put on record before a new one: its boosters stop."""
    course = course_of(schedule)
    if not finished(course):
        raise Refused("a course is still in progress: end it before a new one")
    events: list[ev.Event] = []
    if course.completed_at is not None and not course.boosters_stopped and course.booster_plan:
        schedule, events = booster_lifecycle.stop_boosters(schedule, "stopped_by_care_team", now)
    previous = (*schedule.previous_courses, course.plan.course_id)
    update = {
        "course": None,
        "previous_courses": previous,
        # Kept whole: the month it ended in still counts it (outcomes, cohorts).
        "finished_courses": (*schedule.finished_courses, course_of(schedule)),
    }
    return schedule.model_copy(update=update), events
