"""The schedule-lag gate on real Kafka (issue 14, fault 9): while the notifier's group has
left a scheduler event unhandled for longer than the bound, reminders and instructions
wait; an urgent clinical alert goes at once all the same."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from chassis.clinics import ClinicDirectory
from chassis.config import ServiceSettings
from chassis.effects import EffectLog
from chassis.events import EventPublisher
from chassis.kafka import make_broker
from services.notifier import handlers
from services.notifier.channels import EmailChannel
from services.notifier.delivery import Delivery
from services.notifier.lag import SCHEDULE_TOPICS, ScheduleLag
from services.notifier.store import NotifierStore
from shared import events as ev
from shared import topics
from tests.helpers import write_clinics
from tests.integration.notifier.support import (
    Inputs,
    Mailbox,
    ManualClock,
    appointment,
    at,
    eventually,
)

pytestmark = pytest.mark.integration

BOUND_S = 0.5


@pytest.fixture
async def publisher(kafka_bootstrap: str) -> AsyncIterator[EventPublisher]:
    broker = make_broker(ServiceSettings(kafka_bootstrap_servers=kafka_bootstrap), "tests-lag")
    publisher = EventPublisher(broker, "notifier", topics.produced_by("notifier"))
    await broker.start()
    yield publisher
    await broker.stop()


async def _mails(mailbox: Mailbox, address: str, count: int) -> list[EmailMessage]:
    async def arrived() -> list[EmailMessage]:
        found = mailbox.to(address)
        return found if len(found) >= count else []

    return await eventually(arrived, f"{count} mail(s) to {address}")


async def _commit_to_the_end(bootstrap: str, group: str) -> None:
    """The watched group handles everything on the schedule topics (as a caught-up notifier)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [
            TopicPartition(t.name, p)
            for t in SCHEDULE_TOPICS
            for p in consumer.partitions_for_topic(t.name) or ()
        ]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.commit(ends)
    finally:
        await consumer.stop()


async def test_reminders_wait_while_the_schedule_lags_and_a_clinical_alert_does_not(
    inputs: Inputs,
    publisher: EventPublisher,
    mailbox: Mailbox,
    redis_client: Redis,
    kafka_bootstrap: str,
    tmp_path: Path,
    unique: str,
) -> None:
    clock = ManualClock(at("2026-03-23T10:00+00:00"))
    clinic_id = f"g-{unique}"
    # A schedule change the watched group has not handled, older than the bound (the
    # group is this test's own: a real notifier's would have handled it by now).
    await inputs.publish(
        ev.SessionCompleted(
            clinic_id=clinic_id,
            client_id=uuid.uuid4(),
            occurred_at=clock.now(),
            course_id=uuid.uuid4(),
            appointment_id=uuid.uuid4(),
            kind=ev.AppointmentKind.INTEGRATION,
            ride_home_confirmed=True,
        )
    )
    await asyncio.sleep(BOUND_S + 0.2)
    group = f"tests-lag-{unique}"
    gauge = ScheduleLag(kafka_bootstrap, group, BOUND_S)
    assert await gauge.lagging()

    # A clinic of this test's own, delivered only by the gated delivery below.
    clinics_path = tmp_path / "clinics.json"
    write_clinics(
        clinics_path,
        {clinic_id: {"name": f"Clinic {unique}", "timezone": "Europe/Lisbon", "key": "k"}},
    )
    clinics = ClinicDirectory(clinics_path)
    store = NotifierStore(redis_client)
    delivery = Delivery(
        store,
        clinics,
        {"email": EmailChannel("127.0.0.1", mailbox.port, "notifications@kap.example")},
        publisher,
        clock,
        poll_s=0.05,
        schedule_lag=gauge,
    )
    planner = handlers.Planner(
        handlers.Deps(
            store=store,
            effects=EffectLog(redis_client, "notifier", publisher),
            clinics=clinics,
            clock=clock,
            due_now=delivery.wake,
        )
    )
    client_id = uuid.uuid4()
    address = f"ada.{unique}@example.org"
    fields = {"clinic_id": clinic_id, "client_id": client_id, "occurred_at": clock.now()}
    request = ev.ConsultationRequested(
        **fields, contact=ev.Contact(name="Ada Lovelace", email=address)
    )
    await planner.plan(request, publisher.envelope_for(request), handlers.requested(request))
    session = appointment(ev.AppointmentKind.CONSULTATION, at("2026-03-23T13:00+00:00"), 30)
    booked = ev.ConsultationBooked(**fields, appointment=session)
    await planner.plan(booked, publisher.envelope_for(booked))

    worker = asyncio.create_task(delivery.run())
    try:
        await _mails(mailbox, address, 2)  # the request's and the booking's replies are not held
        clock.set(at("2026-03-23T11:00+00:00"))  # the 2 h reminder is due
        alert = ev.ClinicalAlertRaised(
            **(fields | {"occurred_at": clock.now()}),
            reason="phq9_item9_positive",
            phq9_item9=1,
            raised_during="session",
        )
        await planner.plan(alert, publisher.envelope_for(alert))
        [staff_mail] = await _mails(mailbox, f"staff@{clinic_id}.example", 1)
        assert staff_mail["Subject"].startswith("Urgent")

        await asyncio.sleep(0.5)  # several looks at the due reminder, all while lagging
        [reminder] = [
            n for n in await store.notifications(clinic_id, client_id) if "reminder_2h" in n["plan"]
        ]
        assert (reminder["state"], reminder["attempts"]) == ("planned", "0")
        assert len(mailbox.to(address)) == 2

        await _commit_to_the_end(kafka_bootstrap, group)  # the group catches up
        mails = await _mails(mailbox, address, 3)
        assert mails[-1]["Subject"].startswith("Your appointment is coming up")
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
