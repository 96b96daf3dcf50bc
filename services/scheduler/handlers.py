"""The scheduler's subscriptions: thin, each hands its event to an operation."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from chassis.config import ServiceSettings
from chassis.dead_letters import one_clinic
from chassis.kafka import GroupMembership, subscribe
from services.scheduler.scheduler import Scheduler
from shared import events as ev
from shared import topics
from shared.envelope import Envelope

SERVICE = "scheduler"


def register(
    broker: KafkaBroker, scheduler: Scheduler, settings: ServiceSettings
) -> GroupMembership:
    async def book_consultation(event: ev.ConsultationRequested, envelope: Envelope) -> None:
        one_clinic(event, envelope)  # one id for the lock and the handled mark
        await scheduler.on_consultation_requested(event, envelope)

    async def close_consultation(event: ev.ConsultationHeld, envelope: Envelope) -> None:
        one_clinic(event, envelope)  # one id for the lock and the handled mark
        await scheduler.on_consultation_held(event, envelope)

    async def book_course(event: ev.ClientEnrolled, envelope: Envelope) -> None:
        one_clinic(event, envelope)  # one id for the lock and the handled mark
        await scheduler.on_client_enrolled(event, envelope)

    async def record_measure(event: ev.MeasureAnswered, envelope: Envelope) -> None:
        one_clinic(event, envelope)  # one id for the lock and the handled mark
        await scheduler.on_measure_answered(event, envelope)

    return subscribe(
        broker,
        SERVICE,
        [
            (topics.CONSULTATION_REQUESTED, book_consultation),
            (topics.CONSULTATION_HELD, close_consultation),
            (topics.CLIENT_ENROLLED, book_course),
            (topics.MEASURE_ANSWERED, record_measure),
        ],
        "scheduler reacts: books consultations and courses, records measures answered",
        settings,
        scheduler.metrics,
    )
