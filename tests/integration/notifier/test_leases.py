"""A slow mail server and two delivery workers: a message whose lease ran out while it
waited behind slower sends is sent by one replica only (issue 14, fault 8)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from chassis.events import EventPublisher
from ops import mailcatcher
from services.notifier import handlers
from services.notifier.delivery import Delivery
from shared import events as ev
from tests.integration.notifier.support import (
    ManualClock,
    OwnClinic,
    SlowMailServer,
    at,
    by_email,
    eventually,
    notifier_delivery,
    planner_deps,
)

pytestmark = pytest.mark.integration

SMTP_DELAY_S = 0.4  # each message takes this long at the server
LEASE_MS = 1_000  # so the third message of a batch outlives its claim


async def test_a_message_outliving_its_lease_behind_a_slow_server_is_sent_once(
    redis_client: Redis,
    notifier_publisher: EventPublisher,
    slow_mail_server: Callable[[float], SlowMailServer],
    own_clinic: OwnClinic,
    unique: str,
) -> None:
    # The local mail server, answering DATA only after a delay (a busy relay).
    server = slow_mail_server(SMTP_DELAY_S)
    clinic_id, clinics = own_clinic.id, own_clinic.directory
    clock = ManualClock(at("2026-03-23T10:00+00:00"))
    # Not told of the plans: the replicas find the messages by polling alone.
    planner = handlers.Planner(planner_deps(redis_client, notifier_publisher, clinics, clock))
    addresses = [f"client{n}.{unique}@example.org" for n in range(5)]
    for address in addresses:
        contact = ev.Contact(name="Ada Lovelace", email=address)
        request = ev.ConsultationRequested(
            clinic_id=clinic_id,
            client_id=uuid.uuid4(),
            occurred_at=clock.now(),
            contact=contact,
        )
        envelope = notifier_publisher.envelope_for(request)
        await planner.plan(request, envelope, handlers.requested(request))

    def replica() -> Delivery:
        return notifier_delivery(
            redis_client,
            clinics,
            by_email(server.port),
            notifier_publisher,
            clock,
            poll_s=0.05,
            lease_ms=LEASE_MS,
        )

    workers = [asyncio.create_task(replica().run()) for _ in range(2)]
    try:

        async def all_delivered() -> bool:
            received = {m["To"] for m in mailcatcher.read_mails(server.maildir)}
            due = await redis_client.zcard(f"notifier:{{{clinic_id}}}:due")
            leased = await redis_client.zcard(f"notifier:{{{clinic_id}}}:leased")
            return received >= set(addresses) and due + leased == 0

        await eventually(all_delivered, "every message to be sent", wait_s=20)
        # A replica still sending a message it lost would add its copy now.
        await asyncio.sleep(2 * SMTP_DELAY_S)
    finally:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    received = [m["To"] for m in mailcatcher.read_mails(server.maildir)]
    assert sorted(received) == sorted(addresses), "a message reached the mailbox twice"
