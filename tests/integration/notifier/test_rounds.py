"""A delivery round reads the contacts of every client message it claimed in one round trip
(issue 19: it was one a message), and each message still goes to its own client."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection as RedisConnection

from chassis.clock import ScaledClock
from chassis.events import EventPublisher
from services.notifier import handlers
from services.notifier.contacts import contact_key
from shared import events as ev
from tests.integration.notifier.support import (
    Mailbox,
    OwnClinic,
    by_email,
    delivery_rig,
    eventually,
)

pytestmark = pytest.mark.integration

CLIENTS = 4


async def test_a_round_reads_its_clients_contacts_together_and_each_mail_goes_to_its_own(
    redis_client: Redis,
    notifier_publisher: EventPublisher,
    own_clinic: OwnClinic,
    mailbox: Mailbox,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = ScaledClock(datetime(2026, 3, 23, 10, tzinfo=UTC), datetime.now(UTC), 1.0)
    rig = delivery_rig(
        redis_client,
        notifier_publisher,
        own_clinic.directory,
        clock,
        by_email(mailbox.port),
        poll_s=0.2,
    )
    firsts = ["Ada", "Grace", "Alan", "Edsger"][:CLIENTS]
    names = {f"{first.lower()}.{unique}@example.org": f"{first} Doe" for first in firsts}
    contact_keys = set()
    for address, name in names.items():  # planned before delivery runs: one round takes all
        client_id = uuid.uuid4()
        contact_keys.add(contact_key(own_clinic.id, client_id).encode())
        request = ev.ConsultationRequested(
            clinic_id=own_clinic.id,
            client_id=client_id,
            occurred_at=clock.now(),
            contact=ev.Contact(name=name, email=address),
        )
        await rig.plan(request, handlers.requested(request))

    reads_of_contacts: list[int] = []  # per write to Redis, the contacts it reads
    real_send = RedisConnection.send_packed_command

    async def counted(self: RedisConnection, command: Any, check_health: bool = True) -> None:
        packed = b"".join(command) if isinstance(command, list) else command
        if found := sum(packed.count(k) for k in contact_keys):
            reads_of_contacts.append(found)
        await real_send(self, command, check_health)

    monkeypatch.setattr(RedisConnection, "send_packed_command", counted)
    async with rig.running():

        async def all_sent() -> list[EmailMessage]:
            mails = [m for address in names for m in mailbox.to(address)]
            return mails if len(mails) == CLIENTS else []

        mails = await eventually(all_sent, "every client's acknowledgement")
    monkeypatch.undo()

    assert reads_of_contacts == [CLIENTS]
    for mail in mails:  # each to its own client, by the name the mail greets
        body = mail.get_body(("plain",))
        assert body is not None
        assert names[str(mail["To"])].split()[0] in body.get_content()
