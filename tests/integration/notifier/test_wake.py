"""On a fast clock, delivery wakes when a message falls due rather than at its next poll
(issue 14, fault 9): the demo's clock runs a clinic day per real second, where a 200 ms
poll is almost five clinic hours."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from redis.asyncio import Redis

from chassis.clock import ScaledClock
from chassis.events import EventPublisher
from ops import mailcatcher
from services.notifier import handlers
from shared import events as ev
from tests.integration.notifier.support import (
    DeliveryRig,
    Mailbox,
    OwnClinic,
    SlowMailServer,
    appointment,
    by_email,
    delivery_rig,
    eventually,
    sent_at,
)

pytestmark = pytest.mark.integration

SCALE = 1800.0  # one real second is half a clinic hour
POLL_S = 2.0  # an hour on this clock: the poll alone would be far too late
ON_TIME = timedelta(minutes=5)


@pytest.fixture
def fast_delivery(
    redis_client: Redis, notifier_publisher: EventPublisher, own_clinic: OwnClinic
) -> Callable[[int], DeliveryRig]:
    """The test's clinic's delivery through the mail server at the given port, on a clock
    SCALE times real time from 10:00 on 23 March, made when asked for."""

    def rig(smtp_port: int) -> DeliveryRig:
        clock = ScaledClock(datetime(2026, 3, 23, 10, 0, tzinfo=UTC), datetime.now(UTC), SCALE)
        return delivery_rig(
            redis_client,
            notifier_publisher,
            own_clinic.directory,
            clock,
            by_email(smtp_port),
            poll_s=POLL_S,
        )

    return rig


async def _requested(rig: DeliveryRig, clinic_id: str, address: str) -> uuid.UUID:
    """A new client asks for a consultation, giving `address`; their client id."""
    client_id = uuid.uuid4()
    request = ev.ConsultationRequested(
        clinic_id=clinic_id,
        client_id=client_id,
        occurred_at=rig.clock.now(),
        contact=ev.Contact(name="Ada Lovelace", email=address),
    )
    await rig.plan(request, handlers.requested(request))
    return client_id


async def _booked(
    rig: DeliveryRig, clinic_id: str, client_id: uuid.UUID, starts_at: datetime
) -> None:
    """The client's half-hour consultation is booked for `starts_at`."""
    booked = ev.ConsultationBooked(
        clinic_id=clinic_id,
        client_id=client_id,
        occurred_at=rig.clock.now(),
        appointment=appointment(ev.AppointmentKind.CONSULTATION, starts_at, 30),
    )
    await rig.plan(booked)


async def test_a_reminder_goes_out_when_due_on_a_fast_clock_not_at_the_next_poll(
    fast_delivery: Callable[[int], DeliveryRig],
    mailbox: Mailbox,
    own_clinic: OwnClinic,
    unique: str,
) -> None:
    rig = fast_delivery(mailbox.port)
    async with rig.running():
        address = f"ada.{unique}@example.org"
        client_id = await _requested(rig, own_clinic.id, address)
        # The 2 h reminder falls due a quarter of a clinic hour from now (half a real second).
        starts_at = rig.clock.now() + timedelta(hours=2, minutes=15)
        await _booked(rig, own_clinic.id, client_id, starts_at)

        async def reminded() -> list[object]:
            return [m for m in mailbox.to(address) if "coming up" in str(m["Subject"])]

        [reminder] = await eventually(reminded, "the 2 h reminder", wait_s=3 * POLL_S)

    # The Date header counts whole seconds: compare with the due second.
    due = (starts_at - timedelta(hours=2)).replace(microsecond=0)
    late = sent_at(reminder) - due  # type: ignore[arg-type]
    assert timedelta(0) <= late <= ON_TIME, f"sent {late} after it was due"


SLOW_SERVER_S = 0.25  # seven and a half clinic minutes on this clock
AT_ONCE = 6


async def test_reminders_falling_due_together_all_go_out_on_time_through_a_slow_mail_server(
    fast_delivery: Callable[[int], DeliveryRig],
    slow_mail_server: Callable[[float], SlowMailServer],
    own_clinic: OwnClinic,
    unique: str,
) -> None:
    # A mail server that takes its time over every message (a remote relay under load).
    server = slow_mail_server(SLOW_SERVER_S)
    rig = fast_delivery(server.port)
    async with rig.running():
        # Six clients with a consultation at the same time: their 2 h reminders fall due
        # at one instant, an hour and a half (three real seconds) from now, long after
        # the confirmations went out.
        starts_at = (rig.clock.now() + timedelta(hours=3, minutes=30)).replace(
            second=0, microsecond=0
        )
        addresses = [f"c{n}.{unique}@example.org" for n in range(AT_ONCE)]
        for address in addresses:
            client_id = await _requested(rig, own_clinic.id, address)
            await _booked(rig, own_clinic.id, client_id, starts_at)

        async def reminded() -> list[EmailMessage]:
            found = [
                m
                for m in mailcatcher.read_mails(server.maildir)
                if "coming up" in str(m["Subject"]) and m["To"] in addresses
            ]
            return found if len(found) == AT_ONCE else []

        reminders = await eventually(reminded, "every 2 h reminder", wait_s=15)

    due = (starts_at - timedelta(hours=2)).replace(microsecond=0)  # Date: whole seconds
    lateness = sorted(sent_at(m) - due for m in reminders)
    assert lateness[0] >= timedelta(0), f"sent before it was due: {lateness}"
    assert lateness[-1] <= ON_TIME, f"late: {[str(late) for late in lateness]}"
