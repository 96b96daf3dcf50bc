"""What every change to a client's schedule builds on: the course it acts on, and the
facts many changes announce (a stage reached, an appointment's or a course's status).

Pure, shared by domain.lifecycle, domain.booster_lifecycle, domain.endings,
domain.pausing and domain.returning, and by the reactions that build their own facts.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict
from uuid import UUID

from services.scheduler.domain.schedule import ClientSchedule, Course, Refused
from shared import events as ev
from shared.events import AppointmentStatus as Status

Change = tuple[ClientSchedule, list[ev.Event]]


class Base(TypedDict):
    clinic_id: str
    client_id: UUID
    occurred_at: datetime


def base(schedule: ClientSchedule, now: datetime) -> Base:
    """The fields every event about this client, happening `now`, carries."""
    return {"clinic_id": schedule.clinic_id, "client_id": schedule.client_id, "occurred_at": now}


def course_of(schedule: ClientSchedule) -> Course:
    if schedule.course is None:
        raise Refused("the client has no course")
    return schedule.course


def stage(
    schedule: ClientSchedule, reached: ev.ClientStage, now: datetime
) -> ev.ClientStageReached:
    return ev.ClientStageReached(**base(schedule, now), stage=reached)


def status_changed(
    schedule: ClientSchedule, appointment: ev.Appointment, status: Status, now: datetime
) -> ev.AppointmentStatusChanged:
    return ev.AppointmentStatusChanged(
        **base(schedule, now),
        appointment_id=appointment.appointment_id,
        kind=appointment.kind,
        status=status,
        starts_at=appointment.starts_at,
        ends_at=appointment.ends_at,
    )


def course_status(
    schedule: ClientSchedule,
    status: ev.CourseStatus,
    now: datetime,
    ended_as: ev.CourseEndCode | None = None,
) -> ev.CourseStatusChanged:
    """The course's public status (paused, resumed, on review, ended)."""
    course = course_of(schedule)
    return ev.CourseStatusChanged(
        **base(schedule, now),
        course_id=course.plan.course_id,
        status=status,
        ended_as=ended_as,
    )
