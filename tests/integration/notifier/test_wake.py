"""On a fast clock, delivery wakes when a message falls due rather than at its next poll
(issue 14, fault 9): the demo's clock runs a clinic day per real second, where a 200 ms
poll is almost five clinic hours."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from redis.asyncio import Redis

from chassis.clinics import ClinicDirectory
from chassis.clock import ScaledClock
from chassis.config import ServiceSettings
from chassis.effects import EffectLog
from chassis.events import EventPublisher
from chassis.kafka import make_broker
from ops import mailcatcher
from ops.mailcatcher import MaildirHandler
from services.notifier import handlers
from services.notifier.channels import EmailChannel
from services.notifier.delivery import Delivery
from services.notifier.store import NotifierStore
from shared import events as ev
from shared import topics
from tests.helpers import write_clinics
from tests.integration.notifier.support import (
    Mailbox,
    appointment,
    eventually,
    free_port,
    sent_at,
)

pytestmark = pytest.mark.integration

SCALE = 1800.0  # one real second is half a clinic hour
POLL_S = 2.0  # an hour on this clock: the poll alone would be far too late
ON_TIME = timedelta(minutes=5)


@pytest.fixture
async def publisher(kafka_bootstrap: str) -> AsyncIterator[EventPublisher]:
    broker = make_broker(ServiceSettings(kafka_bootstrap_servers=kafka_bootstrap), "tests-wake")
    publisher = EventPublisher(broker, "notifier", topics.produced_by("notifier"))
    await broker.start()
    yield publisher
    await broker.stop()


async def test_a_reminder_goes_out_when_due_on_a_fast_clock_not_at_the_next_poll(
    redis_client: Redis,
    publisher: EventPublisher,
    mailbox: Mailbox,
    tmp_path: Path,
    unique: str,
) -> None:
    clinic_id = f"c-{unique}"
    clinics_path = tmp_path / "clinics.json"
    write_clinics(
        clinics_path,
        {clinic_id: {"name": f"Clinic {unique}", "timezone": "Europe/Lisbon", "key": "k"}},
    )
    clinics = ClinicDirectory(clinics_path)
    clock = ScaledClock(datetime(2026, 3, 23, 10, 0, tzinfo=UTC), datetime.now(UTC), SCALE)
    store = NotifierStore(redis_client)
    delivery = Delivery(
        store,
        clinics,
        {"email": EmailChannel("127.0.0.1", mailbox.port, "notifications@kap.example")},
        publisher,
        clock,
        poll_s=POLL_S,
    )
    # Wired as the service wires them: a plan tells delivery it holds a message.
    planner = handlers.Planner(
        handlers.Deps(
            store=store,
            effects=EffectLog(redis_client, "notifier", publisher),
            clinics=clinics,
            clock=clock,
            due_now=delivery.wake,
        )
    )
    worker = asyncio.create_task(delivery.run())
    try:
        address = f"ada.{unique}@example.org"
        client_id = uuid.uuid4()
        request = ev.ConsultationRequested(
            clinic_id=clinic_id,
            client_id=client_id,
            occurred_at=clock.now(),
            contact=ev.Contact(name="Ada Lovelace", email=address),
        )
        await planner.plan(request, publisher.envelope_for(request), handlers.requested(request))
        # The 2 h reminder falls due a quarter of a clinic hour from now (half a real second).
        starts_at = clock.now() + timedelta(hours=2, minutes=15)
        booked = ev.ConsultationBooked(
            clinic_id=clinic_id,
            client_id=client_id,
            occurred_at=clock.now(),
            appointment=appointment(ev.AppointmentKind.CONSULTATION, starts_at, 30),
        )
        await planner.plan(booked, publisher.envelope_for(booked))

        async def reminded() -> list[object]:
            return [m for m in mailbox.to(address) if "coming up" in str(m["Subject"])]

        [reminder] = await eventually(reminded, "the 2 h reminder", wait_s=3 * POLL_S)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)

    # The Date header counts whole seconds: compare with the due second.
    due = (starts_at - timedelta(hours=2)).replace(microsecond=0)
    late = sent_at(reminder) - due  # type: ignore[arg-type]
    assert timedelta(0) <= late <= ON_TIME, f"sent {late} after it was due"


class _SlowMaildir(MaildirHandler):
    """A mail server that takes its time over every message (a remote relay under load)."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(SLOW_SERVER_S)
        return await super().handle_DATA(server, session, envelope)


SLOW_SERVER_S = 0.25  # seven and a half clinic minutes on this clock
AT_ONCE = 6


async def test_reminders_falling_due_together_all_go_out_on_time_through_a_slow_mail_server(
    redis_client: Redis, publisher: EventPublisher, tmp_path: Path, unique: str
) -> None:
    maildir = tmp_path / "mail"
    server = Controller(_SlowMaildir(maildir), hostname="127.0.0.1", port=free_port())
    server.start()
    clinic_id = f"c-{unique}"
    clinics_path = tmp_path / "clinics.json"
    write_clinics(
        clinics_path,
        {clinic_id: {"name": f"Clinic {unique}", "timezone": "Europe/Lisbon", "key": "k"}},
    )
    clinics = ClinicDirectory(clinics_path)
    clock = ScaledClock(datetime(2026, 3, 23, 10, 0, tzinfo=UTC), datetime.now(UTC), SCALE)
    store = NotifierStore(redis_client)
    delivery = Delivery(
        store,
        clinics,
        {"email": EmailChannel("127.0.0.1", server.port, "notifications@kap.example")},
        publisher,
        clock,
        poll_s=POLL_S,
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
    worker = asyncio.create_task(delivery.run())
    try:
        # Six clients with a consultation at the same time: their 2 h reminders fall due
        # at one instant, an hour and a half (three real seconds) from now, long after
        # the confirmations went out.
        starts_at = (clock.now() + timedelta(hours=3, minutes=30)).replace(second=0, microsecond=0)
        addresses = [f"c{n}.{unique}@example.org" for n in range(AT_ONCE)]
        for address in addresses:
            client_id = uuid.uuid4()
            request = ev.ConsultationRequested(
                clinic_id=clinic_id,
                client_id=client_id,
                occurred_at=clock.now(),
                contact=ev.Contact(name="Ada Lovelace", email=address),
            )
            envelope = publisher.envelope_for(request)
            await planner.plan(request, envelope, handlers.requested(request))
            booked = ev.ConsultationBooked(
                clinic_id=clinic_id,
                client_id=client_id,
                occurred_at=clock.now(),
                appointment=appointment(ev.AppointmentKind.CONSULTATION, starts_at, 30),
            )
            await planner.plan(booked, publisher.envelope_for(booked))

        async def reminded() -> list[EmailMessage]:
            found = [
                m
                for m in mailcatcher.read_mails(maildir)
                if "coming up" in str(m["Subject"]) and m["To"] in addresses
            ]
            return found if len(found) == AT_ONCE else []

        reminders = await eventually(reminded, "every 2 h reminder", wait_s=15)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        server.stop()

    due = (starts_at - timedelta(hours=2)).replace(microsecond=0)  # Date: whole seconds
    lateness = sorted(sent_at(m) - due for m in reminders)
    assert lateness[0] >= timedelta(0), f"sent before it was due: {lateness}"
    assert lateness[-1] <= ON_TIME, f"late: {[str(late) for late in lateness]}"
