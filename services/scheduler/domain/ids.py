"""The ids of the events a change of one client's schedule publishes.

An id names exactly one fact and is the same on every replay of that fact:
- an HTTP change is named by the client, the version of the schedule it was
  decided on, and the action; the version goes up with every saved change, so a
  request retried after a failure (nothing saved) reproduces its ids, while the
  same move made again later is a new fact with new ids;
- a booster announcement is named by its course, its number and its due
  instant, so booster 1 of a changed plan is not the earlier booster 1, and a
  timer fired again after a failed save repeats the same id;
- a measure falling due is named by its measure id, which names one measure of
  one course (domain.measures), so a timer fired again repeats the same id;
- events caused by another event are named by the cause's id and their role
  (chassis.events), which already names one fact.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from services.scheduler.domain.schedule import ClientSchedule
from shared.envelope import derived_event_id
from shared.events import Event


def change_cause(before: ClientSchedule, action: str) -> str:
    """What an HTTP change to `before` is named by: client, version decided on, action."""
    return f"{before.client_id}/v{before.version}/{action}"


def booster_cause(course_id: UUID, number: int, due_at: datetime) -> str:
    """What announcing booster `number` due at `due_at` is named by."""
    return f"{course_id}/booster-{number}/{due_at.timestamp():.0f}"


def booster_booking_cause(course_id: UUID, number: int, due_at: datetime) -> str:
    """What booking announced booster `number` (its own step, after the announcement)
    is named by."""
    return f"{booster_cause(course_id, number, due_at)}/booking"


def measure_cause(measure_id: UUID) -> str:
    """What announcing measure `measure_id` due is named by."""
    return f"measure/{measure_id}"


def role(event: Event, index: int) -> str:
    """An output's role among the events of one change: its type and position."""
    return f"{type(event).__name__}-{index}"


def event_ids(cause: str, events: Sequence[Event]) -> list[str]:
    return [derived_event_id(cause, role(event, index)) for index, event in enumerate(events)]


def saved(after: ClientSchedule, before: ClientSchedule) -> ClientSchedule:
    """`after`, as the change decided on `before` saves it: the next version."""
    return after.model_copy(update={"version": before.version + 1})
