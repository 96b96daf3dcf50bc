"""A slow mail server and two delivery workers: a message whose lease ran out while it
waited behind slower sends is sent by one replica only (issue 14, fault 8)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from redis.asyncio import Redis

from chassis.clinics import ClinicDirectory
from chassis.config import ServiceSettings
from chassis.effects import EffectLog
from chassis.events import EventPublisher
from chassis.kafka import make_broker
from ops import mailcatcher
from services.notifier import handlers
from services.notifier.channels import EmailChannel
from services.notifier.delivery import Delivery
from services.notifier.store import NotifierStore
from shared import events as ev
from shared import topics
from tests.helpers import write_clinics
from tests.integration.notifier.support import ManualClock, at, eventually, free_port

pytestmark = pytest.mark.integration

SMTP_DELAY_S = 0.4  # each message takes this long at the server
LEASE_MS = 1_000  # so the third message of a batch outlives its claim


class SlowMaildir(mailcatcher.MaildirHandler):
    """The local mail server, answering DATA only after a delay (a busy relay)."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(SMTP_DELAY_S)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def slow_mailbox(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port, maildir = free_port(), tmp_path / "mail"
    controller = Controller(SlowMaildir(maildir), hostname="127.0.0.1", port=port)
    controller.start()
    yield port, maildir
    controller.stop()


@pytest.fixture
async def publisher(kafka_bootstrap: str) -> AsyncIterator[EventPublisher]:
    broker = make_broker(ServiceSettings(kafka_bootstrap_servers=kafka_bootstrap), "tests-lease")
    publisher = EventPublisher(broker, "notifier", topics.produced_by("notifier"))
    await broker.start()
    yield publisher
    await broker.stop()


async def test_a_message_outliving_its_lease_behind_a_slow_server_is_sent_once(
    redis_client: Redis,
    publisher: EventPublisher,
    slow_mailbox: tuple[int, Path],
    tmp_path: Path,
    unique: str,
) -> None:
    port, maildir = slow_mailbox
    clinic_id = f"c-{unique}"
    clinics_path = tmp_path / "clinics.json"
    write_clinics(
        clinics_path,
        {clinic_id: {"name": f"Clinic {unique}", "timezone": "Europe/Lisbon", "key": "k"}},
    )
    clinics = ClinicDirectory(clinics_path)
    clock = ManualClock(at("2026-03-23T10:00+00:00"))
    store = NotifierStore(redis_client)
    planner = handlers.Planner(
        handlers.Deps(
            store=store,
            effects=EffectLog(redis_client, "notifier", publisher),
            clinics=clinics,
            clock=clock,
        )
    )
    addresses = [f"client{n}.{unique}@example.org" for n in range(5)]
    for address in addresses:
        contact = ev.Contact(name="Ada Lovelace", email=address)
        request = ev.ConsultationRequested(
            clinic_id=clinic_id,
            client_id=uuid.uuid4(),
            occurred_at=clock.now(),
            contact=contact,
        )
        envelope = publisher.envelope_for(request)
        await planner.plan(request, envelope, handlers.requested(request))

    def replica() -> Delivery:
        sender = EmailChannel("127.0.0.1", port, "notifications@kap.example")
        return Delivery(
            store, clinics, {"email": sender}, publisher, clock, poll_s=0.05, lease_ms=LEASE_MS
        )

    workers = [asyncio.create_task(replica().run()) for _ in range(2)]
    try:

        async def all_delivered() -> bool:
            received = {m["To"] for m in mailcatcher.read_mails(maildir)}
            due = await redis_client.zcard(f"notifier:{{{clinic_id}}}:due")
            sending = await redis_client.zcard(f"notifier:{{{clinic_id}}}:sending")
            return received >= set(addresses) and due + sending == 0

        await eventually(all_delivered, "every message to be sent", wait_s=20)
        # A replica still sending a message it lost would add its copy now.
        await asyncio.sleep(2 * SMTP_DELAY_S)
    finally:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    received = [m["To"] for m in mailcatcher.read_mails(maildir)]
    assert sorted(received) == sorted(addresses), "a message reached the mailbox twice"
